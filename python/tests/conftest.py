"""Shared pieces of the Python tests: float64 PyTorch implementations of the SPEC equations
(token-by-token recurrences, T x T for LION), input makers, rounding to the storage dtypes and
the NMSE targets of the SPEC's Accuracy section."""
import os
import sys

import pytest

np = pytest.importorskip("numpy", reason="numpy is missing (Debian: python3-numpy)")
torch = pytest.importorskip("torch", reason="torch is missing (Debian: python3-torch)")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import vkla  # noqa: E402


@pytest.fixture(autouse=True)
def no_validation_messages():
    """With VKLA_VALIDATION=1 (ctest sets it), any validation message fails the test."""
    ctx = vkla.default_context()
    seen = len(ctx.validation_messages)
    yield
    if not ctx.closed:
        assert ctx.validation_messages[seen:] == []


TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def rounded(x, dtype):
    """float64 copy of x rounded to a storage dtype."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x)
    return t.to(TORCH_DTYPES[dtype]).to(torch.float64)


def nmse(ref, out):
    ref = torch.as_tensor(np.asarray(ref, dtype=np.float64)) if not isinstance(
        ref, torch.Tensor) else ref.detach().double()
    out = torch.as_tensor(np.asarray(out, dtype=np.float64)) if not isinstance(
        out, torch.Tensor) else out.detach().double()
    assert ref.shape == out.shape, (ref.shape, out.shape)
    assert torch.isfinite(out).all(), "output has NaN or Inf"
    den = float((ref * ref).sum())
    num = float(((ref - out) ** 2).sum())
    return num / den if den > 0 else num


def target(ref, dtype):
    """SPEC Accuracy: 1e-9 for f32; for f16/bf16 ten times the error of rounding ref once."""
    if dtype == "f32":
        return 1e-9
    r = torch.as_tensor(ref).detach().double()
    e = nmse(r, rounded(r, dtype))
    return 10.0 * max(e, 1e-12)


def assert_close(what, ref, out, dtype, tgt=None):
    tgt = target(ref, dtype) if tgt is None else tgt
    e = nmse(ref, out)
    log = os.environ.get("VKLA_NMSE_LOG")  # a file to append "test|what|dtype|nmse|target" to
    if log:
        with open(log, "a") as f:
            f.write("%s|%s|%s|%.3g|%.3g\n" % (os.environ.get("PYTEST_CURRENT_TEST", "").split(
                " ")[0], what, dtype, e, tgt))
    assert e <= tgt, "%s: NMSE %.3g > target %.3g" % (what, e, tgt)
    return e


def _sequences(B, T, cu_seqlens):
    """(batch row, start, end) of each sequence."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    cu = [int(c) for c in cu_seqlens]
    return [(0, cu[n], cu[n + 1]) for n in range(len(cu) - 1)]


def ref_linear_attn(q, k, v, g=None, g_gamma=None, gk=None, h0=None, z0=None, scale=None,
                    normalize=False, eps=1e-6, cu_seqlens=None):
    """SPEC 1, one token at a time. Returns (o, ht, zt) (zt None without normalize)."""
    B, T, H, K = q.shape
    V = v.shape[3]
    scale = K ** -0.5 if scale is None else scale
    o = [None] * B
    rows = [[] for _ in range(B)]
    hts, zts = [], []
    for n, (b, t0, t1) in enumerate(_sequences(B, T, cu_seqlens)):
        S = h0[n] if h0 is not None else q.new_zeros(H, K, V)
        z = z0[n] if z0 is not None else q.new_zeros(H, K)
        for t in range(t0, t1):
            d = q.new_zeros(H, K)
            if g is not None:
                d = d + g[b, t][:, None]
            if g_gamma is not None:
                d = d + g_gamma[:, None]
            if gk is not None:
                d = d + gk[b, t]
            S = torch.exp(d)[:, :, None] * S + k[b, t][:, :, None] * v[b, t][:, None, :]
            ot = scale * torch.einsum("hkv,hk->hv", S, q[b, t])
            if normalize:
                z = torch.exp(d) * z + k[b, t]
                ot = ot / (scale * (q[b, t] * z).sum(-1) + eps)[:, None]
            rows[b].append(ot)
        hts.append(S)
        zts.append(z)
    o = torch.stack([torch.stack(r) for r in rows])
    return o, torch.stack(hts), (torch.stack(zts) if normalize else None)


