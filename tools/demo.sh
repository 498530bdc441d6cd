#!/usr/bin/env bash
# The main job: installs what is missing, builds, lists the devices, then runs causal linear
# attention on a demo input on the best device (lavapipe when there is no GPU), checks it
# against the float64 reference, and benchmarks the chunk and recurrent forms.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup-deps.sh"
"$root/tools/build.sh"
bin=${VKLA_BUILD_DIR:-$root/build}
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
"$bin/vkla-info"
echo
"$bin/vkla-make-input" linear_attn --B 2 --T 1000 --H 4 --K 64 --V 64 --gate g --h0 --out "$demo/in"
for form in chunk recurrent; do
    "$bin/vkla-run" linear_attn --form "$form" --in "$demo/in" --out "$demo/out-$form" --check
done
echo
"$bin/vkla-bench" --op linear_attn --form recurrent,chunk --dtype f32,f16 --B 1 --T 4096 --H 4 \
    --K 64 --V 64 --gate g --reps 5 --warmup 1 "$@"
