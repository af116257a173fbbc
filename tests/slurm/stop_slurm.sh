#!/usr/bin/env bash
# Stop the daemons started by start_slurm.sh (by pid file, never by name).
set -uo pipefail

stop_pid() { # name pidfile
  local pf=$2 pid
  [ -f "$pf" ] || return 0
  pid=$(cat "$pf" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "[stop_slurm] stopping $1 ($pid)" >&2
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pf"
}

# cancel anything still queued/running so slurmd has no orphans
command -v scancel >/dev/null && scancel --user="$(id -un)" 2>/dev/null || true
stop_pid slurmd /run/slurm/slurmd.pid
stop_pid slurmctld /run/slurm/slurmctld.pid
stop_pid munged /run/munge/munged.pid
exit 0
