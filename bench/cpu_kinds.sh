#!/usr/bin/env bash
# Times the README's quick start and test suite on this CPU as it is, or as a CPU without AVX-512 (AVX2
# only: most desktops and laptops), each in a fresh clone of the current commit.
#
#   bash bench/cpu_kinds.sh avx2 quickstart     # wall time, peak RSS and the quick start's own figures
#   bash bench/cpu_kinds.sh native suite        # the README's test command (python -m pytest)
#
# avx2: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 limit torch's and oneDNN's kernels to AVX2, so bf16
# matmuls are emulated as on such a CPU (on a 2-core EPYC with AVX-512-BF16: 2.0 against 195 GFLOP/s for
# bf16, 64.6 against 79.5 for float32; docs/benchmarks.md). bitsandbytes reads the CPU's flags itself and
# is not limited by them. Set FRESH_CACHE=1 to convert the embedded model again, as on a new machine.
set -euo pipefail
kind=${1:?native or avx2}; what=${2:?quickstart or suite}
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d)
git clone -q "$src" "$work/clone"
cd "$work/clone"
export PYTHONPATH="$work/clone"  # this clone's code, whatever an editable install points at
if [ "$kind" = avx2 ]; then export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2; fi
if [ "${FRESH_CACHE:-0}" = 1 ]; then export LIMA_LITE_CACHE="$work/cache"; fi
echo "commit $(git rev-parse --short HEAD), $kind, $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python -c "from lima_lite.precision import chosen_precision; print(chosen_precision().line('training and replies'))"
case "$what" in
  quickstart) /usr/bin/time -v python -m lima_lite.cli quickstart 2>&1 | tee "$work/out.txt" | grep -E "Elapsed|Maximum resident|replies ended|eval_loss|CPU |error" ;;
  suite) /usr/bin/time -v python -m pytest -q -p no:cacheprovider 2>&1 | tee "$work/out.txt" | grep -E "Elapsed|Maximum resident|passed|failed" ;;
  *) echo "unknown: $what" >&2; exit 2 ;;
esac
echo "full output: $work/out.txt"
