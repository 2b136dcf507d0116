#!/usr/bin/env bash
# One command for a GPU machine: install what it lacks, run the GPU tests and the
# GPU benchmark on JAX and PyTorch, and write every result to one folder.
#
#   benchmarks/gpu_wheels.sh        # first, where PyPI can be reached: fills .whl/
#   benchmarks/gpu_run.sh           # then, on the GPU machine (no network needed)
#
# Results go to $GPU_RESULTS, else $OUT if set, else gpu-results/: run.log (everything
# printed), environment.txt, pytest-<name>.log and junit-<name>.xml, gpu_bench-<backend>.json
# and its log, auto_table.json (the package's table with GPU rows from this run's
# measurements, for review before it replaces luong_attention/auto_table.json), and
# summary.txt. GPU_PACK=<file.tar.gz> also packs that folder into one archive when the
# run ends, however it ends (a device machine that returns few files). Exit status: 0
# when every step passed; 3 when a backend sees no GPU (nothing is run); 1 when a step
# failed.
#
# Order: the tests of every backend at once (pytest-xdist workers where installed),
# then the benchmark one backend at a time (timings want the GPU alone), then, where
# GPU_TESTS is not "full", the rest of the suite in the time left before GPU_DEADLINE_S.
#
# The machine is expected to have Python with CUDA builds of torch and JAX, numpy,
# pytest and hypothesis. Keras and its dependencies come from the wheels in .whl/
# (only those not installed already), into $GPU_SITE on PYTHONPATH.
# TensorFlow is not run: its GPU build (several hundred MB with its CUDA libraries)
# cannot travel with the repository (64 MiB in all) to a machine without network.
# Where a TensorFlow GPU build is installed, GPU_BACKENDS="jax torch tensorflow".
#
# Settings (environment): PYTHON (python3; PYTHON_JAX / PYTHON_TORCH / PYTHON_TENSORFLOW
# per backend), GPU_BACKENDS ("jax torch"), GPU_TESTS (core: the GPU tests and the
# numerics modules; gpu: tests/test_gpu.py only; full: the whole suite but
# GPU_TEST_IGNORE's modules), GPU_TEST_TIMEOUT_S (240), GPU_TEST_WORKERS (8),
# GPU_REST (1: run the rest of the suite after the benchmark; 0: don't),
# GPU_BENCH_BUDGET_S (80 per backend: no case starts later; GPU_BENCH_BUDGET_S_JAX /
# _TORCH per backend), GPU_BENCH_ARGS (extra arguments of benchmarks/gpu.py, or
# GPU_BENCH_ARGS_JAX / _TORCH per backend),
# GPU_DEADLINE_S (no limit: every step is cut to end by then), GPU_SITE
# (/tmp/luong-gpu-site).
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

out="${GPU_RESULTS:-${OUT:-gpu-results}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec > >(tee -a "$out/run.log") 2>&1

python="${PYTHON:-python3}"
backends="${GPU_BACKENDS:-jax torch}"
tests="${GPU_TESTS:-core}"
test_timeout="${GPU_TEST_TIMEOUT_S:-240}"
bench_budget="${GPU_BENCH_BUDGET_S:-80}"
workers="${GPU_TEST_WORKERS:-8}"
site="${GPU_SITE:-/tmp/luong-gpu-site}"
failed=()

say() { printf '\n== %s\n' "$*"; }
python_for() {
    local var="PYTHON_${1^^}"
    echo "${!var:-$python}"
}
# Seconds a step may take: its own limit, or less, so that the whole run ends
# within GPU_DEADLINE_S of its start (with 15 s left to pack the results).
began=$SECONDS
deadline="${GPU_DEADLINE_S:-100000}"
time_left() {
    local left=$((deadline - (SECONDS - began) - 15))
    ((left < 1)) && left=1
    echo $((left < $1 ? left : $1))
}
# Where $OUT takes few files (a device machine's), everything is also packed into
# one archive when the run ends, however it ends.
pack() {
    [[ -n "${GPU_PACK:-}" ]] || return 0
    tar -czf "$GPU_PACK" -C "$(dirname "$out")" "$(basename "$out")" 2>/dev/null
}
trap pack EXIT

