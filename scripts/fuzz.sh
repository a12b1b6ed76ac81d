#!/usr/bin/env bash
# fuzz.sh [seconds] [target...]: builds the `fuzz` CMake preset (clang,
# libFuzzer, ASan + UBSan) and runs each fuzz target for `seconds` (default
# 60) one after another, on one core. Each target's new corpus entries go
# to build-fuzz/fuzz-out/corpus/<target> (the checked-in seeds in
# tests/fuzz/corpus/<target> are read, never written); a failing input is
# written to build-fuzz/fuzz-out/artifacts/<target>/. Exit status: 0 when
# every target ran its time without a finding, 1 otherwise.
#
# To keep a finding as a regression test (replayed by `ctest -L fuzz`):
#   cp build-fuzz/fuzz-out/artifacts/<t>/crash-... tests/fuzz/corpus/<t>/regress-<what>
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
cmake --preset fuzz >/dev/null || exit 1
cmake --build --preset fuzz || exit 1

bin=build-fuzz/tests/fuzz
out=build-fuzz/fuzz-out
export OPENBLAS_NUM_THREADS=1 MFS_FUZZ_DATA=$PWD/tests/fuzz/data
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in "$bin"/fuzz_*; do
    [ -x "$f" ] && targets+=("${f##*/fuzz_}")
  done
fi

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  dict=()
  case $t in config | safetensors | st_index | model_load | tokenizer_load | grammar) dict=(-dict=tests/fuzz/json.dict) ;; esac
  echo "== fuzz_$t: $secs s"
  if ! "$bin/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" "${dict[@]}" \
      "$out/corpus/$t" "tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1; then
    failed+=("$t")
    echo "   FAILED: see $out/$t.log and $out/artifacts/$t/"
    grep -m1 -E "ERROR|runtime error|property failed" "$out/$t.log" | sed 's/^/   /'
  fi
  grep -E "^stat::number_of_executed_units|^Done" "$out/$t.log" | sed 's/^/   /'
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no findings"
