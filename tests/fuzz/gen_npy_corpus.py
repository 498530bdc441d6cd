#!/usr/bin/env python3
"""Writes the seed corpus of the .npy reader's fuzz target (tests/fuzz/fuzz_npy.c).

Usage: /usr/bin/python3 tests/fuzz/gen_npy_corpus.py [OUT_DIR]
       (default OUT_DIR: tests/fuzz/corpus/npy next to this file)

ok_*.npy are valid files the reader accepts: every dtype it reads (<f4 <f8 <f2 <i4 <i8),
ranks 0 to 4 and 8, empty arrays, one over 4 KiB, format versions 1.0, 2.0 and 3.0, header
variants numpy and other writers produce. bad_*.npy are malformed: bad magic, version, header
or data size, or what the reader does not support (numpy reads some of those). The files are
written with the standard library alone (the .npy layout is simple); when numpy is importable,
every ok_ file but ok_lax_ (a list for the shape, which numpy refuses) is also loaded with
numpy.load and its data compared.
"""
import os
import struct
import sys

MAGIC = b"\x93NUMPY"
FORMATS = {"<f4": "f", "<f8": "d", "<f2": "e", "<i4": "i", "<i8": "q"}


def header_dict(descr, shape, fortran=False):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    return "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, "True" if fortran else "False", dims)


def npy(text, version=1, align=64, data=b""):
    """A file with the header dict text, padded as numpy pads it (to a multiple of align)."""
    body = text.encode("utf-8" if version == 3 else "latin1")
    lenbytes = 2 if version == 1 else 4
    total = 6 + 2 + lenbytes + len(body) + 1
    body += b" " * ((align - total % align) % align) + b"\n"
    fmt = "<H" if version == 1 else "<I"
    return MAGIC + bytes([version, 0]) + struct.pack(fmt, len(body)) + body + data


def values(descr, count):
    """count values of the dtype, with some special ones (negative, zero, inf, nan)."""
    code = FORMATS[descr]
    if code in "iq":
        vals = [((i * 7919) % 201) - 100 for i in range(count)]
        if count > 2:
            vals[1] = -(2 ** 31) if code == "i" else -(2 ** 63)
            vals[2] = 2 ** 31 - 1 if code == "i" else 2 ** 63 - 1
    else:
        vals = [((i * 37) % 17 - 8) / 4.0 for i in range(count)]
        specials = [float("inf"), float("-inf"), float("nan"), -0.0, 65504.0, 6e-8]
        for j, s in enumerate(specials):
            if 3 + j < count:
                vals[3 + j] = s
    return struct.pack("<%d%s" % (count, code), *vals)


def array(descr, shape, version=1, **kw):
    count = 1
    for d in shape:
        count *= d
    return npy(header_dict(descr, shape), version, data=values(descr, count), **kw)


