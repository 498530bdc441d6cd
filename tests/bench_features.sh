#!/usr/bin/env bash
# vkla-bench as the device-comparison tool: a tiny quick suite (every op of this build, every
# form and dtype, the decode step) with --check and the roofline probe, JSON lines with the
# contract's fields and the roofline fractions, a well-formed SVG plot, --plot from a saved run,
# --compare of two runs (ratios and geometric mean checked on known numbers), the decode suite,
# and the error paths. Usage: bench_features.sh BUILD_DIR
set -euo pipefail
bin=$1
b="$bin/vkla-bench"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "bench_features: $*" >&2; exit 1; }

have_py=0
if command -v python3 >/dev/null 2>&1; then have_py=1; fi

well_formed_svg() {
    if [ $have_py = 1 ]; then
        python3 - "$1" <<'EOF' || fail "$1 is not a well-formed SVG"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag
ns = {'s': 'http://www.w3.org/2000/svg'}
assert root.findall('.//s:polyline', ns), 'no data series'
assert root.findall('.//s:text', ns), 'no text (axes, legend)'
EOF
    elif command -v xmllint >/dev/null 2>&1; then
        xmllint --noout "$1" || fail "$1 is not well-formed XML"
    else
        grep -q '^<svg ' "$1" && tail -n 1 "$1" | grep -q '^</svg>$' || fail "$1: no <svg> element"
    fi
}

# 0. the roofline probe alone, under the validation layers
VKLA_VALIDATION=1 "$b" --roofline --json "$tmp/r.jsonl" > "$tmp/r.txt" 2> "$tmp/r.err" ||
    { cat "$tmp/r.err" >&2; fail "--roofline failed"; }
grep -q 'validation' "$tmp/r.err" && { cat "$tmp/r.err" >&2; fail "validation messages"; }
grep -q '^# roofline: f32 FMA .* GFLOP/s.* copy .* GB/s' "$tmp/r.txt" || fail "no roofline line"
grep -q '"record": "roofline"' "$tmp/r.jsonl" || fail "no roofline JSON record"

# 1. the quick suite with tiny overrides, the roofline probe, --check, JSON and SVG
"$b" --suite quick --T 16,48 --H 1 --K 16 --V 8 --reps 2 --warmup 1 --check \
    --quiet --json "$tmp/a.jsonl" --svg "$tmp/a.svg" > "$tmp/a.txt" 2> "$tmp/a.err" ||
    { cat "$tmp/a.err" >&2; fail "quick suite failed"; }
grep -q '^# device: ' "$tmp/a.txt" || fail "no device line"
grep -q '^# roofline: f32 FMA .* GFLOP/s.* copy .* GB/s' "$tmp/a.txt" || fail "no roofline line"
rows=$(grep -c -E '^(linear_attn|delta_rule|lion) ' "$tmp/a.txt")
test "$rows" -eq "$(wc -l < "$tmp/a.jsonl")" || fail "table rows ($rows) != JSON lines"
grep -q -E '^linear_attn +chunk +fwd +f32 +1 +48 .* PASS$' "$tmp/a.txt" || fail "no checked chunk row"
grep -q -E '^linear_attn +chunk +bwd +f32 +1 +48 .* PASS$' "$tmp/a.txt" ||
    { grep -E ' bwd ' "$tmp/a.txt" >&2; fail "no checked backward row"; }
grep -q -E '^linear_attn +recurrent +fwd +bf16 +1 +1 ' "$tmp/a.txt" || fail "no decode row"
! grep -q -E '^[a-z_]+ +[a-z]+ +bwd +[a-z0-9]+ +[0-9]+ +1 ' "$tmp/a.txt" || fail "a backward decode row"
if [ $have_py = 1 ]; then
    python3 - "$tmp/a.jsonl" <<'EOF' || fail "JSON lines check failed"
import json, sys
need = ("op form dtype B T H K V gate time_us_median time_us_min time_us_max tokens_per_s gflops "
        "gbs device_name vendor_id device_id driver_name driver_info api_version variant commit "
        "peak_gflops peak_gbs frac_flops frac_bw status check").split()
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in recs if r["status"] == "ok"]
assert ok, "no case ran"
for r in recs:
    missing = [k for k in need if k not in r]
    assert not missing, (r["op"], missing)
    assert r["status"] in ("ok", "unsupported"), (r["op"], r["form"], r.get("reason"))
for r in ok:
    assert r["check"] == "PASS", r
    assert r["time_us_min"] <= r["time_us_median"] <= r["time_us_max"], r
    assert r["peak_gflops"] > 0 and r["peak_gbs"] > 0, r
    assert abs(r["frac_flops"] - r["gflops"] / r["peak_gflops"]) <= 1e-3 * r["frac_flops"] + 1e-12
    assert abs(r["frac_bw"] - r["gbs"] / r["peak_gbs"]) <= 1e-3 * r["frac_bw"] + 1e-12
    if r["T"] == 1:
        assert r["h0"] is True and r["form"] == "recurrent" and r["pass"] == "fwd", r
