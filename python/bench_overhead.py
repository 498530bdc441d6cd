"""The cost of calling a vkla op from PyTorch against the op's own GPU time.

For each case: call_us, the median wall time of a vkla.torch forward call (argument checks,
uploads, recording, submitting, waiting, downloads); gpu_us, the median GPU time of the same op
from timestamp queries around its dispatches (vkla_<op>_bench); binding_us, the median time of
the same call with the library's vkla_<op>_run replaced by a no-op, i.e. what the Python side
adds per call (checks, ctypes args, output allocation, the host copies of inputs and outputs).
On a shared CPU device call_us - gpu_us is noisy (it can even come out negative); binding_us
is the stable figure.
With --backward, the same for a training step: the forward and the backward call, against the
sum of the two ops' GPU times.
Usage: /usr/bin/python3 python/bench_overhead.py [--reps N] [--backward]
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


def _stubbed(names, fn):
    """fn() with the library functions `names` replaced by no-ops that report success."""
    real = {n: getattr(_lib.lib, n) for n in names}
    for n in names:
        setattr(_lib.lib, n, lambda *a: 0)
    try:
        return fn()
    finally:
        for n, f in real.items():
            setattr(_lib.lib, n, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--backward", action="store_true",
                    help="time forward + backward (a training step) instead of the forward")
    opt = ap.parse_args()
    reps, bwd = opt.reps, opt.backward
    ctx = vkla.default_context()
    print("device: %s (%s); %s" % (ctx.device_name, ctx.variant,
                                   "forward + backward" if bwd else "forward"))
    print("%-24s %-6s %10s %10s %11s" % ("function", "case", "call_us", "gpu_us", "binding_us"))
    for label, B, T, H, K, V in CASES:
        gen = torch.Generator().manual_seed(0)
        q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
        v = torch.randn(B, T, H, V, generator=gen)
        g = -torch.rand(B, T, H, generator=gen)
        beta = torch.rand(B, T, H, generator=gen)
        k = torch.nn.functional.normalize(k, dim=-1)
        do = torch.randn(B, T, H, V, generator=gen)
        for t in (q, k, v, g, beta):
            t.requires_grad_(bwd)
        rows = [
            ("chunk_simple_gla", lambda: vt.chunk_simple_gla(q, k, v, g=g)[0],
             _ops.LINEAR_ATTN, dict(q=q, k=k, v=v, g=g)),
            ("chunk_gated_delta_rule", lambda: vt.chunk_gated_delta_rule(q, k, v, g, beta)[0],
             _ops.DELTA_RULE, dict(q=q, k=k, v=v, beta=beta, g=g)),
            ("lion", lambda: vt.lion(q, k, v, g=g), _ops.LION, dict(q=q, k=k, v=v, g=g)),
        ]
        for name, fwd, spec, ins in rows:
            call = (lambda: fwd().backward(do)) if bwd else fwd
            with torch.set_grad_enabled(bwd):
                call_us = _median_call(call, reps)
                runs = ["vkla_%s_run" % spec.name] + (["vkla_%s_backward_run" % spec.name]
                                                      if bwd else [])
                binding_us = _stubbed(runs, lambda: _median_call(call, reps))
            host = {n: _host(t.detach()) for n, t in ins.items()}
            gpu = _ops.forward(spec, name, host, {"o": _host(torch.empty_like(v))},
                               bench=(3, reps))
            gpu_us = statistics.median(gpu)
            if bwd:
                grads = {spec.grads[n]: _host(torch.empty_like(t)) for n, t in ins.items()}
                gpu = _ops.backward(spec, name, host, _host(do), None, grads, bench=(3, reps))
                gpu_us += statistics.median(gpu)
            print("%-24s %-6s %10.1f %10.1f %11.1f" % (name, label, call_us, gpu_us, binding_us))


if __name__ == "__main__":
    main()
