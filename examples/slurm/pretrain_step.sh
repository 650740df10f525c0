#!/usr/bin/env bash
# Shared body of the pre-training sbatch scripts in this folder: one srun step that runs
# `seqpt pretrain` on every task of the allocation (in a container when IMAGE is set, with the
# pyxis/enroot flags), then requeues the job if it stopped on the pre-emption signal.
# Expects CONFIG and RUN_DIR; IMAGE, MOUNTS and EXTRA_ARGS are optional.
#
# Each task reads its rank from SLURM_PROCID / SLURM_LOCALID / SLURM_STEP_NUM_TASKS and the
# rendezvous host from SLURM_JOB_NODELIST (megatron_seqpt/runtime/launch_env.py); no torchrun.
set -euo pipefail

: "${CONFIG:?set CONFIG to a YAML config, e.g. examples/configs/base_t5.yaml}"
: "${RUN_DIR:?set RUN_DIR to a directory on a shared file system}"
IMAGE=${IMAGE:-}
MOUNTS=${MOUNTS:-/data:/data,${SLURM_SUBMIT_DIR}:/workspace/megatron_seqpt}
mkdir -p "${RUN_DIR}"

# One thread per allocated CPU of a task, unless the caller chose.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
export NCCL_ASYNC_ERROR_HANDLING=1 CUDA_DEVICE_MAX_CONNECTIONS=1

container=()
if [ -n "${IMAGE}" ]; then
    container=(--container-image="${IMAGE}" --container-mounts="${MOUNTS}"
               --container-workdir=/workspace/megatron_seqpt)
fi

# --kill-on-bad-exit: one failed rank ends the step instead of leaving the others waiting.
# The tasks are the allocation's (--ntasks or --ntasks-per-node of the sbatch script).
srun --kill-on-bad-exit=1 "${container[@]}" \
     seqpt pretrain --config "${CONFIG}" --run-dir "${RUN_DIR}" ${EXTRA_ARGS:-}

# SIGUSR1 (sent by --signal before the time limit) or SIGTERM (pre-emption) makes every rank
# save a checkpoint and exit 0 with status "preempted" in result.json: queue the job again, and
# the next run resumes from RUN_DIR/checkpoints/latest.
if grep -q '"status": "preempted"' "${RUN_DIR}/result.json" 2>/dev/null; then
    echo "run stopped for pre-emption; requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
fi
