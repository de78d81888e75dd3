#!/usr/bin/env bash
# imnet64 step 3 of 3: train the encoder, one rank per GPU, on one or more nodes.
#
#   sbatch slurm/train.sh                                       # 1 node x 1 GPU
#   sbatch --nodes=4 --ntasks-per-node=4 --gpus-per-node=4 slurm/train.sh
#   IMNET64_TRAIN_ARGS="--epochs 40 --batch-size 256" sbatch slurm/train.sh
#   IMNET64_ENGINE=tf sbatch --nodes=2 slurm/train.sh           # tf.distribute, no Horovod
#
# The launcher line depends on the engine (IMNET64_ENGINE): for horovod, `srun --mpi=pmix`
# starts the ranks (Horovod built with MPI reads its rank from MPI); for tf, `srun` starts
# one task per rank with block distribution and each finds the cluster from Slurm's
# variables (SlurmClusterResolver; docs/slurm.md: its traps and how they are handled).
# Time limits and preemption: Slurm sends this script SIGUSR1 120 s before the end
# (--signal=B:USR1@120); the trap below forwards IMNET64_SIGNAL to the ranks, they
# finish the step, checkpoint and exit 75; this script then requeues the job, and the
# rerun (same job id, SLURM_RESTART_COUNT+1) resumes from the checkpoint. The log is
# appended to across reruns.
#
# Settings (environment variables; sbatch passes your environment to the job):
#   IMNET64_WORK          base folder of the defaults below     [$SLURM_SUBMIT_DIR/work]
#   IMNET64_DATASET       dataset made by shard-records         [$IMNET64_WORK/dataset]
#   IMNET64_RUN_DIR       run folder (checkpoints, history); the same folder resumes
#                         [$IMNET64_WORK/runs/<job name>-<job id>]
#   IMNET64_TRAIN_ARGS    more `imnet64 train` options, e.g. "--epochs 40 --arch residual"
#   IMNET64_SIGNAL        signal forwarded to the ranks = the trainer's --signal [USR1]
#                         (NCCL has been known to catch USR1: then use USR2 here; the
#                         #SBATCH --signal below only wakes this script and may stay USR1)
#   IMNET64_REQUEUE_EXIT  the trainer's "requeue me" exit code  [75]
#   IMNET64_MAX_RESTARTS  stop requeueing after this many reruns [50; docs/slurm.md:
#                         why] (`imnet64 submit train --max-restarts N`)
#   IMNET64_ENGINE        the trainer's --engine: horovod or tf  [horovod]
#                         (`imnet64 submit train --engine tf`)
#   IMNET64_SRUN_MPI      srun --mpi plugin of the horovod engine [pmix]
#   How to run imnet64 (first that applies):
#   IMNET64_CMD           the command, e.g. "/opt/venvs/imnet64/bin/imnet64"
#   IMNET64_IMAGE         an Apptainer image: runs "apptainer exec --nv IMAGE imnet64"
#                         else `imnet64` on PATH, else $SLURM_SUBMIT_DIR/.venv/bin/imnet64,
#                         else $SLURM_SUBMIT_DIR/imnet64.sif with Apptainer.
#
# Log: <job name>-<job id>.log in the submit folder, appended across requeues.
#SBATCH --job-name=imnet64-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --time=12:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.log
set -euo pipefail

die() { echo "train.sh: error: $*" >&2; exit 2; }

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
dataset=${IMNET64_DATASET:-$work/dataset}
run_dir=${IMNET64_RUN_DIR:-$work/runs/${SLURM_JOB_NAME:-train}-${SLURM_JOB_ID:-local}}
sig=${IMNET64_SIGNAL:-USR1}
requeue_exit=${IMNET64_REQUEUE_EXIT:-75}
max_restarts=${IMNET64_MAX_RESTARTS:-50}
restart=${SLURM_RESTART_COUNT:-0}
# This job as an operator finds it: "A_T" for an array task (SLURM_JOB_ID is then the
# task's own id, which `scontrol requeue` below uses: it requeues this task only).
job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}
job=${job:-${SLURM_JOB_ID:-?}}
engine=${IMNET64_ENGINE:-horovod}
# compared with `[ -ge ]` after the run: a value bash cannot compare would requeue for ever
case $max_restarts in
  ''|*[!0-9]*) die "IMNET64_MAX_RESTARTS=$max_restarts: a whole number of 0 or more" ;;
esac
[ "${#max_restarts}" -le 18 ] || die "IMNET64_MAX_RESTARTS=$max_restarts: at most 18 digits"
resolve_imnet64
read -r -a extra <<<"${IMNET64_TRAIN_ARGS:-}"

# The launcher line for the engine: MPI (PMIx) wires Horovod's ranks together; tf.distribute
# needs no MPI, its ranks take the cluster from the step's SLURM_* variables, which
# SlurmClusterResolver reads as block distribution.
case $engine in
  horovod) launch=(srun --mpi="${IMNET64_SRUN_MPI:-pmix}") ;;
  tf) launch=(srun --mpi=none --distribution=block) ;;
  *) die "IMNET64_ENGINE=$engine: horovod or tf" ;;
esac

export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
echo "train.sh: $(date '+%F %T') job $job restart $restart on ${SLURM_JOB_NODELIST:-$(hostname)}: ${SLURM_NTASKS:-1} ranks ($engine), $dataset -> $run_dir (requeued at most $max_restarts times)"

# The warning signal reaches only this shell (B:); pass IMNET64_SIGNAL on to every rank
# (srun relays it to its tasks). A signal that comes before srun started is passed on
# as soon as it has.
srun_pid='' pending=0 woken=0
# shellcheck disable=SC2317  # invoked by the traps below
forward() {
  woken=1
  echo "train.sh: $(date '+%T') got SIG$1: asking the ranks to checkpoint (SIG$sig)"
  if [ -n "$srun_pid" ]; then kill -s "$sig" "$srun_pid" 2>/dev/null || true; else pending=1; fi
}
trap 'forward USR1' USR1
trap 'forward USR2' USR2

"${launch[@]}" "${imnet64[@]}" train "$dataset" "$run_dir" --engine "$engine" \
  --signal "$sig" "${extra[@]}" &
srun_pid=$!
[ "$pending" -eq 0 ] || kill -s "$sig" "$srun_pid" 2>/dev/null || true

# `wait` returns early (128+n) when a trapped signal arrives: then wait again for srun's
# own exit code. 127 means srun's status was already collected: keep the one we have.
set +e
rc=
while :; do
  woken=0
  wait "$srun_pid"
  status=$?
  if [ "$status" -eq 127 ] && [ -n "$rc" ]; then break; fi
  rc=$status
  { [ "$woken" -eq 1 ] && [ "$status" -gt 128 ]; } || break
done
set -e

if [ "$rc" -eq "$requeue_exit" ]; then
  if [ "$restart" -ge "$max_restarts" ]; then
    echo "train.sh: error: checkpointed, but not requeueing: already restarted $restart times (IMNET64_MAX_RESTARTS)" >&2
    exit "$rc"
  fi
  echo "train.sh: $(date '+%T') checkpoint written; requeueing job $job"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "train.sh: $(date '+%T') training exited with code $rc"
exit "$rc"
