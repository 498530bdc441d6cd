"""ctypes mirror of include/vkla.h: the library loader, the C structs and the function table.

The structs below are laid out exactly as in the header; python/tests/test_layout.py checks
every size and field offset against the C compiler (the vkla_layout_probe program).
"""
import ctypes
import ctypes.util
import os

c_int, c_uint32, c_uint64, c_float, c_double = (ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64,
                                                ctypes.c_float, ctypes.c_double)
c_void_p, c_char_p, c_size_t = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t

MAX_DIMS = 4

# vkla_dtype
DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_I32 = 0, 1, 2, 3
DTYPE_SIZES = {DTYPE_F32: 4, DTYPE_F16: 2, DTYPE_BF16: 2, DTYPE_I32: 4}

# vkla_form
FORM_DEFAULT, FORM_CHUNK, FORM_RECURRENT, FORM_ATTN, FORM_RNN = 0, 1, 2, 3, 4

SUCCESS = 0
ERROR_UNSUPPORTED = -5


class Tensor(ctypes.Structure):
    """vkla_tensor."""
    _fields_ = [("buffer", c_void_p), ("offset", c_uint64), ("dtype", c_int), ("ndim", c_uint32),
                ("shape", c_uint64 * MAX_DIMS), ("strides", c_uint64 * MAX_DIMS)]


MESSAGE_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class ContextDesc(ctypes.Structure):
    """vkla_context_desc."""
    _fields_ = [("device", c_char_p), ("validation", c_int), ("sync_validation", c_int),
                ("message_fn", MESSAGE_FN), ("message_user", c_void_p),
                ("pipeline_cache_data", c_void_p), ("pipeline_cache_size", c_size_t)]


class DeviceInfo(ctypes.Structure):
    """vkla_device_info."""
    _fields_ = [("name", ctypes.c_char * 256), ("vendor_id", c_uint32), ("device_id", c_uint32),
                ("device_type", c_uint32), ("driver_name", ctypes.c_char * 256),
                ("driver_info", ctypes.c_char * 256), ("driver_version", c_uint32),
                ("api_version", c_uint32), ("subgroup_size", c_uint32),
                ("subgroup_min_size", c_uint32), ("subgroup_max_size", c_uint32),
                ("subgroup_arithmetic", c_int), ("subgroup_clustered", c_int),
                ("max_shared_memory", c_uint32), ("max_workgroup_invocations", c_uint32),
                ("max_storage_buffer_range", c_uint64),
                ("min_storage_buffer_offset_alignment", c_uint64), ("fp16_storage", c_int),
                ("fp16_arithmetic", c_int), ("bf16_arithmetic", c_int),
                ("int8_arithmetic", c_int), ("cooperative_matrix", c_int),
                ("push_descriptor", c_int), ("timestamp_period_ns", c_double),
                ("timestamp_valid_bits", c_uint32), ("device_local_bytes", c_uint64),
                ("variant", ctypes.c_char * 128)]


def _tensors(*names):
    return [(n, Tensor) for n in names]


_TAIL = [("cu_seqlens", ctypes.POINTER(ctypes.c_int32)), ("num_seqs", c_uint32),
         ("scale", c_float)]
_SCRATCH = [("scratch", c_void_p), ("scratch_offset", c_uint64)]


class LinearAttnArgs(ctypes.Structure):
    """vkla_linear_attn_args."""
    _fields_ = ([("form", c_int)] + _tensors("q", "k", "v", "o", "g", "g_gamma", "gk",
                                             "h0", "ht", "z0", "zt")
                + _TAIL + [("normalize", c_int), ("eps", c_float), ("chunk_size", c_uint32)]
                + _SCRATCH)


class LionArgs(ctypes.Structure):
    """vkla_lion_args."""
    _fields_ = ([("form", c_int)] + _tensors("q", "k", "v", "o", "g", "g_gamma") + _TAIL
                + [("normalize", c_int), ("eps", c_float), ("chunk_size", c_uint32)] + _SCRATCH)


