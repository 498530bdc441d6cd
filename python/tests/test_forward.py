"""numpy API forward passes against the float64 SPEC references in conftest, for every op,
form, gate group, option group and storage dtype."""
import numpy as np
import pytest

import vkla
from conftest import (as_t, assert_close, make_inputs, ref_delta_rule, ref_linear_attn,
                      ref_lion)

SHAPE = dict(B=2, T=40, H=2, K=16, V=16)
CU = [0, 5, 21, 40]


def _positive(d):
    """Positive feature maps for the normalized forms (a denominator away from zero)."""
    d["q"], d["k"] = np.abs(d["q"]) + 0.1, np.abs(d["k"]) + 0.1
    return d


LA_GATES = [(), ("g",), ("g_gamma",), ("gk",), ("g", "g_gamma", "gk")]


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("gates", LA_GATES, ids=lambda g: "+".join(g) or "none")
def test_linear_attn_gates(form, gates):
    d = make_inputs(10, **SHAPE, gates=gates, h0=True)
    o, ht = vkla.linear_attn(**d, form=form, chunk_size=16)
    ro, rht, _ = ref_linear_attn(**as_t(d))
    assert_close("o", ro, o, "f32")
    assert_close("ht", rht, ht, "f32")


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_linear_attn_dtypes(form, dtype):
    d = make_inputs(11, **SHAPE, gates=("g", "gk"), h0=True)
    o, ht = vkla.linear_attn(**d, form=form, dtype=dtype)
    ro, rht, _ = ref_linear_attn(**as_t(d, dtype))
    assert_close("o", ro, o, dtype)
    assert_close("ht", rht, ht, dtype)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_linear_attn_normalize_scale_varlen(form):
    d = _positive(make_inputs(12, 1, 40, 2, 16, 16, gates=("g_gamma",), h0=True, z0=True, N=3))
    o, (ht, zt) = vkla.linear_attn(**d, form=form, normalize=True, eps=1e-3, scale=0.3,
                                   cu_seqlens=np.array(CU, np.int64), chunk_size=32)
    ro, rht, rzt = ref_linear_attn(**as_t(d), normalize=True, eps=1e-3, scale=0.3, cu_seqlens=CU)
    assert_close("o", ro, o, "f32")
    assert_close("ht", rht, ht, "f32")
    assert_close("zt", rzt, zt, "f32")


DR_OPTS = [dict(gates=("beta",)), dict(gates=("beta", "g")), dict(gates=("beta", "g"), l2=True)]


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("opt", DR_OPTS, ids=["delta", "gated", "gated-l2norm"])
def test_delta_rule(form, opt):
    l2 = opt.get("l2", False)
    d = make_inputs(20, **SHAPE, HV=4, gates=opt["gates"], h0=True, unit_keys=not l2)
    o, ht = vkla.delta_rule(**d, form=form, l2norm=l2, chunk_size=16)
    ro, rht = ref_delta_rule(**as_t(d), l2norm=l2)
    assert_close("o", ro, o, "f32")
    assert_close("ht", rht, ht, "f32")


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_delta_rule_dtypes_varlen(form, dtype):
    d = make_inputs(21, 1, 40, 2, 16, 16, gates=("beta", "g"), h0=True, N=3, unit_keys=True)
    o, ht = vkla.delta_rule(**d, form=form, dtype=dtype, cu_seqlens=CU, scale=0.5)
    ro, rht = ref_delta_rule(**as_t(d, dtype), cu_seqlens=CU, scale=0.5)
    assert_close("o", ro, o, dtype)
    assert_close("ht", rht, ht, dtype)


LION_GATES = [(), ("g_gamma",), ("g",)]


@pytest.mark.parametrize("form", ["chunk", "attn", "rnn"])
@pytest.mark.parametrize("gates", LION_GATES, ids=["lit", "d", "s"])
def test_lion(form, gates):
    d = make_inputs(30, **SHAPE, gates=gates)
    o = vkla.lion(**d, form=form, chunk_size=16)
    assert_close("o", ref_lion(**as_t(d)), o, "f32")


@pytest.mark.parametrize("form", ["chunk", "attn", "rnn"])
def test_lion_normalize_varlen(form):
    d = _positive(make_inputs(31, 1, 40, 2, 16, 16, gates=("g",)))
    o = vkla.lion(**d, form=form, normalize=True, eps=1e-4, cu_seqlens=CU)
    assert_close("o", ref_lion(**as_t(d), normalize=True, eps=1e-4, cu_seqlens=CU), o, "f32")


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_lion_dtypes(dtype):
    d = make_inputs(32, **SHAPE, gates=("g_gamma",))
    o = vkla.lion(**d, dtype=dtype)
    assert_close("o", ref_lion(**as_t(d, dtype)), o, dtype)


def test_strided_and_float64_inputs_are_copied():
    d = make_inputs(40, **SHAPE, gates=("g",))
    big = np.concatenate([d["q"], d["k"], d["v"]], axis=-1)  # a fused projection
    q, k, v = big[..., :16], big[..., 16:32], big[..., 32:]
    assert not q.flags.c_contiguous
    o, _ = vkla.linear_attn(q, k, v, g=d["g"][:, ::1])
    ro, _, _ = ref_linear_attn(**as_t(d))
    assert_close("o", ro, o, "f32")
    assert o.dtype == np.float32 and o.flags.c_contiguous
