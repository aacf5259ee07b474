#!/usr/bin/env bash
# A long fuzz run: the property tests of test/fuzz*.test.ts with more inputs and a seed of your choice.
#   npm run fuzz                         # CI's count and seed
#   npm run fuzz -- --runs 100000        # 100,000 inputs per property (FUZZ_RUNS)
#   npm run fuzz -- --seed 42 --runs 5000 # another seed (FUZZ_SEED); a failure prints the seed and path that replay it
# Any other argument goes to vitest (a file, -t <name>). No test timeout: a long run takes as long as it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) export FUZZ_RUNS="$2"; shift 2 ;;
    --runs=*) export FUZZ_RUNS="${1#--runs=}"; shift ;;
    --seed) export FUZZ_SEED="$2"; shift 2 ;;
    --seed=*) export FUZZ_SEED="${1#--seed=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -gt 0 ] || args=(test/fuzz)
echo "fuzz: ${FUZZ_RUNS:-CI count} runs per property, seed ${FUZZ_SEED:-20261206 (fixed)}" >&2
exec npx vitest run --testTimeout=0 --hookTimeout=0 "${args[@]}"
