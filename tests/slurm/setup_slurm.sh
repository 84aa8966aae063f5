#!/usr/bin/env bash
# Install, configure and start a single-node SLURM cluster on this host (for tests/CI).
#
#   tests/slurm/setup_slurm.sh            # idempotent: returns at once when the node is already idle
#
# What it does (as root, no systemd needed):
#   * apt-get installs slurm-wlm + munge when slurmctld/slurmd/munged are missing
#   * writes /etc/slurm/slurm.conf and /etc/slurm/gres.conf for one node named after
#     `hostname -s` with the host's CPUs, RealMemory = total memory minus a margin,
#     and one *fake* GPU (gres.conf File=/dev/null, a character device), so that
#     `sbatch --gpus=1` schedules and SLURM sets CUDA_VISIBLE_DEVICES in the job
#   * no slurmdbd: AccountingStorageType=none, so `sacct` cannot report jobs; the
#     workflow profile uses `slurm-status-command: squeue` and MinJobAge is large,
#     so finished jobs stay visible to `squeue` / `scontrol show job`
#   * starts munged, slurmctld, slurmd and waits until `sinfo` shows the node idle
#   * records which daemons it started in $STATE_DIR/started (teardown_slurm.sh
#     stops only those)
#
# Exit codes: 0 = cluster up; 3 = SLURM cannot be installed here (callers skip);
#             other non-zero = installed but failed to come up (callers fail).
set -euo pipefail

STATE_DIR=${SCJEPA_SLURM_STATE_DIR:-/run/scjepa-slurm}
CONF_DIR=/etc/slurm
MARKER="# written by scjepa tests/slurm/setup_slurm.sh"
LOG_DIR=/var/log/slurm
WAIT_S=${SCJEPA_SLURM_WAIT_S:-60}
MEM_MARGIN_MB=${SCJEPA_SLURM_MEM_MARGIN_MB:-1024}

log() { echo "[setup_slurm] $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (installs packages and starts daemons)"
    exit 3
fi

# ---------------------------------------------------------------- 1. install
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        log "slurm is not installed and apt-get is unavailable"
        exit 3
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
            slurm-wlm munge >/dev/null; }; then
        log "apt-get could not install slurm-wlm/munge"
        exit 3
    fi
fi

mkdir -p "$STATE_DIR"
touch "$STATE_DIR/started"

node_idle() {
    local st
    st=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1) || return 1
    [[ $st == idle* || $st == mixed* || $st == allocated* ]]
}
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
mark_started() { grep -qx "$1" "$STATE_DIR/started" || echo "$1" >>"$STATE_DIR/started"; }

NODE=$(hostname -s)

# Fast path: our cluster is already up.
if [[ -f $CONF_DIR/slurm.conf ]] && grep -qF "$MARKER" "$CONF_DIR/slurm.conf" \
    && pid_alive /run/slurm/slurmctld.pid && pid_alive /run/slurm/slurmd.pid && node_idle; then
    log "already running: $(sinfo -h -N -o '%N %T %G')"
    exit 0
fi

if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -qF "$MARKER" "$CONF_DIR/slurm.conf"; then
    log "$CONF_DIR/slurm.conf exists and was not written by this script; refusing to overwrite it"
    exit 4
fi

# ---------------------------------------------------------------- 2. configure
CPUS=$(nproc)
TOTAL_MB=$(free -m | awk '/^Mem:/ {print $2}')
REAL_MB=$((TOTAL_MB - MEM_MARGIN_MB))
((REAL_MB < 1024)) && REAL_MB=$((TOTAL_MB * 3 / 4))
# sockets/cores as slurmd sees them (avoids a topology mismatch that drains the node)
TOPO=$(slurmd -C 2>/dev/null | head -n1 | grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' || true)
SLURMD_CPUS=$(slurmd -C 2>/dev/null | head -n1 | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
if [[ -n $SLURMD_CPUS && $SLURMD_CPUS != "$CPUS" ]]; then
    CPUS=$SLURMD_CPUS
fi
[[ -z $TOPO ]] && TOPO=""

mkdir -p "$CONF_DIR" "$LOG_DIR" /run/slurm /var/spool/slurmctld /var/spool/slurmd
cat >"$CONF_DIR/slurm.conf" <<CONF
$MARKER
# Single-node test cluster: controller and compute node on this host.
ClusterName=scjepa-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
# containers (gVisor, docker) have no usable cgroups for SLURM
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# keep finished jobs in slurmctld for a day: squeue/scontrol show them, so the
# snakemake SLURM plugin can use 'squeue' as status command without slurmdbd
MinJobAge=86400
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS $TOPO RealMemory=$REAL_MB Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
cat >"$CONF_DIR/gres.conf" <<CONF
$MARKER
# a fake GPU: any character device works as File; SLURM only needs something to bind
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
CONF
log "wrote $CONF_DIR/slurm.conf (node $NODE, CPUs=$CPUS, RealMemory=$REAL_MB, Gres=gpu:1)"

# ---------------------------------------------------------------- 3. start
# munge
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    mark_started munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

# slurmctld / slurmd: a stale daemon from an earlier config is restarted
for d in slurmd slurmctld; do
    if pid_alive /run/slurm/$d.pid; then
        pid=$(cat /run/slurm/$d.pid)
        log "stopping running $d (pid $pid) to load the new config"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
done
log "starting slurmctld"
/usr/sbin/slurmctld -c        # -c: clear saved state (jobs of earlier test runs)
mark_started slurmctld
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
if ! scontrol ping 2>/dev/null | grep -q UP; then
    log "slurmctld did not come up"
    tail -n 20 "$LOG_DIR/slurmctld.log" >&2 || true
    exit 1
fi
log "starting slurmd"
/usr/sbin/slurmd
mark_started slurmd

# ---------------------------------------------------------------- 4. wait
deadline=$((SECONDS + WAIT_S))
until node_idle; do
    st=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
    if [[ $st == drain* || $st == down* || $st == inval* ]]; then
        scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
    fi
    if ((SECONDS > deadline)); then
        log "node did not become idle within ${WAIT_S}s (state: ${st:-?})"
        sinfo -N -l >&2 || true
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 0.5
done
log "up: $(sinfo -h -N -o '%N %T cpus=%c mem=%m gres=%G')"
