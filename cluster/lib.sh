# shellcheck shell=bash disable=SC2154
# Shell helpers shared by controlplane.sh and node.sh (sourced, not run).
# Callers set `here` (this folder), `name` (the log prefix) and, before using
# the helpers that need it, `dir` (the cluster directory).

die() { echo "${name}: $*" >&2; exit 1; }
log() { echo "${name}: $*" >&2; }

now_ms() { date +%s%3N; }

# The cluster directory, absolute: DIR when given, else a new one named
# PREFIX.XXXXXX in TMPDIR.
cluster_dir() { # DIR|"" prefix
  local d="$1"
  if [[ -z "${d}" ]]; then
    d="$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX")"
  fi
  mkdir -p "${d}"
  (cd "${d}" && pwd)
}

# Where the Kubernetes binaries live: CONTROLPLANE_BIN, or built on demand by
# build.sh (a no-op when up to date).
bindir() {
  if [[ -n "${CONTROLPLANE_BIN:-}" ]]; then
    echo "${CONTROLPLANE_BIN}"
  else
    "${here}/build.sh" >&2
    "${here}/build.sh" --print-bindir
  fi
}

# N distinct free loopback TCP ports, from the 5,000 right below the kernel's ephemeral
# range (net.ipv4.ip_local_port_range): the system takes the local port of every outgoing
# connection from that range, so no connection made meanwhile can take a port chosen here
# before its server binds it. All sockets are held open until every port is chosen, so the
# ports differ. (The Rust tests choose theirs from the 5,000 below these: free_port in
# tests/support/mod.rs.)
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
wanted = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral = 32768
candidates = list(range(ephemeral - 5000, ephemeral)) if ephemeral - 5000 >= 1024 else []
random.shuffle(candidates)
socks = []
for port in candidates:
    if len(socks) == wanted:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
