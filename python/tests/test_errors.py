"""Bad input raises a Python exception naming the problem (never a crash or a silently wrong
result), and the context stays usable afterwards."""
import numpy as np
import pytest
import torch

import vkla
import vkla.torch as vt


def _qkv(B=1, T=8, H=2, K=16, V=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, T, H, d, generator=g).to(dtype) for d in (K, K, V)]


def test_shapes():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="q must be 4-D"):
        vkla.linear_attn(q[0].numpy(), k.numpy(), v.numpy())
    with pytest.raises(vkla.VklaError) as e:
        vkla.linear_attn(q.numpy(), k[:, :4].numpy(), v.numpy())
    assert e.value.code == -3 and "k" in e.value.message
    with pytest.raises(vkla.VklaError, match="g"):
        vt.chunk_simple_gla(q, k, v, g=torch.zeros(1, 8, 3))
    with pytest.raises(vkla.VklaError, match="h0"):
        vt.chunk_delta_rule(q, k, v, torch.rand(1, 8, 2), initial_state=torch.zeros(1, 2, 16, 8))
    with pytest.raises(vkla.VklaError, match="beta"):
        vt.chunk_delta_rule(q, k, v, torch.rand(1, 8, 2, 16))
    with pytest.raises(vkla.VklaError) as e:  # K beyond what the ops take
        vkla.lion(np.ones((1, 2, 1, 300)), np.ones((1, 2, 1, 300)), np.ones((1, 2, 1, 4)))
    assert e.value.code == -5


def test_dtypes_and_devices():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="share one dtype"):
        vt.chunk_linear_attn(q, k.half(), v)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        vt.chunk_linear_attn(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="floating-point"):
        vt.chunk_simple_gla(q, k, v, g=torch.zeros(1, 8, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        vt.chunk_linear_attn(q.numpy(), k, v)
    with pytest.raises(ValueError, match="CPU tensors"):
        vt.chunk_linear_attn(q.to("meta"), k, v)
    with pytest.raises(TypeError, match="floating-point array"):
        vkla.lion(np.ones((1, 4, 1, 4), np.int32), k.numpy(), v.numpy())
    with pytest.raises(ValueError, match="dtype must be"):
        vkla.lion(q.numpy(), k.numpy(), v.numpy(), dtype="f64")


def test_seqlens():
    q, k, v = _qkv()
    for bad in ([0, 5, 3, 8], [0, 4, 7], [1, 8], [0, 4, 9]):
        with pytest.raises(vkla.VklaError) as e:
            vt.chunk_linear_attn(q, k, v, cu_seqlens=torch.tensor(bad))
        assert e.value.code == -6, bad
    with pytest.raises(ValueError, match="N\\+1"):
        vkla.lion(q.numpy(), k.numpy(), v.numpy(), cu_seqlens=[0])
    with pytest.raises(TypeError, match="integer"):
        vt.lion(q, k, v, cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match="B = 1"):
        q2, k2, v2 = _qkv(B=2)
        vt.chunk_linear_attn(q2, k2, v2, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="2\\^31"):
        vkla.lion(q.numpy(), k.numpy(), v.numpy(), cu_seqlens=[0, 2 ** 40])


def test_options():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="form"):
        vt.lion(q, k, v, form="recurrent")
    with pytest.raises(ValueError, match="form"):
        vkla.linear_attn(q.numpy(), k.numpy(), v.numpy(), form="attn")
    with pytest.raises(vkla.VklaError, match="chunk_size"):
        vkla.linear_attn(q.numpy(), k.numpy(), v.numpy(), chunk_size=48)
    with pytest.raises(ValueError, match="scale"):
        vt.chunk_linear_attn(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError, match="required"):
        vt.chunk_gla(q, k, v, None)
    with pytest.raises(ValueError, match="required"):
        vt.chunk_gated_delta_rule(q, k, v, torch.zeros(1, 8, 2), None)
    with pytest.raises(ValueError, match="pair"):
        vt.chunk_linear_attn(q, k, v, normalize=False,
                             initial_state=(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16)))


@pytest.mark.parametrize("kwargs", [dict(head_first=True), dict(reverse=True),
                                    dict(chunk_size=32), dict(gv=None)])
def test_unsupported_keywords(kwargs):
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="unsupported keyword argument"):
        vt.chunk_gla(q, k, v, -torch.rand(1, 8, 2, 16), **kwargs)
    with pytest.raises(TypeError):
        vt.lion(q, k, v, **kwargs)


def test_neutral_keywords_accepted_and_context_survives_errors():
    q, k, v = _qkv()
    with pytest.raises(vkla.VklaError):
        vt.chunk_delta_rule(q, k, v, torch.rand(1, 8, 3))
    o, _ = vt.chunk_delta_rule(q, k, v, torch.rand(1, 8, 2), head_first=False, reverse=False)
    assert torch.isfinite(o).all()
    assert vkla.default_context().validation_messages == []


def test_error_carries_code_and_message():
    q, k, v = _qkv()
    with pytest.raises(vkla.VklaError) as e:
        vkla.linear_attn(q.numpy(), k.numpy(), v.numpy(), g_gamma=np.zeros(5))
    err = e.value
    assert err.code == -3 and err.code_name.startswith("VKLA_ERROR_SHAPE_MISMATCH")
    assert "g_gamma" in err.message and str(err).startswith("VKLA_ERROR_SHAPE_MISMATCH")


def test_empty_sequence():
    q, k, v = _qkv(T=0)
    with pytest.raises(vkla.VklaError):
        vt.chunk_linear_attn(q, k, v)
    with pytest.raises(vkla.VklaError):
        vkla.lion(q.numpy(), k.numpy(), v.numpy())
