"""vkla.torch: the flash-linear-attention style functions (SPEC 5): names, arguments and
defaults, outputs and final states, and autograd gradients of every input against float64
autograd of the SPEC references."""
import inspect

import numpy as np
import pytest
import torch

import vkla.torch as vt
from conftest import (TORCH_DTYPES, assert_close, make_inputs, ref_delta_rule,
                      ref_linear_attn, ref_lion, rounded)

CAUSAL_TAIL = ["scale", "initial_state", "output_final_state"]
SIGNATURES = {
    "chunk_simple_gla": ["q", "k", "v", "g", "g_gamma"] + CAUSAL_TAIL + ["cu_seqlens"],
    "chunk_gla": ["q", "k", "v", "g"] + CAUSAL_TAIL + ["cu_seqlens"],
    "chunk_linear_attn": ["q", "k", "v"] + CAUSAL_TAIL + ["normalize", "cu_seqlens"],
    "chunk_delta_rule": ["q", "k", "v", "beta"] + CAUSAL_TAIL
    + ["use_qk_l2norm_in_kernel", "cu_seqlens"],
    "chunk_gated_delta_rule": ["q", "k", "v", "g", "beta"] + CAUSAL_TAIL
    + ["use_qk_l2norm_in_kernel", "cu_seqlens"],
}
DEFAULTS = dict(g=None, g_gamma=None, scale=None, initial_state=None, output_final_state=False,
                cu_seqlens=None, normalize=True, use_qk_l2norm_in_kernel=False)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
@pytest.mark.parametrize("prefix", ["", "fused_recurrent_"])
def test_signatures(name, prefix):
    fn = getattr(vt, name.replace("chunk_", prefix) if prefix else name)
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind != inspect.Parameter.VAR_KEYWORD]
    assert [p.name for p in params] == SIGNATURES[name]
    for p in params:
        if p.default is not inspect.Parameter.empty:
            assert p.default == DEFAULTS[p.name], (p.name, p.default)


def test_lion_signature():
    lion = inspect.signature(vt.lion).parameters
    assert [(n, p.default) for n, p in lion.items()][3:] == [
        ("g", None), ("g_gamma", None), ("scale", None), ("normalize", False), ("eps", 1e-6),
        ("form", "chunk"), ("cu_seqlens", None)]


# name: (inputs, call(vkla tensors), reference(float64 tensors), float64 extra kwargs)
def _la(**kw):
    return lambda t: ref_linear_attn(t["q"], t["k"], t["v"], g=t.get("g"),
                                     g_gamma=t.get("g_gamma"), gk=t.get("gk"), h0=t.get("h0"),
                                     **kw)[:2]


def _dr(**kw):
    return lambda t: ref_delta_rule(t["q"], t["k"], t["v"], t["beta"], g=t.get("g"),
                                    h0=t.get("h0"), **kw)


CASES = {
    "chunk_simple_gla": (dict(gates=("g", "g_gamma")),
                         lambda t, **kw: vt.chunk_simple_gla(t["q"], t["k"], t["v"], g=t["g"],
                                                             g_gamma=t["g_gamma"], **kw),
                         _la()),
    "fused_recurrent_simple_gla": (dict(gates=("g",)),
                                   lambda t, **kw: vt.fused_recurrent_simple_gla(
                                       t["q"], t["k"], t["v"], t["g"], **kw), _la()),
    "chunk_gla": (dict(gates=("gk",)),
                  lambda t, **kw: vt.chunk_gla(t["q"], t["k"], t["v"], t["gk"], **kw), _la()),
    "fused_recurrent_gla": (dict(gates=("gk",)),
                            lambda t, **kw: vt.fused_recurrent_gla(t["q"], t["k"], t["v"],
                                                                   g=t["gk"], **kw), _la()),
    "chunk_linear_attn": (dict(gates=()),
                          lambda t, **kw: vt.chunk_linear_attn(t["q"], t["k"], t["v"],
                                                               normalize=False, **kw), _la()),
    "chunk_delta_rule": (dict(gates=("beta",), unit_keys=True, HV=4),
                         lambda t, **kw: vt.chunk_delta_rule(t["q"], t["k"], t["v"], t["beta"],
                                                             **kw), _dr()),
    "fused_recurrent_delta_rule": (dict(gates=("beta",), unit_keys=True),
                                   lambda t, **kw: vt.fused_recurrent_delta_rule(
                                       t["q"], t["k"], t["v"], beta=t["beta"], **kw), _dr()),
    "chunk_gated_delta_rule": (dict(gates=("beta", "g")),
                               lambda t, **kw: vt.chunk_gated_delta_rule(
                                   t["q"], t["k"], t["v"], t["g"], t["beta"],
                                   use_qk_l2norm_in_kernel=True, **kw), _dr(l2norm=True)),
    "fused_recurrent_gated_delta_rule": (dict(gates=("beta", "g"), HV=4),
                                         lambda t, **kw: vt.fused_recurrent_gated_delta_rule(
                                             t["q"], t["k"], t["v"], t["g"], t["beta"],
                                             use_qk_l2norm_in_kernel=True, **kw),
                                         _dr(l2norm=True)),
}


