"""numpy front end: arrays in (any float dtype, any strides: they are copied to contiguous
memory in the storage dtype), float32 arrays out."""

import numpy as np

from . import _lib
from . import _ops
from ._core import HostTensor, VklaError

DTYPES = {"f32": _lib.DTYPE_F32, "f16": _lib.DTYPE_F16, "bf16": _lib.DTYPE_BF16}


def _dtype(dtype, fn):
    if dtype not in DTYPES:
        raise ValueError("%s: dtype must be 'f32', 'f16' or 'bf16' (got %r)" % (fn, dtype))
    return DTYPES[dtype]


def _float_array(x, name, fn):
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError("%s: %s must be a floating-point array (got %s)" % (fn, name, a.dtype))
    return a


def _convert(dst, dst_dtype, src, src_dtype):
    r = _lib.lib.vkla_convert(dst.ctypes.data, dst_dtype, src.ctypes.data, src_dtype, src.size)
    if r != _lib.SUCCESS:
        raise VklaError(r, "vkla_convert")
    return dst


def _storage(x, dtype, name, fn):
    """x rounded to the storage dtype, as a HostTensor."""
    a = _float_array(x, name, fn)
    if dtype == _lib.DTYPE_F32:
        a = np.ascontiguousarray(a, dtype=np.float32)
    elif dtype == _lib.DTYPE_F16:
        a = np.ascontiguousarray(a, dtype=np.float16)
    else:
        a = _convert(np.empty(a.shape, np.uint16), dtype,
                     np.ascontiguousarray(a, dtype=np.float32), _lib.DTYPE_F32)
    return HostTensor(a.ctypes.data, a.shape, dtype, a)


def _f32(x, name, fn):
    if x is None:
        return None
    a = np.ascontiguousarray(_float_array(x, name, fn), dtype=np.float32)
    return HostTensor(a.ctypes.data, a.shape, _lib.DTYPE_F32, a)


def _empty(shape, dtype):
    a = np.empty(shape, {_lib.DTYPE_F32: np.float32, _lib.DTYPE_F16: np.float16,
                         _lib.DTYPE_BF16: np.uint16}[dtype])
    return HostTensor(a.ctypes.data, a.shape, dtype, a)


def _as_f32(t):
    """A HostTensor's array as float32."""
    a = t.keep
    if t.dtype == _lib.DTYPE_BF16:
        return _convert(np.empty(a.shape, np.float32), _lib.DTYPE_F32, a, t.dtype)
    return a.astype(np.float32, copy=False)


def _prepare(spec, fn, dtype, q, k, v, extras, cu_seqlens):
    code = _dtype(dtype, fn)
    tensors = {"q": _storage(q, code, "q", fn), "k": _storage(k, code, "k", fn),
               "v": _storage(v, code, "v", fn)}
    for name, value in extras.items():
        tensors[name] = _f32(value, name, fn)
    return code, tensors, _ops.check_seqlens(cu_seqlens, fn)


def _forward(spec, fn, q, k, v, extras, dtype, cu_seqlens, form, ctx, opts):
    code, tensors, seqlens = _prepare(spec, fn, dtype, q, k, v, extras, cu_seqlens)
    o_shape, ht_shape, zt_shape = _ops.output_shapes(spec, tensors["q"], tensors["v"], seqlens,
                                                     fn, opts.get("normalize", False))
    outs = {"o": _empty(o_shape, code)}
    if ht_shape:
        outs["ht"] = _empty(ht_shape, _lib.DTYPE_F32)
    if zt_shape:
        outs["zt"] = _empty(zt_shape, _lib.DTYPE_F32)
    _ops.forward(spec, fn, tensors, outs, form, seqlens, ctx, **opts)
    o = _as_f32(outs["o"])
    if not spec.causal:
        return o
    ht = outs["ht"].keep
    return o, ((ht, outs["zt"].keep) if zt_shape else ht)


def _backward(spec, fn, q, k, v, do, dht, extras, dtype, cu_seqlens, form, ctx, opts):
    code, tensors, seqlens = _prepare(spec, fn, dtype, q, k, v, extras, cu_seqlens)
    o_shape, ht_shape, _ = _ops.output_shapes(spec, tensors["q"], tensors["v"], seqlens, fn)
    dout = _storage(do, code, "do", fn)
    grads = {}
    for name, t in tensors.items():
        field = spec.grads.get(name)
        if t is not None and field is not None:
            grads[field] = _empty(t.shape, t.dtype)
    _ops.backward(spec, fn, tensors, dout, _f32(dht, "dht", fn), grads, form, seqlens, ctx,
                  **opts)
    return {field: _as_f32(t) for field, t in grads.items()}


