"""Contexts, the per-context buffer cache, and the generic path of one op call.

An op call lays its host tensors out in one device buffer (inputs, then outputs, each at a
256-byte aligned offset), uploads the inputs, runs the op on the context's queue and downloads
the outputs straight into the caller's memory. The buffer comes from a per-context cache keyed
by its size, so repeated shapes allocate nothing.
"""
import atexit
import collections
import ctypes
import os
import threading

from . import _lib

_ALIGN = 256
_CACHE_ENTRIES = 16            # buffers a context keeps for reuse ...
_CACHE_BYTES = 1 << 30         # ... and their total size (the buffer in use may exceed it)


class VklaError(RuntimeError):
    """A vkla call failed: `code` is the vkla_result, `message` the library's explanation."""

    def __init__(self, code, message):
        self.code = code
        self.code_name = _lib.lib.vkla_result_string(code).decode(errors="replace")
        self.message = message
        super().__init__("%s: %s" % (self.code_name.split(":")[0], message))


class HostTensor:
    """A block of host memory handed to an op: address, shape and vkla dtype, and optionally
    strides (in elements; None = contiguous) of a dense layout that is a permutation of the
    dimensions (the block is then uploaded whole and the op reads it through the strides).
    `keep` holds the object owning the memory for as long as the call needs it."""
    __slots__ = ("ptr", "shape", "dtype", "keep", "strides")

    def __init__(self, ptr, shape, dtype, keep, strides=None):
        self.ptr, self.shape, self.dtype, self.keep = ptr, tuple(int(s) for s in shape), dtype, keep
        self.strides = None if strides is None else tuple(int(s) for s in strides)

    @property
    def nbytes(self):
        n = _lib.DTYPE_SIZES[self.dtype]
        for s in self.shape:
            n *= s
        return n


def _check(ctx_handle, r, what):
    if r != _lib.SUCCESS:
        msg = _lib.lib.vkla_last_error(ctx_handle) if ctx_handle else b""
        raise VklaError(r, (msg or b"").decode(errors="replace") or what)


