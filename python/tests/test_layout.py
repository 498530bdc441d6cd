"""The ctypes structs match the C compiler's layout of include/vkla.h field by field."""
import ctypes
import os
import subprocess

import pytest

from vkla import _lib


def _probe():
    path = os.environ.get("VKLA_LAYOUT_PROBE") or os.path.join(
        os.path.dirname(__file__), os.pardir, os.pardir, "build", "vkla_layout_probe")
    if not os.path.exists(path):
        pytest.skip("vkla_layout_probe not built (%s); build the tree with tools/build.sh" % path)
    return subprocess.run([path], check=True, capture_output=True, text=True).stdout


def test_struct_layout_matches_c():
    seen = set()
    for line in _probe().splitlines():
        struct, field, offset, size = line.split()
        cls = _lib.STRUCTS[struct]
        if field == "-":
            assert ctypes.sizeof(cls) == int(size), "sizeof(%s)" % struct
        else:
            desc = getattr(cls, field)
            assert (desc.offset, desc.size) == (int(offset), int(size)), "%s.%s" % (struct, field)
            seen.add((struct, field))
    # every field the Python side declares was checked
    for struct, cls in _lib.STRUCTS.items():
        for name, _ in cls._fields_:
            assert (struct, name) in seen, "%s.%s not probed" % (struct, name)
