"""The three ops and their backward passes over HostTensors: what each takes, what it returns,
and how its options map onto the C args structs. Both front ends (numpy, torch) call these."""
import ctypes
import math
import numbers

import numpy as np

from . import _lib
from ._core import default_context

FORMS = {None: _lib.FORM_DEFAULT, "chunk": _lib.FORM_CHUNK, "recurrent": _lib.FORM_RECURRENT,
         "attn": _lib.FORM_ATTN, "rnn": _lib.FORM_RNN}


class OpSpec:
    def __init__(self, name, args, bargs, inputs, grads, options, causal, forms):
        self.name, self.args, self.bargs = name, args, bargs
        self.inputs = inputs      # optional inputs after q, k, v (in the C struct's names)
        self.grads = grads        # input name -> gradient field
        self.options = options    # scalar option fields of the args struct
        self.causal = causal
        self.forms = forms


LINEAR_ATTN = OpSpec("linear_attn", _lib.LinearAttnArgs, _lib.LinearAttnBackwardArgs,
                     ("g", "g_gamma", "gk", "h0", "z0"),
                     {"q": "dq", "k": "dk", "v": "dv", "g": "dg", "g_gamma": "dg_gamma",
                      "gk": "dgk", "h0": "dh0"},
                     ("scale", "normalize", "eps", "chunk_size"), True, ("chunk", "recurrent"))
DELTA_RULE = OpSpec("delta_rule", _lib.DeltaRuleArgs, _lib.DeltaRuleBackwardArgs,
                    ("beta", "g", "h0"),
                    {"q": "dq", "k": "dk", "v": "dv", "beta": "dbeta", "g": "dg", "h0": "dh0"},
                    ("scale", "l2norm", "chunk_size"), True, ("chunk", "recurrent"))
LION = OpSpec("lion", _lib.LionArgs, _lib.LionBackwardArgs, ("g", "g_gamma"),
              {"q": "dq", "k": "dk", "v": "dv", "g": "dg", "g_gamma": "dg_gamma"},
              ("scale", "normalize", "eps", "chunk_size"), False, ("chunk", "attn", "rnn"))


def check_seqlens(cu_seqlens, fn):
    """cu_seqlens (any 1-D integer array-like of N+1 offsets) as a contiguous int32 array, or
    None. Ordering and bounds are checked by the library (VKLA_ERROR_BAD_SEQLENS)."""
    if cu_seqlens is None:
        return None
    a = np.asarray(cu_seqlens)
    if a.ndim != 1 or a.shape[0] < 2:
        raise ValueError("%s: cu_seqlens must be 1-D with N+1 >= 2 offsets (got shape %s)"
                         % (fn, a.shape))
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError("%s: cu_seqlens must hold integers (got %s)" % (fn, a.dtype))
    if a.min() < 0 or a.max() > np.iinfo(np.int32).max:
        raise ValueError("%s: cu_seqlens offsets must lie in [0, 2^31) (got %d .. %d)"
                         % (fn, a.min(), a.max()))
    return np.ascontiguousarray(a, dtype=np.int32)


def _options(spec, args, fn, form, seqlens, opts):
    if form not in FORMS or (form is not None and form not in spec.forms):
        raise ValueError("%s: form must be one of %s (got %r)" % (fn, ", ".join(spec.forms), form))
    args.form = FORMS[form]
    for name, value in opts.items():
        if name not in spec.options:
            raise TypeError("%s: unknown option %r" % (fn, name))
        if name in ("normalize", "l2norm"):
            setattr(args, name, 1 if value else 0)
        elif name == "chunk_size":
            if value is not None and (not isinstance(value, numbers.Integral) or value < 0):
                raise ValueError("%s: chunk_size must be 16, 32 or 64 (got %r)" % (fn, value))
            args.chunk_size = 0 if value is None else int(value)
        else:  # scale, eps: None = the library's default
            if value is not None:
                if not isinstance(value, numbers.Real) or not math.isfinite(value) or value == 0:
                    raise ValueError("%s: %s must be a finite non-zero number or None (got %r)"
                                     % (fn, name, value))
            setattr(args, name, 0.0 if value is None else float(value))
    if seqlens is not None:
        args.cu_seqlens = seqlens.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        args.num_seqs = seqlens.shape[0] - 1


def dims(fn, q, v, seqlens):
    """(B, T, H, K, HV, V, N) from q [B,T,H,K] and v [B,T,HV,V]."""
    for name, t in (("q", q), ("v", v)):
        if len(t.shape) != 4:
            raise ValueError("%s: %s must be 4-D [B, T, H, D] (got shape %s)"
                             % (fn, name, list(t.shape)))
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if seqlens is not None and B != 1:
        raise ValueError("%s: cu_seqlens needs B = 1 (got B = %d)" % (fn, B))
    N = seqlens.shape[0] - 1 if seqlens is not None else B
    return B, T, H, K, HV, V, N


def output_shapes(spec, q, v, seqlens, fn, normalize=False):
    """Shapes of o, ht and zt (None where the op has no such output)."""
    B, T, H, K, HV, V, N = dims(fn, q, v, seqlens)
    ht = (N, HV, K, V) if spec.causal else None
    zt = (N, H, K) if normalize and spec is LINEAR_ATTN else None
    return (B, T, HV, V), ht, zt


def forward(spec, fn, tensors, outputs, form=None, seqlens=None, ctx=None, bench=None, **opts):
    """Runs the op. tensors: q, k, v and the optional inputs given (HostTensors by C name);
    outputs: o and, optionally, ht / zt (HostTensors the results are written into)."""
    args = spec.args()
    _options(spec, args, fn, form, seqlens, opts)
    inputs = [(n, t) for n, t in tensors.items() if t is not None]
    outs = [(n, t) for n, t in outputs.items() if t is not None]
    ctx = ctx or default_context()
    return ctx.execute(spec.name, args, inputs, outs, bench)


def backward(spec, fn, tensors, dout, dht, grads, form=None, seqlens=None, ctx=None, bench=None,
             **opts):
    """Runs the op's backward pass. grads: gradient field -> HostTensor for each gradient
    wanted (a subset of those of the inputs given)."""
    args = spec.bargs()
    _options(spec, args.fwd, fn, form, seqlens, opts)
    inputs = [("fwd." + n, t) for n, t in tensors.items() if t is not None]
    inputs.append(("dout", dout))
    if dht is not None:
        inputs.append(("dht", dht))
    outs = [(n, t) for n, t in grads.items() if t is not None]
    ctx = ctx or default_context()
    return ctx.execute(spec.name + "_backward", args, inputs, outs, bench)