class Context:
    """A vkla context on one device (`device`: None = best, honouring VKLA_DEVICE; else an
    index "1" or a substring of the device name). Owns the buffers of its cache; close() (or
    leaving a `with` block) frees everything."""

    def __init__(self, device=None, validation=False):
        self._handle = None
        self._lock = threading.RLock()
        self._cache = collections.OrderedDict()
        self._messages = []
        self.validation_messages = []

        def on_message(user, severity, text):
            t = text.decode(errors="replace") if text else ""
            if severity == 3:
                self.validation_messages.append(t)
            else:
                self._messages.append(t)

        self._message_fn = _lib.MESSAGE_FN(on_message)
        desc = _lib.ContextDesc()
        if device is not None:
            device = str(device).encode()
        desc.device = device
        desc.validation = 1 if validation else 0
        desc.message_fn = self._message_fn
        handle = ctypes.c_void_p()
        r = _lib.lib.vkla_context_create(ctypes.byref(desc), ctypes.byref(handle))
        if r != _lib.SUCCESS:
            raise VklaError(r, self._messages[-1] if self._messages else "vkla_context_create")
        self._handle = handle.value
        info = _lib.DeviceInfo()
        _check(self._handle, _lib.lib.vkla_context_device_info(self._handle, ctypes.byref(info)),
               "vkla_context_device_info")
        self.info = {name: (getattr(info, name).decode(errors="replace")
                            if isinstance(getattr(info, name), bytes) else getattr(info, name))
                     for name, _ in _lib.DeviceInfo._fields_}

    @property
    def device_name(self):
        return self.info["name"]

    @property
    def variant(self):
        return self.info["variant"]

    @property
    def closed(self):
        return self._handle is None

    @property
    def scratch_limit(self):
        """Scratch bound in bytes of calls that can run as pieces of T (a call whose scratch
        would pass it runs as pieces; docs/long-sequences.md). Default 1 GiB or
        VKLA_MAX_SCRATCH; set None or 0 to restore it, at least 4096 otherwise."""
        if self._handle is None:
            raise ValueError("vkla: the context is closed")
        return int(_lib.lib.vkla_context_scratch_limit(self._handle))

    @scratch_limit.setter
    def scratch_limit(self, nbytes):
        nbytes = 0 if nbytes is None else int(nbytes)
        if nbytes < 0:
            raise ValueError("scratch_limit: %d bytes is negative" % nbytes)
        if self._handle is None:
            raise ValueError("vkla: the context is closed")
        _check(self._handle, _lib.lib.vkla_context_set_scratch_limit(self._handle, nbytes),
               "scratch_limit")

    @property
    def cached_buffers(self):
        """Number of device buffers the context holds for reuse."""
        return len(self._cache)

    def __repr__(self):
        return "vkla.Context(%r, variant=%r%s)" % (self.info.get("name") if hasattr(self, "info")
                                                   else None, getattr(self, "info", {}).get(
                                                       "variant"), ", closed" if self.closed
                                                   else "")

    def close(self):
        """Frees the cached buffers and the context. Safe to call twice."""
        with self._lock:
            if self._handle is None:
                return
            for buf in self._cache.values():
                _lib.lib.vkla_buffer_destroy(self._handle, buf)
            self._cache.clear()
            _lib.lib.vkla_context_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _buffer(self, size):
        buf = self._cache.pop(size, None)
        if buf is None:
            while self._cache and (len(self._cache) >= _CACHE_ENTRIES or
                                   sum(self._cache) + size > _CACHE_BYTES):
                _, old = self._cache.popitem(last=False)  # least recently used
                _lib.lib.vkla_buffer_destroy(self._handle, old)
            out = ctypes.c_void_p()
            _check(self._handle, _lib.lib.vkla_buffer_create(self._handle, size,
                                                             ctypes.byref(out)),
                   "vkla_buffer_create")
            buf = out.value
        self._cache[size] = buf
        return buf

    def execute(self, fn_name, args, inputs, outputs, bench=None):
        """Runs vkla_<fn_name>_run (or _bench with bench=(warmup, reps), returning the times in
        microseconds) on `args`. `inputs` and `outputs` are lists of (field path, HostTensor);
        a field path names a vkla_tensor inside args ("q", "fwd.q"). The caller keeps alive
        whatever else args points to (cu_seqlens)."""
        with self._lock:
            if self._handle is None:
                raise ValueError("vkla: the context is closed")
            offsets, size = [], 0
            for _, t in inputs + outputs:
                offsets.append(size)
                size += (t.nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
            buf = self._buffer(max(size, _ALIGN))
            for (path, t), off in zip(inputs + outputs, offsets):
                owner = args
                *head, last = path.split(".")
                for part in head:
                    owner = getattr(owner, part)
                view = getattr(owner, last)
                view.buffer, view.offset, view.dtype, view.ndim = buf, off, t.dtype, len(t.shape)
                for i in range(_lib.MAX_DIMS):
                    view.shape[i] = t.shape[i] if i < len(t.shape) else 0
                    view.strides[i] = t.strides[i] if t.strides and i < len(t.shape) else 0
            for (_, t), off in zip(inputs, offsets):
                if t.nbytes:
                    _check(self._handle, _lib.lib.vkla_buffer_upload(self._handle, buf, off, t.ptr,
                                                                     t.nbytes),
                           "vkla_buffer_upload")
            if bench is not None:
                times = (ctypes.c_double * bench[1])()
                fn = getattr(_lib.lib, "vkla_%s_bench" % fn_name)
                _check(self._handle, fn(self._handle, ctypes.byref(args), bench[0], bench[1],
                                        times), fn_name)
                return list(times)
            fn = getattr(_lib.lib, "vkla_%s_run" % fn_name)
            _check(self._handle, fn(self._handle, ctypes.byref(args)), fn_name)
            for (_, t), off in zip(outputs, offsets[len(inputs):]):
                if t.nbytes:
                    _check(self._handle, _lib.lib.vkla_buffer_download(self._handle, buf, off,
                                                                       t.ptr, t.nbytes),
                           "vkla_buffer_download")
            return None


_default = None
_default_lock = threading.Lock()


def default_context():
    """The process's context, made on first use on the best device (VKLA_DEVICE selects
    another; VKLA_VALIDATION=1 turns the validation layers on)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Context(validation=os.environ.get("VKLA_VALIDATION", "") == "1")
        return _default


def set_default_context(ctx):
    """Makes `ctx` the context the functions use when none is given; returns the old one."""
    global _default
    if ctx is not None and not isinstance(ctx, Context):
        raise TypeError("vkla.set_default_context: expected a vkla.Context, got %r" % type(ctx))
    with _default_lock:
        old, _default = _default, ctx
        return old


@atexit.register
def _close_default():
    global _default
    if _default is not None:
        _default.close()
        _default = None
