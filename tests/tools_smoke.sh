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
# the backward pass: the gradient of every input given, checked against the float64 reference
"$bin/vkla-make-input" linear_attn --T 130 --H 2 --K 32 --V 24 --gate gk --h0 --grads \
    --seqlens 1,64,0,65 --out "$tmp/gin" 2>/dev/null
for dt in f32 bf16; do
    "$bin/vkla-run" linear_attn --backward --dtype $dt --in "$tmp/gin" --out "$tmp/gout" --check --quiet
done
for f in o ht dq dk dv dgk dh0; do test -s "$tmp/gout/$f.npy" || { echo "no $f.npy"; exit 1; }; done
"$bin/vkla-make-input" delta_rule --T 100 --H 2 --K 16 --V 16 --gate g --h0 --grads --out "$tmp/dgin" 2>/dev/null
"$bin/vkla-run" delta_rule --backward --l2norm --in "$tmp/dgin" --out "$tmp/dgout" --check --quiet
for f in o ht dq dk dv dbeta dg dh0; do test -s "$tmp/dgout/$f.npy" || { echo "no $f.npy"; exit 1; }; done
"$bin/vkla-make-input" lion --T 90 --H 2 --K 16 --V 8 --gate g --grads --out "$tmp/lgin" 2>/dev/null
"$bin/vkla-run" lion --backward --normalize --in "$tmp/lgin" --out "$tmp/lgout" --check --quiet
for f in o dq dk dv dg; do test -s "$tmp/lgout/$f.npy" || { echo "no $f.npy"; exit 1; }; done
# its error contract: do.npy missing or of the wrong shape names the file, writes nothing
cp -r "$tmp/gin" "$tmp/gbad"
rm "$tmp/gbad/do.npy"
if "$bin/vkla-run" linear_attn --backward --in "$tmp/gbad" --out "$tmp/gbadout" 2>"$tmp/err"; then
    echo "--backward without do.npy was accepted"; exit 1
fi
test "$(wc -l < "$tmp/err")" -eq 1 && grep -q "do.npy" "$tmp/err" || { cat "$tmp/err"; exit 1; }
test ! -e "$tmp/gbadout" || { echo "output written on error"; exit 1; }
cp "$tmp/gin/v.npy" "$tmp/gbad/dht.npy"
cp "$tmp/gin/do.npy" "$tmp/gbad/do.npy"
if "$bin/vkla-run" linear_attn --backward --in "$tmp/gbad" --out "$tmp/gbadout" 2>"$tmp/err"; then
    echo "a dht.npy of the wrong shape was accepted"; exit 1
fi
test "$(wc -l < "$tmp/err")" -eq 1 && grep -q "dht.npy" "$tmp/err" || { cat "$tmp/err"; exit 1; }
test ! -e "$tmp/gbadout" || { echo "output written on error"; exit 1; }
# without --backward the gradient files are not looked at
"$bin/vkla-run" linear_attn --in "$tmp/gbad" --out "$tmp/fwdonly" --quiet
test ! -e "$tmp/fwdonly/dq.npy"
# bench with JSON lines
"$bin/vkla-bench" --op linear_attn --form chunk,recurrent --T 128 --reps 2 --warmup 1 --check \
    --json "$tmp/b.jsonl" >/dev/null 2>&1
test "$(wc -l < "$tmp/b.jsonl")" -eq 2
for f in op form dtype time_us_median tokens_per_s gflops gbs device_name driver_info variant commit; do
    grep -q "\"$f\"" "$tmp/b.jsonl" || { echo "bench JSON lacks $f"; exit 1; }
done
echo "tools smoke: ok"