# No room below the range: ports from it, which a connection could still take.
while len(socks) < wanted:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# A certificate signed by the cluster CA in DIR/pki:
#   sign_leaf NAME SUBJECT EXTENSIONS [CA]
sign_leaf() {
  local ca="${4:-ca}"
  (
    cd "${dir}/pki" || exit
    umask 077
    openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" \
      -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "${ca}.crt" -CAkey "${ca}.key" -CAcreateserial \
      -days 2 -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext" ./*.srl
    chmod 644 "$1.crt"
  )
}

# shellcheck disable=SC2034 # used by the scripts that source this file
client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

write_kubeconfig() { # file server user cert key
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $2
    certificate-authority: ${dir}/pki/ca.crt
users:
- name: $3
  user:
    client-certificate: $4
    client-key: $5
contexts:
- name: e2e
  context:
    cluster: e2e
    user: $3
    namespace: default
current-context: e2e
EOF
  chmod 600 "$1"
}

# True when PID is a live process of this cluster: its command line must
# mention DIR, which guards against a recycled pid. The command line reads
# empty for a zombie, and also for a moment in the middle of an exec (launch's
# setsid, or nsenter, execs the daemon after the command line already matched):
# an empty one is read again, for half a second at most, unless a zombie.
of_this_cluster() { # pid
  local pid="$1" cmdline i
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  for ((i = 0; i < 50; i++)); do
    cmdline="$(tr '\0' ' ' 2>/dev/null < "/proc/${pid}/cmdline")" || return 1
    [[ -z "${cmdline}" ]] || break
    [[ "$(sed -E 's/.*\) (.).*/\1/' "/proc/${pid}/stat" 2>/dev/null)" != Z ]] || return 1
    sleep 0.01
  done
  [[ "${cmdline}" == *"${dir}/"* ]]
}

# True when the pid file names a live process of this cluster.
pid_alive() { # pidfile
  local f="$1"
  [[ -f "${f}" ]] || return 1
  of_this_cluster "$(cat "${f}")"
}

# Starts a daemon in its own session (so a Ctrl-C or a process-group kill aimed
# at the caller does not take it down half-way), with its output in
# DIR/logs/NAME.log and its pid in DIR/pids/NAME.pid. Nothing stays attached
# to the caller's stdout or stderr, so a caller that reads them to EOF returns.
launch() { # name command...
  local what="$1" pid i; shift
  setsid "$@" > "${dir}/logs/${what}.log" 2>&1 < /dev/null &
  pid=$!
  echo "${pid}" > "${dir}/pids/${what}.pid"
  # Until the command replaces the forked shell, the process's command line is this
  # script's, which of_this_cluster takes for another process: wait (5 s at most)
  # for the exec, or for the process to end.
  for ((i = 0; i < 500; i++)); do
    of_this_cluster "${pid}" && break
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.01
  done
}

# Polls until the command succeeds; gives up after TIMEOUT seconds (each wait has
# its own, so a slow daemon does not eat the next one's time) or as soon as the
# named daemon ("-" for none) has exited.
wait_for() { # daemon|- timeout_s command...
  local proc="$1" limit="$2" deadline=$(($(date +%s) + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    if [[ "${proc}" != - ]] && ! pid_alive "${dir}/pids/${proc}.pid"; then
      log "${proc} exited during start-up"
      return 1
    fi
    if (($(date +%s) > deadline)); then
      log "timed out waiting for ${proc}: '$*' did not succeed within ${limit}s"
      return 1
    fi
    sleep 0.1
  done
}

# SIGTERM, then SIGKILL after GRACE seconds (default 10). Waits for the
# process by polling, never with `wait`: the daemons are children of the
# shell that started them, and a bare `wait` there would also wait for the
# ones not yet stopped.
stop_one() { # name [grace_s]
  local f="${dir}/pids/$1.pid" grace="${2:-10}" pid i
  pid_alive "${f}" || { rm -f "${f}"; return 0; }
  pid="$(cat "${f}")"
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid}" 2>/dev/null; then
    log "$1 (pid ${pid}) ignored SIGTERM for ${grace}s; killing"
    kill -KILL "${pid}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "${f}"
}

# Stops several daemons at once; returns when all are gone.
stop_all() { # name...
  local pids=() n
  for n in "$@"; do
    stop_one "${n}" &
    pids+=($!)
  done
  ((${#pids[@]} == 0)) || wait "${pids[@]}"
}

# Starts a watchdog that runs COMMAND once process OWNER has exited: a test
# binary that dies, or that keeps the cluster in a static and so never runs a
# destructor, does not leak it.
start_watchdog() { # owner_pid command...
  local owner="$1"; shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  STOP_REASON="watchdog: owner process ${owner} exited" \
    setsid bash -c 'owner="$1"; shift; while kill -0 "${owner}" 2>/dev/null; do sleep 1; done; exec "$@"' \
    "${name}-watchdog" "${owner}" "$@" \
    > "${dir}/logs/watchdog.log" 2>&1 < /dev/null &
  echo $! > "${dir}/pids/watchdog.pid"
}

# Stops the watchdog unless we are the watchdog (it execs the stop command,
# keeping its pid).
stop_watchdog() {
  if [[ -f "${dir}/pids/watchdog.pid" && "$(cat "${dir}/pids/watchdog.pid")" != "$$" ]]; then
    stop_one watchdog 2
  fi
  rm -f "${dir}/pids/watchdog.pid"
}

# Says who stops the cluster and why, on stderr and in DIR/logs/stop.log: the
# only senders of SIGTERM to its daemons are `stop` and the start's own
# clean-up, and a log that names them leaves no signal unexplained.
log_stop_reason() {
  local why="${STOP_REASON:-}"
  if [[ -z "${why}" ]]; then
    why="requested by pid ${PPID} ($(tr '\0' ' ' < "/proc/${PPID}/cmdline" 2>/dev/null | cut -c1-200))"
  fi
  log "stopping ${dir}: ${why}"
  if [[ -d "${dir}/logs" ]]; then
    echo "$(date -u +%FT%T.%3NZ) stopping: ${why}" >> "${dir}/logs/stop.log"
  fi
}

# Prints "NAME: running (pid N)" or "NAME: not running" for each daemon; fails
# when one is not running.
daemons_status() { # name...
  local n rc=0
  for n in "$@"; do
    if pid_alive "${dir}/pids/${n}.pid"; then
      echo "${n}: running (pid $(cat "${dir}/pids/${n}.pid"))"
    else
      echo "${n}: not running"; rc=1
    fi
  done
  return "${rc}"
}

