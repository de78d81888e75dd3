#!/usr/bin/env bash
# A real Slurm cluster on this one host, for the test suite and for trying the templates:
# munged, slurmctld and two slurmd playing two virtual nodes (node1, node2), with PMIx so
# `srun --mpi=pmix` launches OpenMPI/Horovod ranks across both "nodes".
#
# Usage: scripts/slurm-local.sh start|stop|status|env
#   start   install the Debian packages if missing (root + apt), write the config, start the
#           daemons and wait until both nodes are idle. Does nothing if already running.
#   stop    cancel this cluster's jobs and stop exactly the daemons `start` started (pid
#           files under the state directory); never touches another Slurm or munged.
#   status  exit 0 when all four daemons of this cluster run, 1 otherwise.
#   env     print `export SLURM_CONF=...` (use: eval "$(scripts/slurm-local.sh env)").
#
# Settings (environment):
#   IMNET64_SLURM_DIR   state directory: config, pid files, logs, spools
#                       (default /tmp/imnet64-slurm; keep it short, munge's socket lives there)
#   IMNET64_SLURM_PORT  slurmctld port; the nodes use the next two (default 16817)
#   IMNET64_SLURM_CPUS  CPUs each virtual node offers (default: this host's CPU count)
#
# Test-cluster choices that a production cluster would not make (see docs/slurm.md):
# cred_expire=10 (a requeued job may restart after 10 s instead of 120 s), a scheduler pass
# every 2 s, no cgroups (proctrack/pgid), 2 stand-in GPUs per node (/dev/null, /dev/zero; no
# devices bound) so templates asking for --gpus-per-node run unchanged on a CPU host.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${IMNET64_SLURM_DIR:-/tmp/imnet64-slurm}
port=${IMNET64_SLURM_PORT:-16817}
cpus=${IMNET64_SLURM_CPUS:-$(nproc)}
conf=$state/slurm.conf
nodes=(node1 node2)

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

# pid of a daemon we started, if it still runs and is ours: the program we expect, started
# with paths inside our state directory (guards against a recycled pid).
running_pid() { # pidfile program
  local pid cmd
  [ -s "$1" ] || return 1
  pid=$(<"$1")
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  [[ "${cmd%% *}" == "$2" || "${cmd%% *}" == */"$2" ]] || return 1
  [[ "$cmd" == *"$state/"* ]] || return 1
  echo "$pid"
}

pidfiles() { # "pidfile program" per daemon, in stop order
  local n
  for n in "${nodes[@]}"; do echo "$state/$n/slurmd.pid slurmd"; done
  echo "$state/ctld/slurmctld.pid slurmctld"
  echo "$state/munge/munged.pid munged"
}

status() {
  local f p
  while read -r f p; do running_pid "$f" "$p" >/dev/null || return 1; done < <(pidfiles)
}

install_packages() {
  # install-system-deps.sh also brings OpenMPI (and with it libpmix2, which Slurm's
  # mpi/pmix plugin loads); it only touches what is missing.
  local need=()
  command -v munged >/dev/null || need+=(munge)
  { command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null \
    || need+=(slurm-wlm)
  "$here/install-system-deps.sh" "${need[@]}"
}

write_config() {
  local host n i=0
  host=$(hostname -s)
  mkdir -p "$state/ctld" "$state/log"
  for n in "${nodes[@]}"; do mkdir -p "$state/$n/spool" "$state/$n/tmp"; done
  cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh: a throw-away test cluster on one host.
ClusterName=imnet64local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again.
AuthInfo=socket=$state/munge/munge.socket,cred_expire=10
StateSaveLocation=$state/ctld
SlurmctldPidFile=$state/ctld/slurmctld.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdSpoolDir=$state/%n/spool
SlurmdPidFile=$state/%n/slurmd.pid
SlurmdLogFile=$state/log/slurmd-%n.log
# One TmpFS per virtual node, else two PMIx servers on one host collide.
TmpFS=$state/%n/tmp
SlurmdParameters=config_overrides
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
MpiDefault=none
JobRequeue=1
# Refuse at submission what the partition can never run (as most sites do).
EnforcePartLimits=ALL
ReturnToService=2
KillWait=10
InactiveLimit=0
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
EOF
  for n in "${nodes[@]}"; do
    i=$((i + 1))
    echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + i)) CPUs=$cpus RealMemory=4000 Gres=gpu:2 State=UNKNOWN" >>"$conf"
  done
  echo "PartitionName=debug Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$conf"
  # Two stand-in "GPUs" per node so --gpus-per-node schedules as on a GPU cluster. slurmd
  # drops GPUs without a device file, and binds nothing to them without task/cgroup.
  echo "Name=gpu File=/dev/null,/dev/zero" >"$state/gres.conf"
}

start_munge() {
  local m=$state/munge
  running_pid "$m/munged.pid" munged >/dev/null && return 0
  mkdir -p "$m"
  chown munge: "$m"
  chmod 0711 "$m"  # others may reach the socket, not list the key
  if [ ! -s "$m/munge.key" ]; then
    runuser -u munge -- mungekey --create --keyfile="$m/munge.key"
  fi
  runuser -u munge -- munged --socket="$m/munge.socket" --key-file="$m/munge.key" \
    --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed"
}

wait_for_nodes() {
  local i
  for i in $(seq 60); do
    # Exactly "idle": a drained node also matches `sinfo -t idle`.
    if [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | grep -c ' idle$')" -eq ${#nodes[@]} ]
    then
      return 0
    fi
    sleep 0.5
  done
  sinfo -N -o "%N %T %E" >&2 || true
  stop_daemons
  die "nodes did not become idle within 30 s; see $state/log/"
}

start() {
  if status; then log "already running (SLURM_CONF=$conf)"; return 0; fi
  [ "$(id -u)" -eq 0 ] || die "needs root (slurmd launches jobs; munged runs as user munge)"
  # A half-started cluster from an earlier run: stop what is left, then start clean.
  stop_daemons
  install_packages
  write_config
  export SLURM_CONF=$conf
  start_munge
  # -i: ignore saved state, each start is a fresh cluster.
  slurmctld -i -f "$conf"
  local n
  for n in "${nodes[@]}"; do slurmd -N "$n" -f "$conf"; done
  wait_for_nodes
  log "up: ${nodes[*]} (SLURM_CONF=$conf)"
}

stop_daemons() {
  local f p pid i
  while read -r f p; do
    pid=$(running_pid "$f" "$p") || { rm -f "$f"; continue; }
    kill -TERM "$pid"
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$p ($pid) ignored SIGTERM, killing"; kill -KILL "$pid"; fi
    rm -f "$f"
  done < <(pidfiles)
}

stop() {
  if running_pid "$state/ctld/slurmctld.pid" slurmctld >/dev/null; then
    export SLURM_CONF=$conf
    # Jobs of this cluster only: they would outlive slurmd as orphaned slurmstepd.
    local jobs i
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      # shellcheck disable=SC2086  # a list of job ids
      scancel $jobs || true
      for i in $(seq 50); do
        [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  stop_daemons
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
