"""PyTorch front end: flash-linear-attention's functional API (SPEC section 5) over vkla.

Each function is a torch.autograd.Function whose backward runs the op's backward pass on the
Vulkan device. Tensors are CPU tensors; q, k, v share one dtype (float32, float16 or bfloat16,
which is the storage dtype on the device) and o has it too. Gates, beta and states are computed
in float32 (other float dtypes are cast, and their gradients cast back, by autograd). Tensors
that are not contiguous are copied (`.contiguous()`) before the call, except permuted views of
a contiguous block (its last dimension contiguous), which vkla reads through their strides. Final states are float32.
"""
import torch

from . import _lib
from . import _ops
from ._core import HostTensor

_DTYPES = {torch.float32: _lib.DTYPE_F32, torch.float16: _lib.DTYPE_F16,
           torch.bfloat16: _lib.DTYPE_BF16}

# Keyword arguments of the flash-linear-attention functions that vkla accepts at their default
# only (any other value is refused with a TypeError).
_NEUTRAL = {"head_first": False, "reverse": False}


def _refuse(fn, kwargs):
    bad = {k: v for k, v in kwargs.items() if k not in _NEUTRAL or v != _NEUTRAL[k]}
    if bad:
        raise TypeError("vkla.torch.%s: unsupported keyword argument(s) %s (vkla takes the "
                        "[B, T, H, D] layout, forward direction only, and no other options)"
                        % (fn, ", ".join("%s=%r" % kv for kv in sorted(bad.items()))))


