#!/usr/bin/env bash
# A disposable one-node SLURM cluster on this machine, for trying and testing the project's SLURM paths.
#
#   tools/slurm/local-cluster.sh start    # install slurm-wlm + munge if missing, write the config, start the daemons
#   tools/slurm/local-cluster.sh status   # what runs
#   tools/slurm/local-cluster.sh stop     # stop exactly the daemons that `start` started
#
# After `start`, sinfo, srun, sbatch, squeue, scancel and scontrol work for any user in any shell: the config is
# written to /etc/slurm/slurm.conf, where Debian's SLURM looks by default (SLURM_LOCAL_CONF=<path> writes it
# elsewhere; then export SLURM_CONF=<path> in every shell that uses SLURM). State, spool and logs live in
# ${SLURM_LOCAL_DIR:-/tmp/mnist-study-slurm}; `stop` leaves them and the config in place. Debian/Ubuntu, as root
# or with sudo. No accounting (no slurmdbd): sacct answers with an error. Partitions: `debug` (default) and
# `urgent`, whose jobs preempt (requeue) those of `debug` after a 60 s grace time; a preempted job gets its
# --signal at once and SIGTERM when the grace time ends. Jobs may be requeued (scontrol requeue); a requeued job
# may start again about 30 s later.
#
# Environment: SLURM_LOCAL_DIR (state folder), SLURM_LOCAL_CONF (config path), SLURM_LOCAL_TIMEOUT (seconds to wait
# for the node to come up, default 60).
set -euo pipefail

STATE_DIR=${SLURM_LOCAL_DIR:-/tmp/mnist-study-slurm}
CONF=${SLURM_LOCAL_CONF:-/etc/slurm/slurm.conf}
UP_TIMEOUT_S=${SLURM_LOCAL_TIMEOUT:-60}
MARKER="# Written by tools/slurm/local-cluster.sh"
MUNGE_RUN_DIR=/run/munge
PID_DIR=$STATE_DIR/pids
LOG_DIR=$STATE_DIR/log
DAEMONS=(munged slurmctld slurmd)  # started in this order, stopped in the reverse one

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

say() {
  echo "local-cluster: $*"
}

# --- preconditions ----------------------------------------------------------------------------------------

require_linux() {
  [[ $(uname -s) == Linux ]] || die "needs Linux (this is $(uname -s))"
}

# Re-runs this script under sudo when not root; `status` needs no root.
become_root() {
  [[ $EUID -eq 0 ]] && return
  command -v sudo >/dev/null || die "needs root: run it as root or install sudo"
  exec sudo env SLURM_LOCAL_DIR="$STATE_DIR" SLURM_LOCAL_CONF="$CONF" SLURM_LOCAL_TIMEOUT="$UP_TIMEOUT_S" \
    "$(readlink -f "$0")" "$@"
}

install_packages() {
  local missing=()
  for command in slurmctld slurmd sinfo srun sbatch scontrol munged munge; do
    command -v "$command" >/dev/null || missing+=("$command")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  command -v apt-get >/dev/null ||
    die "${missing[*]} missing and no apt-get to install slurm-wlm and munge: install them by hand"
  say "installing slurm-wlm and munge (missing: ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
}

# --- recorded processes -----------------------------------------------------------------------------------

pid_file() {
  echo "$PID_DIR/$1.pid"
}

# The recorded PID of daemon $1 when that process is alive and still is that daemon (PIDs get reused).
live_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
  echo "$pid"
}

running_ours() {
  local daemon
  for daemon in "$@"; do
    live_pid "$daemon" >/dev/null || return 1
  done
}

# Daemon $1 running but not started by this script (a system service, another state folder).
foreign_pids() {
  local ours
  ours=$(live_pid "$1" || true)
  pgrep -x "$1" | grep -vx "${ours:-none}" || true
}

# --- munge ------------------------------------------------------------------------------------------------

munge_works() {
  munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1
}

start_munge() {
  if live_pid munged >/dev/null; then
    return
  fi
  if munge_works; then
    say "munged already runs (not started here; stop leaves it running)"
    return
  fi
  if [[ ! -f /etc/munge/munge.key ]]; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  mkdir -p "$MUNGE_RUN_DIR"
  chown munge:munge "$MUNGE_RUN_DIR"
  chmod 0755 "$MUNGE_RUN_DIR"
  runuser -u munge -- munged --pid-file="$MUNGE_RUN_DIR/munged.pid"  # forks; its PID comes from its file
  for _ in $(seq 50); do
    munge_works && break
    sleep 0.2
  done
  munge_works || die "munged did not start: see /var/log/munge/munged.log"
  cp "$MUNGE_RUN_DIR/munged.pid" "$(pid_file munged)"
}

# --- slurm ------------------------------------------------------------------------------------------------

node_line() {
  local line
  line=$(slurmd -C 2>/dev/null | grep '^NodeName=' || true)
  if [[ -z $line ]]; then
    line="NodeName=$(hostname -s) CPUs=$(nproc) RealMemory=$(free -m | awk '/^Mem:/ {print $2}')"
  fi
  echo "$line NodeAddr=127.0.0.1 State=UNKNOWN"
}