say "luong_attention GPU run: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, backends: $backends, results: $out"
echo "TensorFlow: not run unless GPU_BACKENDS names it (its GPU build cannot travel: 64 MiB limit)."

# --- install what is missing, from .whl/ ---------------------------------------
say "installing missing wheels from .whl/"
mkdir -p "$site"
export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}"
for py in $(for b in $backends; do python_for "$b"; done | sort -u); do
    missing=()
    for wheel in "${GPU_WHEELS:-.whl}"/*.whl; do
        [[ -e "$wheel" ]] || continue
        name="$(basename "$wheel" | cut -d- -f1)"
        if ! "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" \
            2>/dev/null; then
            missing+=("$wheel")
        fi
    done
    if ((${#missing[@]})); then
        echo "$py: installing ${missing[*]##*/}"
        "$py" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
            --target "$site" "${missing[@]}" || failed+=("install")
    fi
done
for b in $backends; do
    if ! KERAS_BACKEND="$b" "$(python_for "$b")" -c "import keras" 2>/dev/null; then
        echo "error: $(python_for "$b") cannot import keras with KERAS_BACKEND=$b (is $b" \
            "installed? are Keras's wheels in .whl/? benchmarks/gpu_wheels.sh fetches them" \
            "where PyPI can be reached)" >&2
        exit 1
    fi
done

# --- every backend must see a GPU before anything runs --------------------------
say "checking that each backend sees a GPU"
declare -A probe=(
    [jax]="import jax; print(sum(d.platform == 'gpu' for d in jax.devices()))"
    [torch]="import torch; print(torch.cuda.device_count() if torch.version.cuda else 0)"
    [tensorflow]="import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
)
no_gpu=()
for b in $backends; do
    if [[ -z "${probe[$b]:-}" ]]; then
        echo "error: unknown backend '$b' in GPU_BACKENDS (expected jax, torch, tensorflow)" >&2
        exit 1
    fi
    count="$("$(python_for "$b")" -c "${probe[$b]}" 2>/dev/null | tail -n 1)"
    echo "$b: ${count:-not installed} GPU(s)"
    [[ "$count" =~ ^[1-9][0-9]*$ ]] || no_gpu+=("$b")
done
if ((${#no_gpu[@]})); then
    echo "error: no GPU seen by ${no_gpu[*]} (not installed, a CPU build, or no GPU" \
        "visible); nothing was run" >&2
    echo "no GPU seen by ${no_gpu[*]}; nothing was run" >"$out/summary.txt"
    exit 3
fi

{
    date -u '+%Y-%m-%d %H:%M:%S UTC'
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    for b in $backends; do
        py="$(python_for "$b")"
        echo "$b: $("$py" --version 2>&1);" "$(KERAS_BACKEND="$b" "$py" -c \
            "import keras, $b; print('keras', keras.__version__, '$b', $b.__version__)" 2>&1)"
    done
} >"$out/environment.txt"
cat "$out/environment.txt"

# --- tests ----------------------------------------------------------------------
# Every backend's test session runs at once (they share the GPU; JAX takes memory
# as it needs it), each with pytest-xdist workers where xdist is installed.
case "$tests" in
    gpu) test_args=(tests/test_gpu.py) ;;
    core)
        test_args=(tests/test_gpu.py tests/test_dispatch_gpu.py tests/test_auto_table.py
            tests/test_implementations.py tests/test_gradients.py tests/test_precision.py
            tests/test_layer.py)
        ;;
    full) test_args=() ;;
    *)
        echo "error: GPU_TESTS=$tests; expected gpu, core or full" >&2
        exit 1
        ;;