def _tensor(fn, name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError("vkla.torch.%s: %s must be a torch.Tensor (got %s)"
                        % (fn, name, type(t).__name__))
    if t.device.type != "cpu":
        raise ValueError("vkla.torch.%s: %s is on %s; vkla.torch takes CPU tensors (the op runs "
                         "on vkla's Vulkan device)" % (fn, name, t.device))
    return t


def _dense(t):
    """t itself when its elements fill one block in some order of the dimensions with the last
    one contiguous (a permuted view of a contiguous tensor: vkla reads it through its strides,
    no copy), else a contiguous copy."""
    if t.is_contiguous():
        return t
    if t.dim() and t.stride(-1) == 1 and all(st > 0 for st in t.stride()):
        expect = 1
        for size, st in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
            if size > 1 and st != expect:
                break
            expect *= size
        else:
            return t
    return t.contiguous()


def _qkv(fn, q, k, v):
    out = []
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor(fn, name, t)
        if t.dtype not in _DTYPES:
            raise TypeError("vkla.torch.%s: %s must be float32, float16 or bfloat16 (got %s)"
                            % (fn, name, t.dtype))
        if t.dtype != q.dtype:
            raise TypeError("vkla.torch.%s: q, k and v must share one dtype (q %s, %s %s)"
                            % (fn, q.dtype, name, t.dtype))
        out.append(_dense(t))
    return out


def _f32(fn, name, t):
    if t is None:
        return None
    _tensor(fn, name, t)
    if not t.is_floating_point():
        raise TypeError("vkla.torch.%s: %s must be a floating-point tensor (got %s)"
                        % (fn, name, t.dtype))
    return t.float().contiguous()


def _seqlens(fn, cu_seqlens):
    if cu_seqlens is None:
        return None
    if isinstance(cu_seqlens, torch.Tensor):
        if cu_seqlens.is_floating_point() or cu_seqlens.is_complex():
            raise TypeError("vkla.torch.%s: cu_seqlens must be an integer tensor (got %s)"
                            % (fn, cu_seqlens.dtype))
        cu_seqlens = cu_seqlens.detach().cpu().numpy()
    return _ops.check_seqlens(cu_seqlens, "vkla.torch." + fn)


def _host(t):
    if t is None:
        return None
    return HostTensor(t.data_ptr(), t.shape, _DTYPES[t.dtype], t,
                      None if t.is_contiguous() else t.stride())


class _Op(torch.autograd.Function):
    """One vkla op. Non-tensor arguments first (spec, name, form, seqlens, options, whether the
    final state is wanted, the C names of the tensors), then the tensors (q, k, v, optional
    inputs, None where absent). Returns o, then ht and zt where wanted."""
    _NONTENSOR = 7

    @staticmethod
    def forward(ctx, spec, fn, form, seqlens, opts, want_state, names, *tensors):
        inputs = dict(zip(names, tensors))
        q, v = inputs["q"], inputs["v"]
        o_shape, ht_shape, zt_shape = _ops.output_shapes(spec, q, v, seqlens, "vkla.torch." + fn,
                                                         opts.get("normalize", False))
        # o in v's layout (a permuted view stays one: no copies on either side)
        o = (torch.empty_like(v) if tuple(o_shape) == tuple(v.shape) and v.dtype == q.dtype
             else torch.empty(o_shape, dtype=q.dtype))
        outs = {"o": o}
        if want_state:
            outs["ht"] = torch.empty(ht_shape, dtype=torch.float32)
            if zt_shape:
                outs["zt"] = torch.empty(zt_shape, dtype=torch.float32)
        _ops.forward(spec, "vkla.torch." + fn, {n: _host(t) for n, t in inputs.items()},
                     {n: _host(t) for n, t in outs.items()}, form, seqlens, **opts)
        ctx.save_for_backward(*tensors)
        ctx.info = (spec, fn, form, seqlens, opts, want_state, names)
        if "zt" in outs:
            ctx.mark_non_differentiable(outs["zt"])
        result = tuple(outs.values())
        return result if len(result) > 1 else result[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dht=None, dzt=None):
        spec, fn, form, seqlens, opts, want_state, names = ctx.info
        tensors = ctx.saved_tensors
        inputs = dict(zip(names, tensors))
        wanted = ctx.needs_input_grad[_Op._NONTENSOR:]
        grads = {}
        for name, t, need in zip(names, tensors, wanted):
            if need and t is not None and name in spec.grads:
                grads[name] = torch.empty_like(t)
        if not grads:
            return (None,) * (_Op._NONTENSOR + len(tensors))
        dout = _dense(do.to(inputs["q"].dtype))
        dht = dht.float().contiguous() if (want_state and spec.causal and dht is not None) else None
        _ops.backward(spec, "vkla.torch." + fn, {n: _host(t) for n, t in inputs.items()},
                      _host(dout), _host(dht),
                      {spec.grads[n]: _host(g) for n, g in grads.items()}, form, seqlens, **opts)
        return (None,) * _Op._NONTENSOR + tuple(grads.get(n) for n in names)


def _run(spec, fn, form, q, k, v, extras, want_state, cu_seqlens, opts):
    q, k, v = _qkv(fn, q, k, v)
    tensors = {"q": q, "k": k, "v": v}
    for name, t in extras.items():
        tensors[name] = _f32(fn, name, t)
    seqlens = _seqlens(fn, cu_seqlens)
    names = tuple(tensors)
    return _Op.apply(spec, fn, form, seqlens, opts, bool(want_state), names, *tensors.values())


def _causal(spec, fn, form, q, k, v, extras, initial_state, output_final_state, cu_seqlens,
            opts):
    out = _run(spec, fn, form, q, k, v, dict(extras, h0=initial_state), output_final_state,
               cu_seqlens, opts)
    return (out[0], out[1]) if output_final_state else (out, None)


def _gla(fn, form, q, k, v, g, g_gamma, gk, scale, initial_state, output_final_state,
         cu_seqlens, kwargs):
    _refuse(fn, kwargs)
    return _causal(_ops.LINEAR_ATTN, fn, form, q, k, v, dict(g=g, g_gamma=g_gamma, gk=gk),
                   initial_state, output_final_state, cu_seqlens, dict(scale=scale))


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, cu_seqlens=None, **kwargs):
    """Simple GLA / RetNet / Mamba-2 style decay: S_t = exp(g_t + g_gamma) S_{t-1} + k_t v_t^T.
    g: [B,T,H] natural-log decay (optional); g_gamma: [H] (optional)."""
    return _gla("chunk_simple_gla", "chunk", q, k, v, g, g_gamma, None, scale, initial_state,
                output_final_state, cu_seqlens, kwargs)


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, cu_seqlens=None, **kwargs):
    """chunk_simple_gla computed by the recurrent form."""
    return _gla("fused_recurrent_simple_gla", "recurrent", q, k, v, g, g_gamma, None, scale,
                initial_state, output_final_state, cu_seqlens, kwargs)


def _need(fn, name, t):
    if t is None:
        raise ValueError("vkla.torch.%s: %s is required" % (fn, name))
    return t


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              cu_seqlens=None, **kwargs):
    """GLA: per-key-channel decay g [B,T,H,K] (natural log): S_t = diag(exp(g_t)) S + k v^T."""
    return _gla("chunk_gla", "chunk", q, k, v, None, None, _need("chunk_gla", "g", g), scale,
                initial_state, output_final_state, cu_seqlens, kwargs)


def fused_recurrent_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
                        cu_seqlens=None, **kwargs):
    """chunk_gla computed by the recurrent form (the per-key decay is `g`, as in chunk_gla)."""
    return _gla("fused_recurrent_gla", "recurrent", q, k, v, None, None,
                _need("fused_recurrent_gla", "g", g), scale, initial_state, output_final_state,
                cu_seqlens, kwargs)


