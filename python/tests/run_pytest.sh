#!/bin/sh
# The ctest entry of the Python package: runs python/tests with Debian's /usr/bin/python3.
# Usage: run_pytest.sh SOURCE_DIR LIBVKLA LAYOUT_PROBE
# Exits 77 (ctest: skipped) with a message when numpy, torch or pytest is missing.
src=$1
missing=$(/usr/bin/python3 -c '
import importlib.util
print(" ".join(m for m in ("numpy", "torch", "pytest") if importlib.util.find_spec(m) is None))')
if [ -n "$missing" ]; then
    echo "python_pytest: skipped, /usr/bin/python3 lacks: $missing (tools/setup-deps.sh installs them)"
    exit 77
fi
export PYTHONPATH="$src/python${PYTHONPATH:+:$PYTHONPATH}" VKLA_LIBRARY="$2" VKLA_LAYOUT_PROBE="$3"
export PYTHONDONTWRITEBYTECODE=1 VKLA_VALIDATION=1
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$src/python/tests"
