#!/bin/sh
# ctest driver: run_fuzz.sh FUZZER CORPUS_DIR DICT WORK_DIR SECONDS [WHY_UNAVAILABLE]
# Runs one libFuzzer job for SECONDS on a scratch corpus in WORK_DIR seeded with CORPUS_DIR
# (which it never writes). Exit 0 when nothing was found, 1 on any crash, leak, sanitizer
# report or timeout (the input is saved in WORK_DIR/artifacts/), 77 (skip) when FUZZER is
# "none", i.e. clang or libFuzzer is unavailable (WHY_UNAVAILABLE says which).
fuzzer=$1 corpus=$2 dict=$3 work=$4 secs=$5 why=$6
if [ "$fuzzer" = none ]; then
    echo "fuzz_npy_short: skipped: ${why:-fuzzer not built}"
    exit 77
fi
rm -rf "$work/scratch" "$work/artifacts"
mkdir -p "$work/scratch" "$work/artifacts" || exit 1
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
    -timeout_exitcode=1 -print_final_stats=1 -dict="$dict" \
    -artifact_prefix="$work/artifacts/" "$work/scratch" "$corpus"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "fuzz_npy_short: the fuzzer failed (exit $rc); inputs in $work/artifacts/:"
    ls -l "$work/artifacts/"
    exit 1
fi
exit 0
