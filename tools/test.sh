#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole test suite (ctest)
# on the best Vulkan device (lavapipe when there is no GPU), validation layers on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup-deps.sh"
"$root/tools/build.sh"
cd "${VKLA_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j"$(nproc)" "$@"
