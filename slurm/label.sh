#!/usr/bin/env bash
# imnet64 step 1 of 3: pseudo-label the images with the teacher, one array task per shard.
#
#   sbatch slurm/label.sh                                  # 8 shards, settings below
#   sbatch --array=0-63 slurm/label.sh                     # 64 shards
#   IMNET64_INPUT=/data/train_64x64 IMNET64_TEACHER=offline sbatch slurm/label.sh
#
# Each task N runs `imnet64 label INPUT OUT --shard-index N --num-shards COUNT` and writes
# OUT/labels/part-N-of-COUNT.{tfrecord,csv,json}; the .json summary marks the shard done.
# After a partial failure, submit the same command again: finished shards are skipped
# in seconds, only missing ones are labeled. To run only some shards, name them and the
# shard count (`imnet64 label-status OUT --num-shards 64` lists the missing ones):
#   IMNET64_NUM_SHARDS=64 sbatch --array=3,17 slurm/label.sh
# Array task ids ARE shard indexes: keep them 0-based.
#
# Settings (environment variables; sbatch passes your environment to the job):
#   IMNET64_WORK        base folder of the defaults below     [$SLURM_SUBMIT_DIR/work]
#   IMNET64_INPUT       image folder, list file or .tar, or ImageNet64 batch files
#                       (train_data_batch_N / val_data, .npz, a folder of them, or the
#                       Imagenet64_*.zip as downloaded: docs/datasets.md)
#                                                         [$IMNET64_WORK/images]
#   IMNET64_LABEL_DIR   output folder (parts in labels/)      [$IMNET64_WORK/labeled]
#   IMNET64_TEACHER     TF Hub handle, SavedModel folder or "offline"
#                       [the CLI's default: TF Hub MobileNet V2, needs internet or a
#                        TFHUB_CACHE_DIR filled beforehand on the login node]
#   IMNET64_NUM_SHARDS  shard count [SLURM_ARRAY_TASK_MAX + 1 for an array 0..N-1]
#   IMNET64_LABEL_ARGS  more `imnet64 label` options, e.g. "--batch-size 128"
#   How to run imnet64 (first that applies):
#   IMNET64_CMD         the command, e.g. "/opt/venvs/imnet64/bin/imnet64"
#   IMNET64_IMAGE       an Apptainer image: runs "apptainer exec --nv IMAGE imnet64"
#                       else `imnet64` on PATH, else $SLURM_SUBMIT_DIR/.venv/bin/imnet64,
#                       else $SLURM_SUBMIT_DIR/imnet64.sif with Apptainer.
#
# Resources per task (`imnet64 submit label --cpus-per-task N --mem-per-task SIZE
# --gpus-per-task N`): 2 CPUs and 3G by default, from bench/results.md (MobileNet V2
# labeling on a 2-core AMD EPYC): 262 images/s on 2 CPUs, and a peak RSS of 1,858 MB that
# stays flat from 1,000 to 20,000 files per shard; 3G leaves ~60% for a larger --batch-size
# or the TF Hub teacher's graph. No GPU by default (a CPU partition refuses any GPU
# request); with one, the teacher's forward pass (the ceiling on CPU) moves to it.
# Time: the full 1,281,167 images over this array's 8 tasks are 160,146 per task; at the
# slowest rate measured on 2 CPUs (35 images/s, an AVX2 CPU with oneDNN off; 86 with it
# on, 222-262 on the AVX-512 EPYC) that is 76 min, x1.5 = 2 h (docs/slurm.md, Sizing).
#
# Logs: one per task, <job name>-<array job id>_<task id>.log in the submit folder,
# appended to when Slurm requeues the task (node failure, `scontrol requeue A_T`); each
# line names the task as <array job id>_<task id> (never the whole array) and its restart.
#SBATCH --job-name=imnet64-label
#SBATCH --array=0-7
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=3G
#SBATCH --time=02:00:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%A_%a.log
set -euo pipefail

# This task and only it: "A_T" (SLURM_JOB_ID is an id of its own; the array job id alone
# would name every task, e.g. for `scontrol requeue`).
task="${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-?}}_${SLURM_ARRAY_TASK_ID:-?}"
die() { echo "label.sh: $(date '+%F %T') task $task: error: $*" >&2; exit 2; }

# The imnet64 command as words in the array `imnet64`. (The same function is in each of
# slurm/*.sh on purpose: sbatch runs a copy of the script from its spool folder, so a job
# script cannot rely on sourcing a file next to it.)
resolve_imnet64() {
  local submit=${SLURM_SUBMIT_DIR:-$PWD} runner
  if [ -n "${IMNET64_CMD:-}" ]; then
    read -r -a imnet64 <<<"$IMNET64_CMD"
    return
  fi
  local image=${IMNET64_IMAGE:-}
  if [ -z "$image" ]; then
    if command -v imnet64 >/dev/null; then imnet64=(imnet64); return; fi
    if [ -x "$submit/.venv/bin/imnet64" ]; then imnet64=("$submit/.venv/bin/imnet64"); return; fi
    [ -f "$submit/imnet64.sif" ] && image=$submit/imnet64.sif
  fi
  [ -n "$image" ] || die "no imnet64 found: set IMNET64_CMD or IMNET64_IMAGE (see the top of this script)"
  runner=$(command -v apptainer || command -v singularity) \
    || die "IMNET64_IMAGE=$image but neither apptainer nor singularity is on PATH"
  imnet64=("$runner" exec --nv "$image" imnet64)
}

[ -n "${SLURM_ARRAY_TASK_ID:-}" ] || die "run me as an array job: sbatch --array=0-N slurm/label.sh"
work=${IMNET64_WORK:-${SLURM_SUBMIT_DIR:-$PWD}/work}
input=${IMNET64_INPUT:-$work/images}
out=${IMNET64_LABEL_DIR:-$work/labeled}
if [ -n "${IMNET64_NUM_SHARDS:-}" ]; then
  shards=$IMNET64_NUM_SHARDS
elif [ "${SLURM_ARRAY_TASK_MIN:-0}" -eq 0 ] \
  && [ "${SLURM_ARRAY_TASK_COUNT:-0}" -eq $((SLURM_ARRAY_TASK_MAX + 1)) ]; then
  shards=$SLURM_ARRAY_TASK_COUNT
else
  die "array ${SLURM_ARRAY_TASK_MIN}-${SLURM_ARRAY_TASK_MAX} (${SLURM_ARRAY_TASK_COUNT} tasks) is not 0..N-1: set IMNET64_NUM_SHARDS to the shard count"
fi
resolve_imnet64
read -r -a extra <<<"${IMNET64_LABEL_ARGS:-}"
teacher=()
[ -z "${IMNET64_TEACHER:-}" ] || teacher=(--teacher "$IMNET64_TEACHER")

export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
echo "label.sh: $(date '+%F %T') task $task restart ${SLURM_RESTART_COUNT:-0} on ${SLURMD_NODENAME:-$(hostname)}: shard ${SLURM_ARRAY_TASK_ID} of $shards, $input -> $out"
exec "${imnet64[@]}" label "$input" "$out" --shard-index "$SLURM_ARRAY_TASK_ID" \
  --num-shards "$shards" "${teacher[@]}" "${extra[@]}"
