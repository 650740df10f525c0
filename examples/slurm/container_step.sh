#!/usr/bin/env bash
# Shared body of the sbatch scripts in this folder: one srun step that runs `seqpt pretrain` in
# the NVIDIA container on every GPU of the allocation, then requeues the job if it stopped on
# the pre-emption signal. Expects CONFIG and RUN_DIR; IMAGE, MOUNTS and EXTRA_ARGS are optional.
#
# Each task reads its rank from SLURM_PROCID / SLURM_LOCALID / SLURM_STEP_NUM_TASKS and the
# rendezvous host from SLURM_JOB_NODELIST (megatron_seqpt/runtime/launch_env.py); no torchrun.
set -euo pipefail

: "${CONFIG:?set CONFIG to a YAML config, e.g. examples/configs/base_t5.yaml}"
: "${RUN_DIR:?set RUN_DIR to a directory on a shared file system}"
IMAGE=${IMAGE:-megatron-seqpt:latest}          # built from this repository's Dockerfile
MOUNTS=${MOUNTS:-/data:/data,${SLURM_SUBMIT_DIR}:/workspace/megatron_seqpt}
mkdir -p "${RUN_DIR}"

export NCCL_ASYNC_ERROR_HANDLING=1 CUDA_DEVICE_MAX_CONNECTIONS=1 OMP_NUM_THREADS=8

# --kill-on-bad-exit: one failed rank ends the step instead of leaving the others waiting.
srun --kill-on-bad-exit=1 --ntasks-per-node="${SLURM_GPUS_ON_NODE:-8}" \
     --container-image="${IMAGE}" --container-mounts="${MOUNTS}" \
     --container-workdir=/workspace/megatron_seqpt \
     seqpt pretrain --config "${CONFIG}" --run-dir "${RUN_DIR}" ${EXTRA_ARGS:-}

# SIGUSR1 (sent by --signal before the time limit) or SIGTERM (pre-emption) makes every rank
# save a checkpoint and exit 0 with status "preempted" in result.json: queue the job again, and
# the next run resumes from RUN_DIR/checkpoints/latest.
if grep -q '"status": "preempted"' "${RUN_DIR}/result.json" 2>/dev/null; then
    echo "run stopped for pre-emption; requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
fi