def linear_attn(q, k, v, g=None, g_gamma=None, gk=None, h0=None, z0=None, *, form="chunk",
                scale=None, normalize=False, eps=None, chunk_size=None, cu_seqlens=None,
                dtype="f32", ctx=None):
    """Causal linear attention (SPEC 1). q, k: [B,T,H,K]; v: [B,T,H,V]; g: [B,T,H],
    g_gamma: [H], gk: [B,T,H,K] (natural-log decays); h0: [N,H,K,V]; z0: [N,H,K] (normalize).
    q, k, v are rounded to `dtype` for storage. Returns (o, ht) as float32 arrays; with
    normalize, ht is the pair (S, z)."""
    return _forward(_ops.LINEAR_ATTN, "vkla.linear_attn", q, k, v,
                    dict(g=g, g_gamma=g_gamma, gk=gk, h0=h0, z0=z0), dtype, cu_seqlens, form, ctx,
                    dict(scale=scale, normalize=normalize, eps=eps, chunk_size=chunk_size))


def delta_rule(q, k, v, beta, g=None, h0=None, *, form="chunk", scale=None, l2norm=False,
               chunk_size=None, cu_seqlens=None, dtype="f32", ctx=None):
    """DeltaNet / Gated DeltaNet (SPEC 2). q, k: [B,T,H,K]; v: [B,T,HV,V]; beta, g: [B,T,HV];
    h0: [N,HV,K,V]. Returns (o, ht) as float32 arrays."""
    return _forward(_ops.DELTA_RULE, "vkla.delta_rule", q, k, v, dict(beta=beta, g=g, h0=h0),
                    dtype, cu_seqlens, form, ctx,
                    dict(scale=scale, l2norm=l2norm, chunk_size=chunk_size))


def lion(q, k, v, g=None, g_gamma=None, *, form="chunk", scale=None, normalize=False, eps=None,
         chunk_size=None, cu_seqlens=None, dtype="f32", ctx=None):
    """LION bidirectional linear attention (SPEC 3). Returns o as a float32 array."""
    return _forward(_ops.LION, "vkla.lion", q, k, v, dict(g=g, g_gamma=g_gamma), dtype,
                    cu_seqlens, form, ctx,
                    dict(scale=scale, normalize=normalize, eps=eps, chunk_size=chunk_size))


def linear_attn_backward(q, k, v, do, g=None, g_gamma=None, gk=None, h0=None, z0=None, dht=None,
                         *, form="chunk", scale=None, normalize=False, eps=None, chunk_size=None,
                         cu_seqlens=None, dtype="f32", ctx=None):
    """Gradients of linear_attn for upstream `do` (and `dht`, the gradient of ht): a dict with
    dq, dk, dv and dg / dg_gamma / dgk / dh0 for each of g, g_gamma, gk, h0 given."""
    return _backward(_ops.LINEAR_ATTN, "vkla.linear_attn_backward", q, k, v, do, dht,
                     dict(g=g, g_gamma=g_gamma, gk=gk, h0=h0, z0=z0), dtype, cu_seqlens, form,
                     ctx, dict(scale=scale, normalize=normalize, eps=eps, chunk_size=chunk_size))


def delta_rule_backward(q, k, v, beta, do, g=None, h0=None, dht=None, *, form="chunk",
                        scale=None, l2norm=False, chunk_size=None, cu_seqlens=None, dtype="f32",
                        ctx=None):
    """Gradients of delta_rule: a dict with dq, dk, dv, dbeta and dg / dh0 when g / h0 given."""
    return _backward(_ops.DELTA_RULE, "vkla.delta_rule_backward", q, k, v, do, dht,
                     dict(beta=beta, g=g, h0=h0), dtype, cu_seqlens, form, ctx,
                     dict(scale=scale, l2norm=l2norm, chunk_size=chunk_size))


def lion_backward(q, k, v, do, g=None, g_gamma=None, *, form="chunk", scale=None,
                  normalize=False, eps=None, chunk_size=None, cu_seqlens=None, dtype="f32",
                  ctx=None):
    """Gradients of lion: a dict with dq, dk, dv and dg / dg_gamma when g / g_gamma given."""
    return _backward(_ops.LION, "vkla.lion_backward", q, k, v, do, None,
                     dict(g=g, g_gamma=g_gamma), dtype, cu_seqlens, form, ctx,
                     dict(scale=scale, normalize=normalize, eps=eps, chunk_size=chunk_size))
