#!/usr/bin/env bash
# One prepared run on a GPU machine: the CUDA tests, then MFU and the machine-limit fraction of
# the base encoder and T5-base (bf16, local spec, one GPU), each config's figures to stdout and,
# where $OUT is set, to files under it.
#
# On a machine with the project installed:   bash benchmarks/gpu_check.sh
# On an image without internet: first, where pip works, `bash benchmarks/gpu_wheels.sh`, then
# take .whl/ along and run this there; it installs the wheels into /tmp/site.
#
# SEQPT_GPU_CHECK_CONFIGS (default: the base configs) and SEQPT_GPU_CHECK_STEPS (default 20)
# choose what mfu.py measures; SEQPT_GPU_CHECK_MICRO_BATCH (default 64, as the README's earlier
# H200 figures) is the micro-batch, and the global batch is one micro-batch (one GPU, no
# gradient accumulation).
#
# Last, unless SEQPT_GPU_CHECK_PREPROCESS=0: preprocessing with 1 to 16 workers on this
# machine's cores (the development machine has 2), for how many busy workers the one reading
# process keeps up with ("reader feeds"); it runs after the GPU figures are written and does
# not change the exit status.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
CONFIGS="${SEQPT_GPU_CHECK_CONFIGS:-examples/configs/base_encoder.yaml examples/configs/base_t5.yaml}"
STEPS="${SEQPT_GPU_CHECK_STEPS:-20}"
MICRO_BATCH="${SEQPT_GPU_CHECK_MICRO_BATCH:-64}"
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

status=0
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
        || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, megatron.core; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'megatron-core', megatron.core.__version__)"
} 2>&1 | tee "$OUT/environment.txt"

"$PYTHON" -m pytest tests/test_gpu.py -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu_tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

for config in $CONFIGS; do
    name="$(basename "$config" .yaml)"
    "$PYTHON" benchmarks/mfu.py --config "$config" --steps "$STEPS" \
        parallel.tensor_model_parallel_size=1 parallel.pipeline_model_parallel_size=1 \
        "train.micro_batch_size=$MICRO_BATCH" "train.global_batch_size=$MICRO_BATCH" \
        2>&1 | tee "$OUT/mfu_$name.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
if [ "${SEQPT_GPU_CHECK_PREPROCESS:-1}" = 1 ]; then
    timeout 300 "$PYTHON" benchmarks/preprocess_throughput.py --mb 100 --memory-mb 0 \
        --workers 1 4 8 16 --repeat 1 2>&1 | tee "$OUT/preprocess_scaling.txt"
fi
echo "figures in $OUT"
exit $status
