#!/usr/bin/env bash
# Submit every stage of `seqpt reproduce` as its own job, each after the previous one succeeded
# (afterok), then a last job that writes the report. From the repository root:
#   OUT=/data/repro bash examples/slurm/reproduce_submit.sh
set -euo pipefail
: "${OUT:?set OUT to the reproduction directory on a shared file system}"
SCALE=${SCALE:-base}
SEEDS=${SEEDS:-3}
mkdir -p logs
previous=""
for stage in $(seqpt reproduce --output-dir "${OUT}" --scale "${SCALE}" --seeds "${SEEDS}" --list); do
    dependency=${previous:+--dependency=afterok:${previous}}
    previous=$(OUT="${OUT}" STAGE="${stage}" SCALE="${SCALE}" SEEDS="${SEEDS}" \
        sbatch --parsable ${dependency} examples/slurm/reproduce_stage.sbatch)
    echo "${stage}: job ${previous}"
done
# Every stage is complete by then: the whole grid is skipped and the report written.
OUT="${OUT}" SCALE="${SCALE}" SEEDS="${SEEDS}" sbatch --dependency=afterok:"${previous}" \
    --nodes=1 --ntasks-per-node=1 --gpus-per-node=1 --time=1:00:00 \
    --job-name=seqpt-reproduce-report examples/slurm/reproduce_stage.sbatch
