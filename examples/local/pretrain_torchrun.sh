#!/usr/bin/env bash
# One machine, all its GPUs (or N CPU processes), with torchrun:
#   bash examples/local/pretrain_torchrun.sh examples/configs/tiny_t5.yaml runs/tiny_t5 [key=value ...]
#   NPROC=2 bash examples/local/pretrain_torchrun.sh examples/configs/tiny_encoder.yaml runs/dp2
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG.yaml RUN_DIR [section.key=value ...]}
RUN_DIR=${2:?usage: $0 CONFIG.yaml RUN_DIR [section.key=value ...]}
shift 2
if [ -z "${NPROC:-}" ]; then
    NPROC=$(nvidia-smi -L 2>/dev/null | wc -l)
    [ "${NPROC}" -gt 0 ] || NPROC=1
fi
exec torchrun --standalone --nproc-per-node="${NPROC}" -m megatron_seqpt.cli pretrain \
    --config "${CONFIG}" --run-dir "${RUN_DIR}" "$@"
