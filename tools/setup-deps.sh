#!/usr/bin/env bash
# Installs the Debian packages vkla needs to build, test and run (only those missing).
# Usage: tools/setup-deps.sh        (as root, or with sudo available)
set -euo pipefail
pkgs=(cmake make gcc pkg-config libc6-dev
      libvulkan-dev libvulkan-volk-dev glslang-tools spirv-tools
      mesa-vulkan-drivers vulkan-validationlayers libcmocka-dev libpng-dev
      clang python3-numpy python3-torch python3-pytest python3-tqdm python3-matplotlib)
# clang's sanitizer and libFuzzer runtimes (for tests/fuzz) come in libclang-rt-<N>-dev, N
# the major version of the clang-<N> the clang package depends on (14 on Debian 12); found
# with apt-cache once the package lists are there.
rt_pkg() {
    local n
    n=$(apt-cache depends clang 2>/dev/null | sed -n 's/^ *Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -n1)
    [ -n "$n" ] && echo "libclang-rt-$n-dev"
}
installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
missing=()
for p in "${pkgs[@]}"; do
    installed "$p" || missing+=("$p")
done
rt=$(rt_pkg || true)
if [ -n "$rt" ] && ! installed "$rt"; then
    missing+=("$rt")
fi
if [ ${#missing[@]} -eq 0 ] && [ -n "$rt" ]; then
    exit 0
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "vkla: need root or sudo to install: ${missing[*]:-$rt}" >&2; exit 1; }
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
if [ -z "$rt" ]; then
    rt=$(rt_pkg || true)
    if [ -n "$rt" ] && ! installed "$rt"; then
        missing+=("$rt")
    fi
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "vkla: installing ${missing[*]}" >&2
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