def _leaves(d, dtype):
    """(vkla tensors, float64 reference tensors with the same values), all requiring grad."""
    vk, rf = {}, {}
    for n, x in d.items():
        r = rounded(x, dtype) if n in "qkv" else torch.as_tensor(x, dtype=torch.float32).double()
        vk[n] = r.to(TORCH_DTYPES[dtype] if n in "qkv" else torch.float32).requires_grad_()
        rf[n] = r.clone().requires_grad_()
    return vk, rf


def _compare_grads(vk, rf, dtype):
    for n in rf:
        assert vk[n].grad is not None, "no gradient for " + n
        assert vk[n].grad.dtype == vk[n].dtype
        assert_close("d" + n, rf[n].grad, vk[n].grad.float(), dtype if n in "qkv" else dtype)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_causal_functions(name, dtype):
    inputs, call, ref = CASES[name]
    d = make_inputs(90, 2, 40, 2, 16, 16, h0=True, **inputs)
    h0 = d.pop("h0")
    vk, rf = _leaves(d, dtype)
    s0 = torch.as_tensor(h0, dtype=torch.float32).requires_grad_()
    r0 = s0.detach().double().requires_grad_()
    o, ht = call(vk, initial_state=s0, output_final_state=True)
    assert o.dtype == TORCH_DTYPES[dtype] and ht.dtype == torch.float32
    ro, rht = ref(dict(rf, h0=r0))
    assert_close("o", ro, o.float(), dtype)
    assert_close("ht", rht, ht, dtype)
    rng = np.random.default_rng(91)
    do = rounded(rng.standard_normal(o.shape), dtype)
    dht = torch.as_tensor(rng.standard_normal(ht.shape))
    ((o.double() * do).sum() + (ht.double() * dht).sum()).backward()
    ((ro * do).sum() + (rht * dht).sum()).backward()
    vk["h0"], rf["h0"] = s0, r0
    _compare_grads(vk, rf, dtype)


def test_no_final_state_and_no_grad():
    d = make_inputs(92, 1, 16, 2, 16, 16, gates=("g",))
    t = {n: torch.as_tensor(x, dtype=torch.float32) for n, x in d.items()}
    o, ht = vt.chunk_simple_gla(t["q"], t["k"], t["v"], g=t["g"])
    assert ht is None and not o.requires_grad
    ro, _, _ = ref_linear_attn(**{n: x.double() for n, x in t.items()})
    assert_close("o", ro, o, "f32")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_linear_attn_normalize_state_pair(form):
    fn = vt.chunk_linear_attn if form == "chunk" else vt.fused_recurrent_linear_attn
    d = make_inputs(93, 1, 40, 2, 16, 16, h0=True, z0=True, N=3)
    d["q"], d["k"] = np.abs(d["q"]) + 0.1, np.abs(d["k"]) + 0.1
    cu = torch.tensor([0, 9, 17, 40])
    t = {n: torch.as_tensor(x, dtype=torch.float32).requires_grad_(n != "z0")
         for n, x in d.items()}
    o, (S, z) = fn(t["q"], t["k"], t["v"], initial_state=(t["h0"], t["z0"]),
                   output_final_state=True, cu_seqlens=cu)
    assert not z.requires_grad
    r = {n: x.detach().double().requires_grad_(n != "z0") for n, x in t.items()}
    ro, rS, rz = ref_linear_attn(**r, normalize=True, cu_seqlens=cu.tolist())
    for what, a, b in (("o", ro, o), ("S", rS, S), ("z", rz, z)):
        assert_close(what, a, b, "f32")
    (o.sum() + S.sum()).backward()
    (ro.sum() + rS.sum()).backward()
    for n in ("q", "k", "v", "h0"):
        assert_close("d" + n, r[n].grad, t[n].grad, "f32")
    # S alone as the initial state: z starts at zero
    o2, _ = fn(t["q"], t["k"], t["v"], initial_state=t["h0"], cu_seqlens=cu)
    ro2, _, _ = ref_linear_attn(**dict(r, z0=None), normalize=True, cu_seqlens=cu.tolist())
    assert_close("o (S only)", ro2, o2, "f32")
    with pytest.raises(ValueError, match="detach"):
        fn(t["q"], t["k"], t["v"], initial_state=(t["h0"], t["z0"].requires_grad_()))


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("form", ["chunk", "attn", "rnn"])
def test_lion(form, dtype):
    d = make_inputs(94, 2, 40, 2, 16, 16, gates=("g", "g_gamma"))
    vk, rf = _leaves(d, dtype)
    o = vt.lion(vk["q"], vk["k"], vk["v"], g=vk["g"], g_gamma=vk["g_gamma"], form=form)
    assert o.dtype == TORCH_DTYPES[dtype]
    ro = ref_lion(**rf)
    assert_close("o", ro, o.float(), dtype)
    do = rounded(np.random.default_rng(95).standard_normal(o.shape), dtype)
    (o.double() * do).sum().backward()
    (ro * do).sum().backward()
    _compare_grads(vk, rf, dtype)


