#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying (and testing) the workflow's SLURM path.
#
#   scripts/slurm_local.sh start DIR   install slurm-wlm + munge if absent (Debian, as root), write
#                                      DIR/slurm.conf for this machine, start munged, slurmctld and
#                                      slurmd with their pid files in DIR, wait until the node is idle
#   scripts/slurm_local.sh stop DIR    stop the daemons started in DIR (by their pid files)
#   scripts/slurm_local.sh env DIR     print the export line that points SLURM's commands at DIR
#
# SLURM's commands inside a job (the plugin's `srun`) read the default /etc/slurm/slurm.conf, so
# `start` links it to DIR/slurm.conf (and `stop` removes the link); a machine whose
# /etc/slurm/slurm.conf is its own is left alone (exit status 3).
#
# The cluster has no accounting database (AccountingStorageType=none, like many small lab clusters),
# so `sacct` cannot answer; MinJobAge is one hour, so `squeue` still knows finished jobs and
# `--slurm-status-command squeue` works. The node gets this machine's hostname, `nproc` CPUs and 90%
# of MemTotal. Exit status 3: this machine cannot run SLURM (not root, no apt-get, daemons fail).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf

SYSTEM_CONF=/etc/slurm/slurm.conf

stop() {
  for name in slurmd slurmctld munged; do
    pidfile=$dir/$name.pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$conf" ]]; then rm -f "$SYSTEM_CONF"; fi
}

install_if_absent() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || { echo "slurm_local: SLURM is not installed and this user is not root" >&2; exit 3; }
  command -v apt-get >/dev/null || { echo "slurm_local: SLURM is not installed and there is no apt-get" >&2; exit 3; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  cat >"$conf" <<EOF
ClusterName=prunebench-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-6817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-6818}
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  install_if_absent
  stop
  if [[ -e $SYSTEM_CONF && ! ( -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$conf" ) ]]; then
    echo "slurm_local: $SYSTEM_CONF exists and is not this cluster's: not touching a configured machine" >&2
    exit 3
  fi
  write_conf
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -sfn "$conf" "$SYSTEM_CONF"
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key >/dev/null 2>&1 \
    || { echo "slurm_local: cannot create a munge key" >&2; exit 3; }
  munged --force --socket "$dir/munge/munge.socket" --pid-file "$dir/munged.pid" \
    --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munged.seed" \
    || { echo "slurm_local: munged did not start (see $dir/log/munged.log)" >&2; exit 3; }
  export SLURM_CONF=$conf
  slurmctld -f "$conf" || { echo "slurm_local: slurmctld did not start (see $dir/log/slurmctld.log)" >&2; stop; exit 3; }
  slurmd -f "$conf" || { echo "slurm_local: slurmd did not start (see $dir/log/slurmd.log)" >&2; stop; exit 3; }
  for _ in $(seq 120); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; then
      echo "slurm_local: node $(hostname -s) idle ($(nproc) CPUs); export SLURM_CONF=$conf"
      return 0
    fi
    sleep 0.5
  done
  echo "slurm_local: the node did not become idle in 60 s:" >&2
  sinfo -N -l >&2 || true
  tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  stop
  exit 3
}

case $cmd in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|env DIR" >&2; exit 2 ;;
esac