forms = {(r["op"], r["form"], r["pass"], r["dtype"]) for r in ok}
for d in ("f32", "f16", "bf16"):
    for f, p in (("chunk", "fwd"), ("recurrent", "fwd"), ("chunk", "bwd")):
        assert ("linear_attn", f, p, d) in forms, (f, p, d)
assert not [r for r in recs if r["pass"] == "bwd" and r["form"] != "chunk"], "bwd of a non-chunk form"
EOF
fi
well_formed_svg "$tmp/a.svg"

# 2. --plot from the saved run
"$b" --plot "$tmp/a.jsonl" --svg "$tmp/b.svg" 2>/dev/null || fail "--plot failed"
well_formed_svg "$tmp/b.svg"

# 3. --compare: a run against itself, and two small files with known ratios
"$b" --compare "$tmp/a.jsonl" "$tmp/a.jsonl" > "$tmp/self.txt" || fail "--compare failed"
grep -q 'geomean B/A (time) over .*: 1.000 ' "$tmp/self.txt" || { cat "$tmp/self.txt"; fail "self compare"; }
row='"op": "linear_attn", "dtype": "f32", "B": 1, "H": 2, "K": 64, "V": 64, "gate": "g", "status": "ok"'
cat > "$tmp/x.jsonl" <<EOF
{$row, "form": "chunk", "T": 256, "time_us_median": 100.0, "device_name": "dev A"}
{$row, "form": "recurrent", "T": 256, "time_us_median": 200.0, "device_name": "dev A"}
{$row, "form": "chunk", "T": 1024, "time_us_median": 300.0, "device_name": "dev A"}
EOF
cat > "$tmp/y.jsonl" <<EOF
{$row, "form": "recurrent", "T": 256, "time_us_median": 800.0, "device_name": "dev B"}

{$row, "form": "chunk", "T": 256, "time_us_median": 50.0, "device_name": "dev B"}
{$row, "form": "chunk", "T": 256, "status": "error", "time_us_median": null}
EOF
"$b" --compare "$tmp/x.jsonl" "$tmp/y.jsonl" > "$tmp/xy.txt" || fail "--compare x y failed"
grep -q -E '^linear_attn +chunk +fwd +f32 +1 +256 .* 100\.0 +50\.0 +0\.500$' "$tmp/xy.txt" ||
    { cat "$tmp/xy.txt"; fail "ratio 0.5 missing"; }
grep -q -E '^linear_attn +recurrent +fwd +f32 +1 +256 .* 4\.000$' "$tmp/xy.txt" || fail "ratio 4 missing"
grep -q 'geomean B/A (time) over 2 cases: 1.414 ' "$tmp/xy.txt" || { cat "$tmp/xy.txt"; fail "geomean"; }
grep -q '1 case only in A, 0 only in B' "$tmp/xy.txt" || fail "unmatched count"
grep -q '# A: .*dev A' "$tmp/xy.txt" || fail "run A not described"

# 4. the decode suite, tiny: T = 1 with h0/ht, checked
"$b" --suite decode --B 1,3 --H 1 --K 16 --V 16 --dtype f32 --reps 3 --warmup 1 --check \
    --no-roofline --quiet --json "$tmp/d.jsonl" > "$tmp/d.txt" 2>/dev/null || fail "decode suite failed"
grep -q -E '^linear_attn +recurrent +fwd +f32 +3 +1 .* PASS$' "$tmp/d.txt" || { cat "$tmp/d.txt"; fail "decode row"; }
! grep -q -E ' (chunk|attn|rnn) ' "$tmp/d.txt" || fail "decode suite ran a non-recurrent form"
grep -q '"frac_flops": null' "$tmp/d.jsonl" || fail "--no-roofline should leave frac_flops null"

# 5. the time budget lowers the repetitions of a long case (to at least 3)
"$b" --op linear_attn --form recurrent --T 256 --H 1 --K 16 --V 16 --reps 50 --budget 0.000001 \
    --no-roofline --quiet --json "$tmp/t.jsonl" > /dev/null 2>&1 || fail "--budget run failed"
grep -q '"reps": 3, "warmup": 1,' "$tmp/t.jsonl" || { cat "$tmp/t.jsonl"; fail "--budget not applied"; }

# 6. errors: exit 2 with a one-line message
for args in "--suite nope" "--compare $tmp/x.jsonl" "--plot $tmp/x.jsonl" "--op nope" "--pass up" \
            "--compare $tmp/x.jsonl $tmp/none.jsonl"; do
    # shellcheck disable=SC2086
    if "$b" $args > /dev/null 2> "$tmp/err"; then fail "accepted: $args"; fi
    test "$(wc -l < "$tmp/err")" -eq 1 || { cat "$tmp/err"; fail "not one line: $args"; }
done
echo '{"op": "linear_attn", "form": ' > "$tmp/bad.jsonl"
set +e
"$b" --compare "$tmp/x.jsonl" "$tmp/bad.jsonl" > /dev/null 2> "$tmp/err"
rc=$?
set -e
test $rc -eq 2 || fail "malformed JSON: exit $rc"
grep -q 'bad.jsonl:1:' "$tmp/err" || { cat "$tmp/err"; fail "malformed JSON: no file:line"; }
echo "bench features: ok"