esac
# Modules that need what a GPU image may lack: TensorFlow (JAX's SavedModel export),
# several processes on one GPU, network ports. GPU_TEST_IGNORE replaces the list.
ignore="${GPU_TEST_IGNORE-tests/test_export.py tests/test_multiprocess.py tests/test_resume.py}"
run_tests() {  # backend, log name, pytest arguments...
    local b="$1" name="$2" py extra=() limit
    shift 2
    py="$(python_for "$b")"
    "$py" -c "import matplotlib" 2>/dev/null || extra+=(--ignore=tests/test_examples.py)
    if [[ "$tests" == full ]]; then
        for module in $ignore; do extra+=("--ignore=$module"); done
    fi
    if "$py" -c "import xdist" 2>/dev/null; then
        extra+=(-n "$workers")
    fi
    limit="$(time_left "$test_timeout")"
    KERAS_BACKEND="$b" XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest \
        TF_CPP_MIN_LOG_LEVEL=3 timeout "$limit" "$py" -m pytest --check-gpu \
        -p no:cacheprovider -q -rfE --junitxml="$out/junit-$name.xml" "${extra[@]}" "$@" \
        >"$out/pytest-$name.log" 2>&1
    local status=$?
    {
        echo "-- $name:"
        tail -n 12 "$out/pytest-$name.log"
        ((status == 124)) && echo "tests: $name stopped after ${limit}s"
    }
    return "$status"
}
declare -A test_pids=()
say "tests ($tests), every backend at once, at most ${test_timeout}s"
for b in $backends; do
    run_tests "$b" "$b" "${test_args[@]}" &
    test_pids[$b]=$!
done
for b in $backends; do
    wait "${test_pids[$b]}" || failed+=("tests-$b")
done

# --- benchmark ------------------------------------------------------------------
# One backend at a time: timings want the GPU to themselves.
for b in $backends; do
    budget_var="GPU_BENCH_BUDGET_S_${b^^}"
    budget="${!budget_var:-$bench_budget}"
    args_var="GPU_BENCH_ARGS_${b^^}"
    bench_args="${!args_var-${GPU_BENCH_ARGS:-}}"
    limit="$(time_left "$((budget + 120))")"
    say "benchmark: $b (no case starts after ${budget}s; stopped after ${limit}s)"
    # shellcheck disable=SC2086  # bench_args is a list of arguments
    KERAS_BACKEND="$b" XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 TF_CPP_MIN_LOG_LEVEL=3 \
        timeout "$limit" "$(python_for "$b")" benchmarks/gpu.py \
        --out "$out" --require-gpu --budget-s "$budget" $bench_args \
        >"$out/gpu_bench-$b.log" 2>&1
    status=$?
    tail -n 2 "$out/gpu_bench-$b.log"
    ((status == 0)) || failed+=("benchmark-$b")
done

say "auto table with this run's GPU rows"
cp luong_attention/auto_table.json "$out/auto_table.json"
results=("$out"/gpu_bench-*.json)
if [[ -e "${results[0]}" ]]; then
    python3 benchmarks/gpu_rankings.py --results "${results[@]}" --table "$out/auto_table.json" ||
        failed+=("rankings")
fi

# --- the rest of the suite, in the time left ----------------------------------------
if [[ "$tests" != full && "${GPU_REST:-1}" == 1 ]] && (($(time_left 100000) > 60)); then
    say "the rest of the suite (GPU_TESTS=full minus the modules above), in the time left"
    rest=()
    for module in tests/test_*.py tests/keras_suite; do
        [[ " ${test_args[*]} $ignore " == *" $module "* ]] || rest+=("$module")
    done
    declare -A rest_pids=()
    for b in $backends; do
        test_timeout=100000 run_tests "$b" "$b-rest" "${rest[@]}" &
        rest_pids[$b]=$!
    done
    for b in $backends; do
        wait "${rest_pids[$b]}" || failed+=("tests-$b-rest")
    done
fi

summarize() {
    for name in $(cd "$out" && ls junit-*.xml 2>/dev/null | sed 's/^junit-//; s/\.xml$//'); do
        python3 -c "
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot()
s = s if s.tag == 'testsuite' else s[0]
print(sys.argv[2], 'tests:', {k: s.get(k) for k in ('tests', 'failures', 'errors', 'skipped')})
" "$out/junit-$name.xml" "$name"
    done
    echo "failed steps: ${failed[*]:-none}"
}
summarize >"$out/summary.txt"
say "summary"
cat "$out/summary.txt"
((${#failed[@]} == 0))
