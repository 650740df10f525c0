#!/usr/bin/env bash
# Wheels of the packages gpu_check.sh needs and a GPU image without internet lacks, into .whl/
# (ignored by git). The image holds CUDA torch, transformers, sentencepiece and the rest of the
# scientific stack for CPython 3.12; megatron-core, nltk (with defusedxml) and seqeval are not
# in it. seqeval publishes only a source archive: it is built here (pure Python).
#     bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]   # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION="${1:-3.12}"
mkdir -p .whl
rm -f .whl/*.whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
    platforms+=(--platform "$tag")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp "${platforms[@]}" -d .whl \
    megatron-core==0.16.1 nltk==3.10.4 defusedxml==0.7.1
python3 -m pip wheel --quiet --no-deps -w .whl seqeval==1.2.2
ls -1 .whl