class DeltaRuleArgs(ctypes.Structure):
    """vkla_delta_rule_args."""
    _fields_ = ([("form", c_int)] + _tensors("q", "k", "v", "o", "beta", "g", "h0", "ht") + _TAIL
                + [("l2norm", c_int), ("chunk_size", c_uint32)] + _SCRATCH)


class LinearAttnBackwardArgs(ctypes.Structure):
    """vkla_linear_attn_backward_args."""
    _fields_ = ([("fwd", LinearAttnArgs)]
                + _tensors("dout", "dht", "dq", "dk", "dv", "dg", "dg_gamma", "dgk", "dh0")
                + _SCRATCH)


class LionBackwardArgs(ctypes.Structure):
    """vkla_lion_backward_args."""
    _fields_ = ([("fwd", LionArgs)] + _tensors("dout", "dq", "dk", "dv", "dg", "dg_gamma")
                + _SCRATCH)


class DeltaRuleBackwardArgs(ctypes.Structure):
    """vkla_delta_rule_backward_args."""
    _fields_ = ([("fwd", DeltaRuleArgs)]
                + _tensors("dout", "dht", "dq", "dk", "dv", "dbeta", "dg", "dh0") + _SCRATCH)


STRUCTS = {"vkla_tensor": Tensor, "vkla_context_desc": ContextDesc,
           "vkla_device_info": DeviceInfo, "vkla_linear_attn_args": LinearAttnArgs,
           "vkla_lion_args": LionArgs, "vkla_delta_rule_args": DeltaRuleArgs,
           "vkla_linear_attn_backward_args": LinearAttnBackwardArgs,
           "vkla_lion_backward_args": LionBackwardArgs,
           "vkla_delta_rule_backward_args": DeltaRuleBackwardArgs}


def _candidates():
    env = os.environ.get("VKLA_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.startswith("libvkla.so"):
            yield os.path.join(here, name)
    # source tree: python/vkla/ -> <root>/build/libvkla.so
    root = os.path.dirname(os.path.dirname(here))
    yield os.path.join(root, "build", "libvkla.so")
    found = ctypes.util.find_library("vkla")
    if found:
        yield found
    yield "libvkla.so.0"


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("vkla: cannot load libvkla.so; set VKLA_LIBRARY or build the library "
                      "(tools/build.sh). Tried: " + "; ".join(tried))


lib, path = _load()


def _proto(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


P = ctypes.POINTER
_proto("vkla_result_string", c_char_p, c_int)
_proto("vkla_last_error", c_char_p, c_void_p)
_proto("vkla_convert", c_int, c_void_p, c_int, c_void_p, c_int, c_size_t)
_proto("vkla_context_create", c_int, P(ContextDesc), P(c_void_p))
_proto("vkla_context_destroy", None, c_void_p)
_proto("vkla_context_device_info", c_int, c_void_p, P(DeviceInfo))
_proto("vkla_validation_message_count", c_uint32, c_void_p)
_proto("vkla_context_set_scratch_limit", c_int, c_void_p, c_uint64)
_proto("vkla_context_scratch_limit", c_uint64, c_void_p)
_proto("vkla_buffer_create", c_int, c_void_p, c_uint64, P(c_void_p))
_proto("vkla_buffer_destroy", None, c_void_p, c_void_p)
_proto("vkla_buffer_upload", c_int, c_void_p, c_void_p, c_uint64, c_void_p, c_uint64)
_proto("vkla_buffer_download", c_int, c_void_p, c_void_p, c_uint64, c_void_p, c_uint64)
for _op, _args in (("linear_attn", LinearAttnArgs), ("lion", LionArgs),
                   ("delta_rule", DeltaRuleArgs),
                   ("linear_attn_backward", LinearAttnBackwardArgs),
                   ("lion_backward", LionBackwardArgs),
                   ("delta_rule_backward", DeltaRuleBackwardArgs)):
    _proto("vkla_%s_run" % _op, c_int, c_void_p, P(_args))
    _proto("vkla_%s_bench" % _op, c_int, c_void_p, P(_args), c_uint32, c_uint32, P(c_double))
