#!/bin/sh
# Prints the line that makes `import vkla` work for /usr/bin/python3 from this source tree
# (the package finds build/libvkla.so next to it). Usage, after tools/build.sh:
#   eval "$(tools/python-env.sh)"
root=$(cd "$(dirname "$0")/.." && pwd)
echo "export PYTHONPATH=\"$root/python\${PYTHONPATH:+:\$PYTHONPATH}\""
