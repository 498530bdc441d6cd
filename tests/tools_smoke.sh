#!/usr/bin/env bash
# The command-line tools end to end: vkla-info, vkla-make-input, vkla-run --check on every
# form and dtype, the SPEC's error contract (one line, non-zero exit, nothing written), and a
# short vkla-bench with --json whose lines must parse.
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export VKLA_VALIDATION=1
"$bin/vkla-info" >/dev/null
"$bin/vkla-make-input" linear_attn --T 130 --H 2 --K 32 --V 24 --gate gk --h0 --seqlens 1,64,0,65 --out "$tmp/in" 2>/dev/null
for form in chunk recurrent; do
    for dt in f32 f16 bf16; do
        "$bin/vkla-run" linear_attn --form $form --dtype $dt --in "$tmp/in" --out "$tmp/out" --check --quiet
        test -s "$tmp/out/o.npy" && test -s "$tmp/out/ht.npy"
    done
done
# error contract
cp -r "$tmp/in" "$tmp/bad"
printf 'garbage' > "$tmp/bad/k.npy"
if "$bin/vkla-run" linear_attn --in "$tmp/bad" --out "$tmp/badout" 2>"$tmp/err"; then
    echo "malformed k.npy was accepted"; exit 1
fi
test "$(wc -l < "$tmp/err")" -eq 1 || { echo "expected one error line:"; cat "$tmp/err"; exit 1; }
grep -q "k.npy" "$tmp/err" || { echo "error does not name k.npy:"; cat "$tmp/err"; exit 1; }
test ! -e "$tmp/badout/o.npy" || { echo "output written on error"; exit 1; }
if "$bin/vkla-run" linear_attn --l2norm --in "$tmp/in" --out "$tmp/badout" 2>"$tmp/err"; then
    echo "--l2norm accepted for linear_attn"; exit 1
fi
test "$(wc -l < "$tmp/err")" -eq 1
# bench with JSON lines
"$bin/vkla-bench" --op linear_attn --form chunk,recurrent --T 128 --reps 2 --warmup 1 --check \
    --json "$tmp/b.jsonl" >/dev/null 2>&1
test "$(wc -l < "$tmp/b.jsonl")" -eq 2
for f in op form dtype time_us_median tokens_per_s gflops gbs device_name driver_info variant commit; do
    grep -q "\"$f\"" "$tmp/b.jsonl" || { echo "bench JSON lacks $f"; exit 1; }
done
echo "tools smoke: ok"