def _linear_attn(fn, form, q, k, v, scale, initial_state, output_final_state, normalize,
                 cu_seqlens, kwargs):
    _refuse(fn, kwargs)
    z0 = None
    if isinstance(initial_state, (tuple, list)):
        if not normalize or len(initial_state) != 2:
            raise ValueError("vkla.torch.%s: initial_state may be a pair (S, z) only with "
                             "normalize=True" % fn)
        initial_state, z0 = initial_state
        if isinstance(z0, torch.Tensor) and z0.requires_grad:
            raise ValueError("vkla.torch.%s: the normalizer state z gets no gradient; pass "
                             "z.detach()" % fn)
    out = _run(_ops.LINEAR_ATTN, fn, form, q, k, v, dict(h0=initial_state, z0=z0),
               output_final_state, cu_seqlens, dict(scale=scale, normalize=bool(normalize)))
    if not output_final_state:
        return out, None
    return (out[0], (out[1], out[2])) if normalize else (out[0], out[1])


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      normalize=True, cu_seqlens=None, **kwargs):
    """Plain causal linear attention. With normalize, o_t = scale S_t^T q_t /
    (scale q_t . z_t + 1e-6) with z_t = z_{t-1} + k_t; the state is then the pair (S, z):
    initial_state may be S (z starts at zero) or (S, z), and the final state is (S, z)."""
    return _linear_attn("chunk_linear_attn", "chunk", q, k, v, scale, initial_state,
                        output_final_state, normalize, cu_seqlens, kwargs)


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None,
                                output_final_state=False, normalize=True, cu_seqlens=None,
                                **kwargs):
    """chunk_linear_attn computed by the recurrent form."""
    return _linear_attn("fused_recurrent_linear_attn", "recurrent", q, k, v, scale,
                        initial_state, output_final_state, normalize, cu_seqlens, kwargs)


def _delta(fn, form, q, k, v, g, beta, scale, initial_state, output_final_state, l2norm,
           cu_seqlens, kwargs):
    _refuse(fn, kwargs)
    if "gated" in fn:  # the gated functions require g
        _need(fn, "g", g)
    return _causal(_ops.DELTA_RULE, fn, form, q, k, v, dict(beta=_need(fn, "beta", beta), g=g),
                   initial_state, output_final_state, cu_seqlens,
                   dict(scale=scale, l2norm=bool(l2norm)))


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    """DeltaNet. beta: [B,T,HV]; v may have HV = a multiple of H value heads."""
    return _delta("chunk_delta_rule", "chunk", q, k, v, None, beta, scale, initial_state,
                  output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, kwargs)


def fused_recurrent_delta_rule(q, k, v, beta, scale=None, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False,
                               cu_seqlens=None, **kwargs):
    """chunk_delta_rule computed by the recurrent form."""
    return _delta("fused_recurrent_delta_rule", "recurrent", q, k, v, None, beta, scale,
                  initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, kwargs)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                           output_final_state=False, use_qk_l2norm_in_kernel=False,
                           cu_seqlens=None, **kwargs):
    """Gated DeltaNet. g: [B,T,HV] natural-log decay; beta: [B,T,HV]."""
    return _delta("chunk_gated_delta_rule", "chunk", q, k, v, g, beta, scale, initial_state,
                  output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, kwargs)


def fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                                     output_final_state=False, use_qk_l2norm_in_kernel=False,
                                     cu_seqlens=None, **kwargs):
    """chunk_gated_delta_rule computed by the recurrent form."""
    return _delta("fused_recurrent_gated_delta_rule", "recurrent", q, k, v, g, beta, scale,
                  initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, kwargs)


def lion(q, k, v, g=None, g_gamma=None, scale=None, normalize=False, eps=1e-6, form="chunk",
         cu_seqlens=None):
    """LION bidirectional linear attention (LIT without decay, D with g_gamma [H], S with
    g [B,T,H]). form: 'chunk', 'attn' or 'rnn'. Returns o (no states)."""
    return _run(_ops.LION, "lion", form, q, k, v, dict(g=g, g_gamma=g_gamma), False, cu_seqlens,
                dict(scale=scale, normalize=bool(normalize), eps=eps))


__all__ = ["chunk_simple_gla", "fused_recurrent_simple_gla", "chunk_gla", "fused_recurrent_gla",
           "chunk_linear_attn", "fused_recurrent_linear_attn", "chunk_delta_rule",
           "fused_recurrent_delta_rule", "chunk_gated_delta_rule",
           "fused_recurrent_gated_delta_rule", "lion"]
