#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing lec's SLURM launch for real (tests/test_slurm.py):
#   scripts/slurm_local.sh start <dir>   → munged + slurmctld + slurmd with <dir>/slurm.conf; prints `export SLURM_CONF=…`
#   scripts/slurm_local.sh stop <dir>    → stops the three daemons it started (their pid files are under <dir>)
# Needs root and Debian's packages `slurm-wlm` and `munge` (installed here with apt-get when missing). The
# config is the minimum for one host (slurm.conf(5), SLURM 22.05): this host as controller and only node with all
# its CPUs, one partition, no accounting, munge authentication.
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?give a directory for the cluster config and state}")

stop_pid() {  # SIGTERM the daemon in pid file $1, SIGKILL after 10 s
  [[ -f $1 ]] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

if [[ $cmd == stop ]]; then
  stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"; stop_pid "$dir/munged.pid"
  exit 0
fi

[[ $(id -u) == 0 ]] || { echo "slurm_local: needs root (munge and slurmd run as root here)" >&2; exit 3; }
if ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
mkdir -p "$dir"/{state,spool,log,munge}
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

# munge: its own key and socket under $dir, so a system munged (if any) is left alone
[[ -f $dir/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null; chmod 400 "$dir/munge/munge.key"; }
chmod 700 "$dir/munge"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"

cat > "$dir/slurm.conf" <<EOF
ClusterName=lec
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$(( 20000 + RANDOM % 20000 ))
SlurmdPort=$(( 40000 + RANDOM % 20000 ))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=lec Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.3
done
echo "slurm_local: the node did not come up; see $dir/log/" >&2
sinfo >&2 || true
exit 4
