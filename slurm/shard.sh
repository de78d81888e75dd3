#!/usr/bin/env bash
# imnet64 step 2 of 3: turn the labels into training TFRecord shards + dataset.json.
#
#   sbatch slurm/shard.sh                                  # after slurm/label.sh finished
#   sbatch --dependency=afterok:<label job id> slurm/shard.sh
#
# Runs `srun imnet64 shard-records LABEL_DIR DATASET` with several tasks: each task (rank
# SLURM_PROCID of SLURM_NTASKS) writes its own disjoint set of shards, rank 0 writes the
# manifest once all exist. A re-run with the same inputs changes nothing; an interrupted
# one resumes at the missing shards.
#
# Settings (environment variables; sbatch passes your environment to the job):
#   IMNET64_WORK        base folder of the defaults below     [$SLURM_SUBMIT_DIR/work]
#   IMNET64_LABEL_DIR   the OUT folder of `imnet64 label`      [$IMNET64_WORK/labeled]
#   IMNET64_DATASET     output dataset folder                  [$IMNET64_WORK/dataset]
#   IMNET64_SHARD_ARGS  more `imnet64 shard-records` options, e.g. "--val-fraction 0.05"
#   How to run imnet64 (first that applies):
#   IMNET64_CMD         the command, e.g. "/opt/venvs/imnet64/bin/imnet64"
#   IMNET64_IMAGE       an Apptainer image: runs "apptainer exec --nv IMAGE imnet64"
#                       else `imnet64` on PATH, else $SLURM_SUBMIT_DIR/.venv/bin/imnet64,
#                       else $SLURM_SUBMIT_DIR/imnet64.sif with Apptainer.
#
# Log: <job name>-<job id>.log in the submit folder (lines of all tasks).
# Time: 1,281,167 images take one rank 5.7 min on 2 cores of a Zen 4 EPYC (bench/scale.py,
# projected from 160,000), each of the 4 ranks about a quarter of that plus ~30 s to read
# the catalog; 30 min leaves room for a slow parallel filesystem. Memory: each rank holds
# the whole catalog, ~0.6 GB + ~790 bytes per image = ~1.6 GB at 1.28 M (docs/slurm.md).
#SBATCH --job-name=imnet64-shard
#SBATCH --ntasks=4
#SBATCH --time=00:30:00
#SBATCH --output=%x-%j.log
set -euo pipefail

die() { echo "shard.sh: error: $*" >&2; exit 2; }

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

work=${IMNET64_WORK:-${SLURM_SUBMIT_DIR:-$PWD}/work}
source_dir=${IMNET64_LABEL_DIR:-$work/labeled}
out=${IMNET64_DATASET:-$work/dataset}
resolve_imnet64
read -r -a extra <<<"${IMNET64_SHARD_ARGS:-}"

export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
echo "shard.sh: job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-$(hostname)}: ${SLURM_NTASKS:-1} tasks, $source_dir -> $out"
# --label prefixes each line with its task number.
exec srun --label "${imnet64[@]}" shard-records "$source_dir" "$out" "${extra[@]}"
