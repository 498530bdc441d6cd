#!/usr/bin/env bash
# The main job: installs what is missing, builds, lists the devices, runs causal linear
# attention on a demo input on the best device (lavapipe when there is no GPU) and checks it
# against the float64 reference (forward and backward), then runs vkla-bench's quick suite
# there: every op x form x dtype, forward and backward, each checked against the reference and
# timed, as a fraction of the device's own
# measured peak (roofline). The table goes to the terminal; JSON lines and an SVG plot to
# ${VKLA_BENCH_OUT:-build}/bench-quick.{jsonl,svg}. Extra arguments go to vkla-bench
# (e.g. --device 1, --reps 10).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup-deps.sh"
"$root/tools/build.sh"
bin=${VKLA_BUILD_DIR:-$root/build}
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
"$bin/vkla-info"
echo
"$bin/vkla-make-input" linear_attn --B 2 --T 1000 --H 4 --K 64 --V 64 --gate g --h0 --grads \
    --out "$demo/in"
for form in chunk recurrent; do
    "$bin/vkla-run" linear_attn --form "$form" --in "$demo/in" --out "$demo/out-$form" --check
done
# the backward pass: every gradient against the float64 reference
"$bin/vkla-run" linear_attn --backward --in "$demo/in" --out "$demo/out-bwd" --check
echo
out=${VKLA_BENCH_OUT:-$bin}
mkdir -p "$out"
"$bin/vkla-bench" --suite quick --check --json "$out/bench-quick.jsonl" --svg "$out/bench-quick.svg" "$@"
echo "results: $out/bench-quick.jsonl (JSON lines), $out/bench-quick.svg (plot)"
