#!/usr/bin/env bash
# Installs the Debian packages vkla needs to build, test and run (only those missing).
# Usage: tools/setup-deps.sh        (as root, or with sudo available)
set -euo pipefail
pkgs=(cmake make gcc pkg-config libc6-dev
      libvulkan-dev libvulkan-volk-dev glslang-tools spirv-tools
      mesa-vulkan-drivers vulkan-validationlayers libcmocka-dev libpng-dev
      python3-numpy python3-torch python3-pytest)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "vkla: installing ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "vkla: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
