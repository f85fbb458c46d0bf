#!/usr/bin/env bash
# Starts and stops a cluster N times in a row while every CPU is kept busy, to show that
# bring-up is reliable and teardown never hangs under load.
#
#   cluster/soak.sh controlplane [N]   controlplane.sh start/stop (default N=20)
#   cluster/soak.sh node [N]           node.sh start/stop (root; NODE_PAUSE_IMAGE as
#                                      for node.sh, default .cache/images/pause.tar)
#
# One busy loop per CPU runs for the whole soak (killed at the end, also on failure).
# Each start must finish within START_DEADLINE seconds (default 300) and each stop within
# STOP_DEADLINE (default 120): a start or stop that runs longer counts as a hang, is
# killed, and fails the soak, as does any start or stop that exits non-zero or leaves a
# process of the cluster behind. Prints one line per cycle and a summary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kind="${1:-}"
n="${2:-20}"
case "${kind}" in
  controlplane) script="${here}/controlplane.sh" ;;
  node)
    script="${here}/node.sh"
    export NODE_PAUSE_IMAGE="${NODE_PAUSE_IMAGE:-${here}/../.cache/images/pause.tar}"
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
start_deadline="${START_DEADLINE:-300}"
stop_deadline="${STOP_DEADLINE:-120}"
ms() { date +%s%3N; }

burners=()
cleanup() {
  if ((${#burners[@]} > 0)); then
    kill "${burners[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
for ((i = 0; i < $(nproc); i++)); do
  bash -c 'while :; do :; done' &
  burners+=($!)
done
echo "soak: ${n} x ${kind} start/stop with ${#burners[@]} busy loops on $(nproc) CPUs"

# A soak that is killed leaves nothing running: the watchdog stops the cluster.
export CONTROLPLANE_OWNER_PID=$$ NODE_OWNER_PID=$$
starts=() stops=()
for ((c = 1; c <= n; c++)); do
  dir="$(mktemp -d "${TMPDIR:-/tmp}/gomemlimit-soak.XXXXXX")"
  t0=$(ms)
  if ! timeout --kill-after=10 "${start_deadline}" "${script}" start "${dir}" > /dev/null; then
    echo "soak: cycle ${c}: start failed or exceeded ${start_deadline}s; logs in ${dir}/logs" >&2
    KEEP_DIR=1 timeout "${stop_deadline}" "${script}" stop "${dir}" || true
    exit 1
  fi
  t1=$(ms)
  if ! timeout --kill-after=10 "${stop_deadline}" "${script}" stop "${dir}" 2> /dev/null; then
    echo "soak: cycle ${c}: stop failed or exceeded ${stop_deadline}s" >&2
    exit 1
  fi
  t2=$(ms)
  if left="$(pgrep -af -- "${dir}/" | grep -v pgrep)"; then
    echo "soak: cycle ${c}: processes left behind:" >&2
    echo "${left}" >&2
    exit 1
  fi
  starts+=($((t1 - t0)))
  stops+=($((t2 - t1)))
  printf 'soak: cycle %2d: start %6d ms, stop %6d ms\n' "${c}" "$((t1 - t0))" "$((t2 - t1))"
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %d, median %d, max %d ms", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "soak: ${n}/${n} cycles passed; start $(stats "${starts[@]}"); stop $(stats "${stops[@]}")"
