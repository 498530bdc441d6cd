"""Contexts: default and explicit, device info, the buffer cache, closing; finding the
library."""
import gc
import os
import subprocess

import numpy as np
import pytest

import vkla


def _small():
    rng = np.random.default_rng(1)
    return [rng.standard_normal((1, 8, 2, 16)) for _ in range(3)]


def test_default_context_is_shared_and_named():
    ctx = vkla.default_context()
    assert ctx is vkla.default_context()
    assert ctx.device_name and isinstance(ctx.device_name, str)
    assert isinstance(ctx.variant, str) and ctx.variant
    assert ctx.info["max_shared_memory"] > 0


def test_explicit_context_cache_and_close():
    q, k, v = _small()
    with vkla.Context(validation=True) as ctx:
        assert ctx.device_name == vkla.default_context().device_name
        o1, _ = vkla.linear_attn(q, k, v, ctx=ctx)
        assert ctx.cached_buffers == 1
        for _ in range(3):  # repeated shapes reuse the cached buffer
            o2, _ = vkla.linear_attn(q, k, v, ctx=ctx)
        assert ctx.cached_buffers == 1
        np.testing.assert_array_equal(o1, o2)
        vkla.linear_attn(q[:, :4], k[:, :4], v[:, :4], ctx=ctx)
        assert ctx.cached_buffers == 2
        assert ctx.validation_messages == []
    assert ctx.closed and ctx.cached_buffers == 0
    ctx.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        vkla.linear_attn(q, k, v, ctx=ctx)


def test_cache_limits(monkeypatch):
    from vkla import _core
    q, k, v = _small()
    with vkla.Context() as ctx:
        monkeypatch.setattr(_core, "_CACHE_ENTRIES", 2)
        for t in (2, 3, 4):
            vkla.lion(q[:, :t], k[:, :t], v[:, :t], ctx=ctx)
        assert ctx.cached_buffers == 2
        monkeypatch.setattr(_core, "_CACHE_BYTES", 1)
        vkla.lion(q, k, v, ctx=ctx)  # larger than the limit: only the buffer in use stays
        assert ctx.cached_buffers == 1


def test_device_selection():
    name = vkla.default_context().device_name
    with vkla.Context(device=name.split()[0]) as ctx:
        assert ctx.device_name == name
    with pytest.raises(vkla.VklaError) as e:
        vkla.Context(device="no-such-device-anywhere")
    assert e.value.code == -10 and "no-such-device-anywhere" in str(e.value)


def test_contexts_freed_by_gc():
    for _ in range(2):
        ctx = vkla.Context()
        vkla.lion(*_small(), ctx=ctx)
        del ctx
        gc.collect()


def test_set_default_context():
    with vkla.Context() as ctx:
        old = vkla.set_default_context(ctx)
        try:
            assert vkla.default_context() is ctx
        finally:
            vkla.set_default_context(old)
    with pytest.raises(TypeError):
        vkla.set_default_context("llvmpipe")



ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def _python(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("VKLA_LIBRARY", "PYTHONPATH")}
    full.update(env)
    return subprocess.run(["/usr/bin/python3", "-c", code], env=full, cwd="/",
                          capture_output=True, text=True)


def test_library_search():
    r = _python("import vkla", PYTHONPATH=os.path.join(ROOT, "python"),
                VKLA_LIBRARY="/nonexistent/libvkla.so")
    assert r.returncode != 0 and "cannot load libvkla.so" in r.stderr
    assert "/nonexistent/libvkla.so" in r.stderr
    # the line tools/python-env.sh prints is all it takes with the library in build/
    if not os.path.exists(os.path.join(ROOT, "build", "libvkla.so")):
        pytest.skip("no build/libvkla.so in the source tree")
    line = subprocess.run([os.path.join(ROOT, "tools", "python-env.sh")], check=True,
                          capture_output=True, text=True).stdout
    r = subprocess.run(["sh", "-c", line.strip() + "; cd / && /usr/bin/python3 -c "
                        "'import vkla; print(vkla.library_path)'"], capture_output=True,
                       text=True, env={k: v for k, v in os.environ.items()
                                       if k not in ("VKLA_LIBRARY", "PYTHONPATH")})
    assert r.returncode == 0, r.stderr
    assert os.path.samefile(r.stdout.strip(), os.path.join(ROOT, "build", "libvkla.so"))


def test_scratch_limit():
    """The context's scratch bound: calls that need more run as pieces of T (same result)."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 300, 2, 32)) for _ in range(3))
    g = -rng.uniform(0.01, 0.5, (1, 300, 2))
    with vkla.Context(validation=True) as ctx:
        assert ctx.scratch_limit == 1 << 30
        o_ref, _ = vkla.linear_attn(q, k, v, g=g, ctx=ctx)
        lion_ref = vkla.lion(q, k, v, g=g, chunk_size=16, ctx=ctx)
        ctx.scratch_limit = 40000
        assert ctx.scratch_limit == 40000
        o, _ = vkla.linear_attn(q, k, v, g=g, ctx=ctx)
        np.testing.assert_allclose(o, o_ref, rtol=1e-5, atol=1e-5)
        ctx.scratch_limit = 300000
        o = vkla.lion(q, k, v, g=g, chunk_size=16, ctx=ctx)   # two pieces of 192 and 108
        np.testing.assert_allclose(o, lion_ref, rtol=1e-5, atol=1e-5)
        with pytest.raises(vkla.VklaError, match="4095"):
            ctx.scratch_limit = 4095
        with pytest.raises(ValueError, match="negative"):
            ctx.scratch_limit = -1
        assert ctx.scratch_limit == 300000
        ctx.scratch_limit = None
        assert ctx.scratch_limit == 1 << 30
        assert ctx.validation_messages == []
    with pytest.raises(ValueError, match="closed"):
        ctx.scratch_limit


def test_scratch_limit_from_environment():
    out = subprocess.run(
        ["/usr/bin/python3", "-c", "import vkla; print(vkla.Context().scratch_limit)"],
        env=dict(os.environ, VKLA_MAX_SCRATCH="65536"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "65536"
    bad = subprocess.run(["/usr/bin/python3", "-c", "import vkla; vkla.Context()"],
                         env=dict(os.environ, VKLA_MAX_SCRATCH="12k"), capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "VKLA_MAX_SCRATCH=12k" in bad.stderr