node_name() {
  sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$CONF"
}

write_config() {
  if [[ -f $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script: move it away, or set SLURM_LOCAL_CONF=<another path>"
  fi
  mkdir -p "$(dirname "$CONF")" "$STATE_DIR/ctld" "$STATE_DIR/spool" "$PID_DIR" "$LOG_DIR"
  local node host
  node=$(node_line)
  host=${node%% *}
  host=${host#NodeName=}
  cat >"$CONF.tmp" <<EOF
$MARKER
# A one-node cluster; state, spool and logs in $STATE_DIR. Rewritten by every start of a stopped cluster.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
MailProg=/bin/true
AuthType=auth/munge
# The credential lifetime also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=cred_expire=30
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/pids/slurmctld.daemon.pid
SlurmdPidFile=$STATE_DIR/pids/slurmd.daemon.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups: processes are tracked through their parents; no MPI plugin (PMIx errors in slurmd.log are harmless).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Pending jobs (a requeued one once its hold ends) start within seconds, not at the next 30-60 s scheduling pass.
SchedulerParameters=bf_interval=5,sched_interval=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldTimeout=30
SlurmdTimeout=60
ReturnToService=2
KillWait=30
MinJobAge=300
InactiveLimit=0
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=60
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  mv "$CONF.tmp" "$CONF"
}

# Starts daemon $1 in the foreground mode (-D), detached from this shell, and records its PID.
start_daemon() {
  local daemon=$1
  live_pid "$daemon" >/dev/null && return
  setsid "$daemon" -D -f "$CONF" </dev/null >>"$LOG_DIR/$daemon.out" 2>&1 &
  echo $! >"$(pid_file "$daemon")"
}

node_state() {
  sinfo -h -N -n "$(node_name)" -o %T 2>/dev/null | head -1
}

wait_until_up() {
  local deadline=$((SECONDS + UP_TIMEOUT_S)) state=""
  while ((SECONDS < deadline)); do
    for daemon in slurmctld slurmd; do
      live_pid "$daemon" >/dev/null ||
        die "$daemon exited at start: see $LOG_DIR/$daemon.log and $LOG_DIR/$daemon.out, then run stop"
    done
    state=$(node_state)
    case $state in
      idle | mixed | allocated | completing) return ;;
    esac
    sleep 1
  done
  die "node $(node_name) not up after ${UP_TIMEOUT_S}s (state: ${state:-no answer from slurmctld}):" \
    "see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log, then run stop"
}

cmd_start() {
  require_linux
  become_root start
  install_packages
  if running_ours "${DAEMONS[@]:1}"; then
    say "already running"
    cmd_status
    return
  fi
  for daemon in slurmctld slurmd; do
    if [[ -n $(foreign_pids "$daemon") ]]; then
      die "another $daemon runs (PID $(foreign_pids "$daemon" | tr '\n' ' ')): stop it first;" \
        "this script stops only its own"
    fi
  done
  mkdir -p "$PID_DIR" "$LOG_DIR"
  if ! live_pid slurmctld >/dev/null && ! live_pid slurmd >/dev/null; then
    write_config
  fi
  start_munge
  start_daemon slurmctld
  start_daemon slurmd
  wait_until_up
  say "up: node $(node_name) $(node_state); config $CONF; logs $LOG_DIR"
  if [[ $CONF != /etc/slurm/slurm.conf ]]; then
    say "export SLURM_CONF=$CONF in every shell that uses SLURM"
  fi
}

# Sends SIGTERM to the recorded PID of daemon $1 and waits for it to end (SIGKILL after 30 s).
stop_daemon() {
  local daemon=$1 pid
  if ! pid=$(live_pid "$daemon"); then
    rm -f "$(pid_file "$daemon")"
    return
  fi
  kill -TERM "$pid"
  for _ in $(seq 300); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then
    say "$daemon (PID $pid) still runs 30 s after SIGTERM: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while [[ -d /proc/$pid ]]; do sleep 0.1; done
  fi
  rm -f "$(pid_file "$daemon")"
  say "stopped $daemon (PID $pid)"
}

cmd_stop() {
  require_linux
  local index jobs
  if ! running_ours slurmctld && ! running_ours slurmd && ! running_ours munged; then
    say "not running"
    return
  fi
  become_root stop
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ' || true)
  if [[ -n $jobs ]]; then
    say "jobs left in the queue (they stay there; running ones go on until they end): $jobs- scancel them to end them"
  fi
  for ((index = ${#DAEMONS[@]} - 1; index >= 0; index--)); do
    stop_daemon "${DAEMONS[index]}"
  done
}

cmd_status() {
  local daemon pid any=0
  for daemon in "${DAEMONS[@]}"; do
    if pid=$(live_pid "$daemon"); then
      say "$daemon runs (PID $pid)"
      any=1
    else
      say "$daemon does not run (not started by this script, or stopped)"
    fi
  done
  if ((any)) && [[ -f $CONF ]] && live_pid slurmctld >/dev/null; then
    say "node $(node_name): $(node_state || true); config $CONF; logs $LOG_DIR"
    squeue 2>/dev/null || true
  fi
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