def test_varlen_gated_delta_rule():
    d = make_inputs(96, 1, 40, 2, 16, 16, gates=("beta", "g"), h0=True, N=3, unit_keys=True)
    t = {n: torch.as_tensor(x, dtype=torch.float32).requires_grad_() for n, x in d.items()}
    cu = torch.tensor([0, 12, 13, 40], dtype=torch.long)
    o, ht = vt.chunk_gated_delta_rule(t["q"], t["k"], t["v"], t["g"], t["beta"],
                                      initial_state=t["h0"], output_final_state=True,
                                      cu_seqlens=cu)
    r = {n: x.detach().double().requires_grad_() for n, x in t.items()}
    ro, rht = ref_delta_rule(**r, cu_seqlens=cu.tolist())
    assert_close("o", ro, o, "f32")
    assert_close("ht", rht, ht, "f32")
    (o.sum() + (ht * ht).sum()).backward()
    (ro.sum() + (rht * rht).sum()).backward()
    for n in t:
        assert_close("d" + n, r[n].grad, t[n].grad, "f32")


def test_non_contiguous_and_other_float_gates_are_copied():
    d = make_inputs(97, 2, 24, 2, 16, 16, gates=("g",))
    qkv = torch.as_tensor(np.concatenate([d["q"], d["k"], d["v"]], -1), dtype=torch.float32)
    qkv.requires_grad_()
    q, k, v = qkv[..., :16], qkv[..., 16:32], qkv[..., 32:]
    g = torch.as_tensor(d["g"], dtype=torch.float64).requires_grad_()
    o, _ = vt.chunk_simple_gla(q, k, v, g=g)
    ro, _, _ = ref_linear_attn(q.detach().double(), k.detach().double(), v.detach().double(),
                               g=g.detach())
    assert_close("o", ro, o, "f32")
    o.sum().backward()
    assert qkv.grad.shape == qkv.shape and g.grad.dtype == torch.float64


@pytest.mark.parametrize("normalize", [False, True])
def test_lion_permuted_views_are_read_in_place(normalize):
    """q, k, v as [B, T, H, D] views of [H, B, T, D] blocks (as vkla.icl's models pass them):
    read through their strides, o and the gradients come back in the same layout, and all of
    them match the reference (LION-LIT at T = 21, K = V = 11: the short-sequence path)."""
    rng = np.random.default_rng(98)
    blocks = [torch.as_tensor(rng.uniform(0.05, 1.0, (3, 2, 21, 11)), dtype=torch.float32)
              .requires_grad_() for _ in range(3)]
    q, k, v = (b.permute(1, 2, 0, 3) for b in blocks)
    assert not q.is_contiguous() and vt._dense(q) is q
    o = vt.lion(q, k, v, scale=1.0, normalize=normalize)
    assert o.stride() == v.stride()
    r = [b.detach().double().permute(1, 2, 0, 3).contiguous().requires_grad_() for b in blocks]
    ro = ref_lion(*r, scale=1.0, normalize=normalize)
    assert_close("o", ro, o, "f32")
    do = torch.as_tensor(rng.standard_normal(o.shape))
    (o.double() * do).sum().backward()
    (ro * do).sum().backward()
    for name, b, rr in zip("qkv", blocks, r):
        assert_close("d" + name, rr.grad, b.grad.permute(1, 2, 0, 3), "f32")


def test_decode_steps_match_the_whole_sequence():
    d = make_inputs(98, 1, 12, 2, 16, 16, gates=("beta", "g"), unit_keys=True)
    t = {n: torch.as_tensor(x, dtype=torch.float32) for n, x in d.items()}
    o, ht = vt.chunk_gated_delta_rule(t["q"], t["k"], t["v"], t["g"], t["beta"],
                                      output_final_state=True)
    state, steps = None, []
    for i in range(12):
        s = slice(i, i + 1)
        oi, state = vt.fused_recurrent_gated_delta_rule(
            t["q"][:, s], t["k"][:, s], t["v"][:, s], t["g"][:, s], t["beta"][:, s],
            initial_state=state, output_final_state=True)
        steps.append(oi)
    assert_close("o", o.double(), torch.cat(steps, 1), "f32")
    assert_close("ht", ht.double(), state, "f32")


def test_double_backward_is_refused():
    q, k, v = (torch.randn(1, 8, 2, 16, requires_grad=True) for _ in range(3))
    o, _ = vt.chunk_linear_attn(q, k, v, normalize=False)
    (dq,) = torch.autograd.grad(o.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        dq.sum().backward()
