#!/usr/bin/env bash
# Stop the daemons that tests/slurm/setup_slurm.sh started (and only those).
#   tests/slurm/teardown_slurm.sh
set -uo pipefail
STATE_DIR=${SCJEPA_SLURM_STATE_DIR:-/run/scjepa-slurm}
log() { echo "[teardown_slurm] $*" >&2; }
[[ -f $STATE_DIR/started ]] || { log "nothing recorded in $STATE_DIR/started"; exit 0; }

stop() {  # name pidfile
    local name=$1 pidfile=$2 pid
    grep -qx "$name" "$STATE_DIR/started" || return 0
    if [[ -s $pidfile ]] && pid=$(cat "$pidfile") && kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then log "$name still alive, SIGKILL"; kill -9 "$pid"; fi
    fi
    sed -i "/^$name\$/d" "$STATE_DIR/started"
}
# jobs first, so slurmd leaves no job processes behind
if grep -qx slurmctld "$STATE_DIR/started" && command -v scancel >/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi
stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop munged /run/munge/munged.pid
exit 0
