#!/usr/bin/env bash
# Downloads, on a machine with PyPI access, the wheels that benchmarks/gpu_run.sh
# installs on a GPU machine without network: Keras and its pure-Python and small
# binary dependencies (the GPU machine has CUDA builds of torch and JAX, numpy,
# pytest and hypothesis, but no Keras). Versions are those the suite is tested
# with (the JAX test venv's `pip freeze`). The folder travels with the
# repository to the GPU machine, so it must stay well under its 64 MiB limit.
#
#   benchmarks/gpu_wheels.sh [folder]          (default: .whl)
#   GPU_PYTHON_VERSION=3.12 benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-.whl}"
python_version="${GPU_PYTHON_VERSION:-3.12}"
limit_mib=32

requirements=(
    keras==3.15.1
    absl-py==2.5.1
    namex==0.1.0
    h5py==3.16.0
    optree==0.20.0
    ml_dtypes==0.6.0
    packaging==26.4
    rich==15.0.0
    markdown-it-py==4.3.0
    mdurl==0.1.2
    Pygments==2.21.0
    typing_extensions==4.16.0
)

mkdir -p "$dest"
for requirement in "${requirements[@]}"; do
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --python-version "$python_version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$dest" "$requirement"
done

total_kib=$(du -sk "$dest" | cut -f1)
echo "$(ls "$dest"/*.whl | wc -l) wheels in $dest: $((total_kib / 1024)) MiB"
if ((total_kib > limit_mib * 1024)); then
    echo "error: $dest holds more than $limit_mib MiB; the GPU machine takes 64 MiB in all" >&2
    exit 1
fi
