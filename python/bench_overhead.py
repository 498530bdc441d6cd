"""The cost of calling a vkla op from PyTorch against the op's own GPU time.

For each case: call_us, the median wall time of a vkla.torch forward call (argument checks,
uploads, recording, submitting, waiting, downloads); gpu_us, the median GPU time of the same op
from timestamp queries around its dispatches (vkla_<op>_bench); binding_us, the median time of
the same call with the library's vkla_<op>_run replaced by a no-op, i.e. what the Python side
adds per call (checks, ctypes args, output allocation, the host copies of inputs and outputs).
On a shared CPU device call_us - gpu_us is noisy (it can even come out negative); binding_us
is the stable figure.
Usage: /usr/bin/python3 python/bench_overhead.py [--reps N]
"""
import argparse
import statistics
import time

import torch

import vkla
from vkla import _lib, _ops
from vkla import torch as vt
from vkla.torch import _host

CASES = [("small", 1, 64, 2, 64, 64), ("large", 1, 4096, 4, 64, 64)]


def _median_call(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    reps = ap.parse_args().reps
    ctx = vkla.default_context()
    print("device: %s (%s)" % (ctx.device_name, ctx.variant))
    print("%-24s %-6s %10s %10s %11s" % ("function", "case", "call_us", "gpu_us", "binding_us"))
    for label, B, T, H, K, V in CASES:
        gen = torch.Generator().manual_seed(0)
        q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
        v = torch.randn(B, T, H, V, generator=gen)
        g = -torch.rand(B, T, H, generator=gen)
        beta = torch.rand(B, T, H, generator=gen)
        kn = torch.nn.functional.normalize(k, dim=-1)
        rows = [
            ("chunk_simple_gla", lambda: vt.chunk_simple_gla(q, k, v, g=g),
             _ops.LINEAR_ATTN, dict(q=q, k=k, v=v, g=g), dict(o=v), {}),
            ("chunk_gated_delta_rule", lambda: vt.chunk_gated_delta_rule(q, kn, v, g, beta),
             _ops.DELTA_RULE, dict(q=q, k=kn, v=v, beta=beta, g=g), dict(o=v), {}),
            ("lion", lambda: vt.lion(q, k, v, g=g), _ops.LION, dict(q=q, k=k, v=v, g=g),
             dict(o=v), {}),
        ]
        for name, call, spec, ins, outs, opts in rows:
            with torch.no_grad():
                call_us = _median_call(call, reps)
            outs = {n: _host(torch.empty_like(t)) for n, t in outs.items()}
            gpu = _ops.forward(spec, name, {n: _host(t) for n, t in ins.items()}, outs,
                               bench=(3, reps), **opts)
            gpu_us = statistics.median(gpu)
            run = "vkla_%s_run" % spec.name
            real = getattr(_lib.lib, run)
            setattr(_lib.lib, run, lambda *a: 0)
            try:
                with torch.no_grad():
                    binding_us = _median_call(call, reps)
            finally:
                setattr(_lib.lib, run, real)
            print("%-24s %-6s %10.1f %10.1f %11.1f" % (name, label, call_us, gpu_us, binding_us))


if __name__ == "__main__":
    main()