def _l2(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def ref_delta_rule(q, k, v, beta, g=None, h0=None, scale=None, l2norm=False, cu_seqlens=None):
    """SPEC 2, one token at a time, grouped value heads. Returns (o, ht)."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    scale = K ** -0.5 if scale is None else scale
    if l2norm:
        q, k = _l2(q), _l2(k)
    q = q.repeat_interleave(HV // H, dim=2)
    k = k.repeat_interleave(HV // H, dim=2)
    rows = [[] for _ in range(B)]
    hts = []
    for n, (b, t0, t1) in enumerate(_sequences(B, T, cu_seqlens)):
        S = h0[n] if h0 is not None else q.new_zeros(HV, K, V)
        for t in range(t0, t1):
            if g is not None:
                S = torch.exp(g[b, t])[:, None, None] * S
            u = beta[b, t][:, None] * (v[b, t] - torch.einsum("hkv,hk->hv", S, k[b, t]))
            S = S + k[b, t][:, :, None] * u[:, None, :]
            rows[b].append(scale * torch.einsum("hkv,hk->hv", S, q[b, t]))
        hts.append(S)
    return torch.stack([torch.stack(r) for r in rows]), torch.stack(hts)


def ref_lion(q, k, v, g=None, g_gamma=None, scale=None, normalize=False, eps=1e-6,
             cu_seqlens=None):
    """SPEC 3 as the T x T attention per sequence. Returns o."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    out = torch.zeros(B, T, H, v.shape[3], dtype=q.dtype)
    pieces = {}
    for b, t0, t1 in _sequences(B, T, cu_seqlens):
        n = t1 - t0
        a = q.new_zeros(n, H)
        if g is not None:
            a = a + g[b, t0:t1]
        if g_gamma is not None:
            a = a + g_gamma
        c = torch.cumsum(a, 0)          # c_t = a_0 + ... + a_t
        ce = c - a                      # a_0 + ... + a_(t-1)
        i = torch.arange(n)[:, None, None]
        j = torch.arange(n)[None, :, None]
        logm = torch.where(i > j, ce[:, None, :] - ce[None, :, :],
                           torch.where(i < j, c[None, :, :] - c[:, None, :],
                                       torch.zeros(n, n, H, dtype=q.dtype)))
        A = scale * torch.einsum("ihk,jhk->ijh", q[b, t0:t1], k[b, t0:t1]) * torch.exp(logm)
        o = torch.einsum("ijh,jhv->ihv", A, v[b, t0:t1])
        if normalize:
            o = o / (A.sum(1) + eps)[:, :, None]
        pieces[(b, t0)] = (t1, o)
    rows = []
    for b in range(B):
        parts = [pieces[key][1] for key in sorted(pieces) if key[0] == b]
        rows.append(torch.cat(parts, 0) if parts else out[b])
    return torch.stack(rows)


def make_inputs(seed, B, T, H, K, V, HV=None, gates=(), h0=False, z0=False, N=None,
                unit_keys=False):
    """float64 numpy inputs: q k v and the gates named in `gates` (log decays in [-1, 0),
    beta in (0, 1)), h0 [N,HV,K,V], z0 [N,H,K]."""
    rng = np.random.default_rng(seed)
    HV = HV or H
    N = N or B
    d = {"q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
         "v": rng.standard_normal((B, T, HV, V))}
    if unit_keys:
        d["k"] /= np.linalg.norm(d["k"], axis=-1, keepdims=True)
    if "g" in gates:
        d["g"] = -rng.uniform(0.01, 1.0, (B, T, HV))
    if "g_gamma" in gates:
        d["g_gamma"] = -rng.uniform(0.01, 0.5, (H,))
    if "gk" in gates:
        d["gk"] = -rng.uniform(0.01, 1.0, (B, T, H, K))
    if "beta" in gates:
        d["beta"] = rng.uniform(0.05, 0.95, (B, T, HV))
    if h0:
        d["h0"] = rng.standard_normal((N, HV, K, V)) * 0.5
    if z0:
        d["z0"] = np.abs(rng.standard_normal((N, H, K))) + 1.0
    return d


def as_t(d, dtype="f32", names=("q", "k", "v")):
    """float64 torch tensors of the inputs; q k v rounded to the storage dtype."""
    return {n: (rounded(x, dtype) if n in names else torch.as_tensor(x, dtype=torch.float64))
            for n, x in d.items()}
