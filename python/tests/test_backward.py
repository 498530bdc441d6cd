"""Backward passes through the numpy API: every gradient against float64 autograd of the SPEC
references (and, for one case per op, against central finite differences of the float64
forward: torch.autograd.gradcheck needs float64 end to end, which the device does not do, so
the f32 device gradients are compared with float64 finite differences along random directions
at a tolerance suited to f32)."""
import numpy as np
import pytest
import torch

import vkla
from conftest import (as_t, assert_close, make_inputs, ref_delta_rule, ref_linear_attn,
                      ref_lion, rounded)

SHAPE = dict(B=2, T=40, H=2, K=16, V=16)
CU = [0, 7, 30, 40]
GRAD = {"q": "dq", "k": "dk", "v": "dv", "g": "dg", "g_gamma": "dg_gamma", "gk": "dgk",
        "beta": "dbeta", "h0": "dh0"}


def ref_grads(ref, d, dtype, do, dht=None, **kw):
    """float64 autograd gradients of sum(do * o) + sum(dht * ht) for every input in d."""
    leaves = {n: t.clone().requires_grad_(n in GRAD) for n, t in as_t(d, dtype).items()}
    out = ref(**leaves, **kw)
    o = out[0] if isinstance(out, tuple) else out
    loss = (o * rounded(do, dtype)).sum()
    if dht is not None:
        loss = loss + (out[1] * torch.as_tensor(dht)).sum()
    loss.backward()
    return {GRAD[n]: t.grad for n, t in leaves.items() if n in GRAD}


def _check(grads, ref, dtype):
    assert set(grads) == set(ref), (sorted(grads), sorted(ref))
    return {n: assert_close(n, ref[n], grads[n], dtype) for n in ref}


def _upstream(seed, d, N, causal=True):
    rng = np.random.default_rng(seed)
    B, T, _, _ = d["q"].shape
    HV, V, K = d["v"].shape[2], d["v"].shape[3], d["q"].shape[3]
    do = rng.standard_normal((B, T, HV, V))
    return do, (rng.standard_normal((N, HV, K, V)) if causal else None)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("gates", [(), ("g",), ("g_gamma",), ("gk",), ("g", "g_gamma", "gk")],
                         ids=lambda g: "+".join(g) or "none")
def test_linear_attn_backward(form, gates):
    d = make_inputs(50, **SHAPE, gates=gates, h0=True)
    do, dht = _upstream(51, d, 2)
    grads = vkla.linear_attn_backward(**d, do=do, dht=dht, form=form, chunk_size=16)
    _check(grads, ref_grads(ref_linear_attn, d, "f32", do, dht), "f32")


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_linear_attn_backward_normalize_varlen(dtype):
    d = make_inputs(52, 1, 40, 2, 16, 16, gates=("g",), h0=True, z0=True, N=3)
    d["q"], d["k"] = np.abs(d["q"]) + 0.1, np.abs(d["k"]) + 0.1
    do, dht = _upstream(53, d, 3)
    kw = dict(normalize=True, eps=1e-3, cu_seqlens=CU)
    grads = vkla.linear_attn_backward(**d, do=do, dht=dht, dtype=dtype, **kw)
    ref = ref_grads(ref_linear_attn, d, dtype, do, dht, **kw)
    _check(grads, ref, dtype)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_linear_attn_backward_dtypes(dtype):
    d = make_inputs(54, **SHAPE, gates=("g_gamma", "gk"))
    do, _ = _upstream(55, d, 2)
    grads = vkla.linear_attn_backward(**d, do=do, dtype=dtype)
    _check(grads, ref_grads(ref_linear_attn, d, dtype, do), dtype)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
@pytest.mark.parametrize("l2", [False, True], ids=["raw", "l2norm"])
def test_delta_rule_backward(form, gated, l2):
    gates = ("beta", "g") if gated else ("beta",)
    d = make_inputs(60, **SHAPE, HV=4, gates=gates, h0=True, unit_keys=not l2)
    do, dht = _upstream(61, d, 2)
    grads = vkla.delta_rule_backward(**d, do=do, dht=dht, form=form, l2norm=l2, chunk_size=16)
    _check(grads, ref_grads(ref_delta_rule, d, "f32", do, dht, l2norm=l2), "f32")


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_delta_rule_backward_dtypes_varlen(dtype):
    d = make_inputs(62, 1, 40, 2, 16, 16, gates=("beta", "g"), h0=True, N=3, unit_keys=True)
    do, dht = _upstream(63, d, 3)
    grads = vkla.delta_rule_backward(**d, do=do, dht=dht, dtype=dtype, cu_seqlens=CU)
    _check(grads, ref_grads(ref_delta_rule, d, dtype, do, dht, cu_seqlens=CU), dtype)


@pytest.mark.parametrize("form", ["chunk", "attn", "rnn"])
@pytest.mark.parametrize("gates", [(), ("g_gamma",), ("g",)], ids=["lit", "d", "s"])
def test_lion_backward(form, gates):
    d = make_inputs(70, **SHAPE, gates=gates)
    do, _ = _upstream(71, d, 2, causal=False)
    grads = vkla.lion_backward(**d, do=do, form=form, chunk_size=16)
    _check(grads, ref_grads(ref_lion, d, "f32", do), "f32")


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_lion_backward_normalize_varlen(dtype):
    d = make_inputs(72, 1, 40, 2, 16, 16, gates=("g", "g_gamma"))
    d["q"], d["k"] = np.abs(d["q"]) + 0.1, np.abs(d["k"]) + 0.1
    do, _ = _upstream(73, d, 3, causal=False)
    kw = dict(normalize=True, eps=1e-3, cu_seqlens=CU)
    grads = vkla.lion_backward(**d, do=do, dtype=dtype, **kw)
    _check(grads, ref_grads(ref_lion, d, dtype, do, **kw), dtype)


FD_CASES = {
    "linear_attn": (vkla.linear_attn_backward, ref_linear_attn,
                    dict(gates=("g", "g_gamma", "gk"), h0=True), {}),
    "delta_rule": (vkla.delta_rule_backward, ref_delta_rule,
                   dict(gates=("beta", "g"), h0=True, HV=4), dict(l2norm=True)),
    "lion": (vkla.lion_backward, ref_lion, dict(gates=("g", "g_gamma")), {}),
}


@pytest.mark.parametrize("op", sorted(FD_CASES))
def test_gradients_match_finite_differences(op):
    bwd, ref, inputs, kw = FD_CASES[op]
    d = make_inputs(80, 1, 24, 2, 8, 8, **inputs)
    causal = op != "lion"
    do, dht = _upstream(81, d, 1, causal)
    grads = bwd(**d, do=do, **({"dht": dht} if causal else {}), **kw)
    t = as_t(d)

    def loss(x):
        out = ref(**x, **kw)
        o = out[0] if causal else out
        val = (o * torch.as_tensor(do)).sum()
        return val + (out[1] * torch.as_tensor(dht)).sum() if causal else val

    rng = np.random.default_rng(82)
    h = 1e-5
    for name in t:
        u = torch.as_tensor(rng.standard_normal(t[name].shape))
        plus = dict(t, **{name: t[name] + h * u})
        minus = dict(t, **{name: t[name] - h * u})
        fd = float(loss(plus) - loss(minus)) / (2 * h)
        got = float((torch.as_tensor(grads[GRAD[name]], dtype=torch.float64) * u).sum())
        assert abs(got - fd) <= 1e-4 * max(1.0, abs(fd)), (name, got, fd)