def files():
    out = {}
    shapes = {0: (), 1: (5,), 2: (2, 3), 3: (2, 1, 3), 4: (1, 3, 2, 2)}
    for descr in FORMATS:
        name = descr[1:]
        for rank, shape in shapes.items():
            out["ok_%s_%dd_v1.npy" % (name, rank)] = array(descr, shape)
        out["ok_%s_2d_v2.npy" % name] = array(descr, (3, 2), version=2)
        out["ok_%s_1d_v3.npy" % name] = array(descr, (4,), version=3)
        out["ok_%s_empty.npy" % name] = array(descr, (0, 3))
    out["ok_f4_8d.npy"] = array("<f4", (1, 2, 1, 2, 1, 1, 2, 1))
    out["ok_f4_q_shape.npy"] = array("<f4", (1, 4, 2, 8))            # a vkla-run q.npy
    out["ok_f4_8k.npy"] = array("<f4", (2, 1024))   # larger than the reader's first buffer
    out["ok_i8_cu_seqlens.npy"] = npy(header_dict("<i8", (3,)),
                                      data=struct.pack("<3q", 0, 3, 8))
    out["ok_i4_cu_seqlens.npy"] = npy(header_dict("<i4", (3,)),
                                      data=struct.pack("<3i", 0, 3, 8))
    out["ok_f8_integral.npy"] = npy(header_dict("<f8", (3,)),
                                    data=struct.pack("<3d", 0.0, 3.0, -8.0))
    out["ok_align16.npy"] = array("<f4", (2, 2), align=16)         # older numpy padding
    out["ok_key_order.npy"] = npy("{'shape': (2,), 'fortran_order': False, 'descr': '<f8'}",
                                  data=values("<f8", 2))
    out["ok_dquote_py2_long.npy"] = npy('{"descr": "<i4", "fortran_order": False, '
                                        '"shape": (2L, 1L)}', data=values("<i4", 2))
    out["ok_lax_list_shape.npy"] = npy(header_dict("<f4", ()).replace("()", "[2, 2]"),
                                   data=values("<f4", 4))

    good = array("<f4", (2, 3))
    out["bad_empty.npy"] = b""
    out["bad_magic.npy"] = b"\x93NUMPZ" + good[6:]
    out["bad_magic_short.npy"] = good[:4]
    out["bad_truncated_prefix.npy"] = good[:7]
    out["bad_truncated_len.npy"] = good[:9]
    out["bad_truncated_header.npy"] = good[:40]
    out["bad_truncated_data.npy"] = good[:-1]
    out["bad_trailing_data.npy"] = good + b"\0"
    out["bad_version_4.npy"] = good[:6] + b"\x04\x00" + good[8:]
    out["bad_version_1_1.npy"] = good[:6] + b"\x01\x01" + good[8:]
    out["bad_header_too_large_v2.npy"] = MAGIC + b"\x02\x00" + struct.pack("<I", 1 << 20)
    out["bad_not_dict.npy"] = npy("['descr', '<f4']")
    out["bad_missing_shape.npy"] = npy("{'descr': '<f4', 'fortran_order': False}")
    out["bad_repeated_key.npy"] = npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': "
                                      "False, 'shape': ()}", data=values("<f4", 1))
    out["bad_unknown_key.npy"] = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), "
                                     "'extra': 1}", data=values("<f4", 1))
    out["bad_big_endian.npy"] = npy(header_dict(">f4", (2,)), data=b"\0" * 8)
    out["bad_dtype_u1.npy"] = npy(header_dict("|u1", (2,)), data=b"\0" * 2)
    out["bad_structured.npy"] = npy("{'descr': [('a', '<f4')], 'fortran_order': False, "
                                    "'shape': (1,), }", data=b"\0" * 4)
    out["bad_fortran.npy"] = npy(header_dict("<f4", (2, 2), fortran=True),
                                 data=values("<f4", 4))
    out["bad_negative_dim.npy"] = npy(header_dict("<f4", (-1, 2)))
    out["bad_dim_overflow.npy"] = npy(header_dict("<f8", (2 ** 62, 4)))
    out["bad_dim_too_large.npy"] = npy(header_dict("<f4", (10 ** 20,)))
    out["bad_9d.npy"] = npy(header_dict("<f4", (1,) * 9), data=values("<f4", 1))
    out["bad_text_after_dict.npy"] = npy(header_dict("<f4", (1,)) + " x",
                                         data=values("<f4", 1))
    out["bad_shape_huge_data_small.npy"] = npy(header_dict("<f4", (1 << 30,)), data=b"\0" * 16)
    return out


def check_with_numpy(out_dir, names):
    """numpy.load must read every ok_ file (but ok_lax_, which only this reader takes) with
    the data bytes that follow the header."""
    try:
        import numpy as np
    except ImportError:
        return
    for name in names:
        if not name.startswith("ok_") or name.startswith("ok_lax_"):
            continue
        path = os.path.join(out_dir, name)
        a = np.load(path, allow_pickle=False)
        with open(path, "rb") as f:
            raw = f.read()
        assert a.dtype.str in FORMATS, (name, a.dtype)
        assert a.nbytes == 0 or raw[-a.nbytes:] == a.tobytes(), name


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "npy")
    os.makedirs(out_dir, exist_ok=True)
    out = files()
    for name, data in sorted(out.items()):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    check_with_numpy(out_dir, sorted(out))
    print("%d files in %s" % (len(out), out_dir))


if __name__ == "__main__":
    main()
