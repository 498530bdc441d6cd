#!/usr/bin/env bash
# vkla-bench --kernels (vkla_context_profile) end to end, validation on: for every op, form and
# pass the per-kernel breakdown exists and names the op's own kernels, the launches' median
# times add up to roughly the op's time in the same repetitions (between 20% and 150% of it:
# the rest is barriers and, on a loaded CPU device, the driver thread's scheduling; and the
# medians of the parts may add up to more than the median of the whole), and the
# launch sites' FLOP models add up to the op's model of docs/bench.md within 10% (exactly, to
# rounding, for every op but lion's backward, whose kernels share scan states between its three
# products). Usage: kernels_smoke.sh BUILD_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export VKLA_VALIDATION=1
common=(--T 192 --H 2 --K 32 --V 48 --dtype f32,bf16 --reps 6 --warmup 1 --no-roofline --kernels --quiet)
"$bin/vkla-bench" --op linear_attn,delta_rule,lion --pass fwd,bwd "${common[@]}" \
    --json "$tmp/k.jsonl" > "$tmp/k.txt"
grep -q "sum of launches" "$tmp/k.txt" || { echo "no breakdown in the table"; exit 1; }
python3 - "$tmp/k.jsonl" <<'PY'
import json, sys
want = {("linear_attn", "chunk", "fwd"), ("linear_attn", "recurrent", "fwd"),
        ("linear_attn", "chunk", "bwd"), ("delta_rule", "chunk", "fwd"),
        ("delta_rule", "recurrent", "fwd"), ("delta_rule", "chunk", "bwd"),
        ("lion", "chunk", "fwd"), ("lion", "attn", "fwd"), ("lion", "rnn", "fwd"),
        ("lion", "chunk", "bwd")}
seen, bad, ratios = set(), [], []
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["op"], r["form"], r["pass"])
    if r["status"] != "ok":
        bad.append("%s: %s" % (key, r.get("reason")))
        continue
    seen.add(key)
    ks = r.get("kernels") or []
    if not ks:
        bad.append("%s: no kernels" % (key,))
        continue
    for k in ks:
        if not k["name"].startswith(r["op"] + "/") or k["launches"] < 1 or k["time_us"] <= 0:
            bad.append("%s: bad kernel row %s" % (key, k))
    total = r["kernels_total_us"]
    s = sum(k["time_us"] for k in ks)
    ratios.append(s / total)
    if abs(s - r["kernels_sum_us"]) > 1e-3 * total or not 0.2 * total <= s <= 1.5 * total:
        bad.append("%s: launches sum to %.1f us, the op took %.1f us" % (key, s, total))
    f = sum(k["flops"] for k in ks)
    if abs(f / r["flops"] - 1) > 0.10:
        bad.append("%s: kernel FLOPs %.4g against the op model's %.4g" % (key, f, r["flops"]))
missing = want - seen
if missing:
    bad.append("no breakdown for %s" % sorted(missing))
if bad:
    print("\n".join(bad))
    sys.exit(1)
print("kernels smoke: %d cases ok (launches / op time: %.2f to %.2f)"
      % (len(seen), min(ratios), max(ratios)))
PY
