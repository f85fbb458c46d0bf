#!/usr/bin/env bash
# The load benchmark (`make bench-load`): the release binary as `serve --self-signed` on
# loopback, loaded by h2load (Debian's nghttp2-client) over HTTP/2 and HTTP/1.1, keep-alive,
# 8 connections, one request at a time on each.
#
# For each protocol it measures, in one run on one server, BENCH_REPEATS pairs of runs per
# body, each pair:
#   - the highest rate of `GET /healthz` (the TLS and HTTP cost alone), then
#   - the highest rate of `POST /mutate` with the body, as a ratio of the /healthz run just
#     before it;
#   - in both, the server's CPU time per request (utime + stime of /proc/PID/stat), and
#     /healthz's as a ratio of the body's: the same comparison, less moved by other
#     processes on the machine;
#   - in both, h2load's own CPU time per request (user + system, from the shell's `times`):
#     the load generator shares the machine with the server, and what it spends to send a
#     body (TLS, and the kernel's loopback, which delivers each segment in the sender's
#     time) bounds the rate as the server's time does;
#   - then the highest rate of the same body sent as `text/plain`, which the server reads
#     in full and refuses (400) before reading any of it as JSON: the transport of the body
#     alone (TLS, HTTP, the log line and the metrics, and h2load's own work to send it), as
#     a ratio of the same /healthz run. It is the most a review of that body could reach.
# Per body it prints the median of the pairs' ratios and their range, then p50 and p99
# latency of `/mutate` at half the body's median highest rate, twice (latencies from
# h2load's --log-file):
#   - in bursts, as h2load --rps sends them: its rate timer fires no more often than every
#     10 ms, and each connection sends what it released one request after another, so most
#     of the load comes within about half of each 10 ms, at the highest rate;
#   - evenly spaced, a request every 1 / RATE seconds, by benches/paced.rs (see paced):
#     the rate reached, how busy the machine's CPUs were, p50 and p99 from each request's
#     start (as h2load counts them), and p99 from each request's turn (with the wait of a
#     request whose connection still awaits the answer before). BENCH_REPEATS
#     runs, each followed by `GET /healthz` the same way: the medians, and the p99s' range;
#     and p99 of the server's own time per review in the same runs, from its log
#     (duration_ms: from the request's head, as the server read it, to its answer ready;
#     without the TLS, HTTP and kernel work around it, or a wait for a CPU before the head
#     was read, which the other p99s include).
# Beside each, the p99 of `GET /healthz` sent the same way at the same rate: what the
# machine, TLS and HTTP add to any answer at that rate (a sleeping core's wake-up, a
# neighbour's time slice), against which the review's own share of its p99 shows.
# Absolute rates move with whatever else runs on the machine, within a run too; the ratios
# of adjacent runs are the result.
#
#   hack/bench-load.sh
#
# Environment:
#   BIN               the binary (default the release binary make release builds:
#                     pgo/release/gomemlimit-injector in CARGO_TARGET_DIR, or in target)
#   BENCH_DURATION    seconds per measurement (default 5)
#   BENCH_REPEATS     pairs of runs per body (default 3)
#   BENCH_BODIES      the review bodies, in tests/data (default: pod-create.json
#                     pod-create-small.json)
#   BENCH_COMPACT     bodies also sent without indentation, as the API server sends a
#                     review (default: pod-create.json, indented in tests/data); empty for none
#   BENCH_WORKERS     the server's async worker threads (TOKIO_WORKER_THREADS; default 1, as
#                     deployed: the chart's CPU limit of 100m makes the runtime start one)
#   BENCH_LOG_LEVEL   the server's --log-level (default info, as deployed)
#   BENCH_LOG_FORMAT  the server's --log-format (default json, as the chart deploys it)
#   BENCH_OUT         where the h2load output and latency logs go (default target/bench-load)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
# shellcheck source=lib-release.sh source-path=SCRIPTDIR
source "${here}/lib-release.sh"
# shellcheck source=lib-serve.sh source-path=SCRIPTDIR
source "${here}/lib-serve.sh"
bin="${BIN:-$(release_binary)}"
duration="${BENCH_DURATION:-5}"
workers="${BENCH_WORKERS:-1}"
repeats="${BENCH_REPEATS:-3}"
read -r -a bodies <<<"${BENCH_BODIES:-pod-create.json pod-create-small.json}"
read -r -a compact <<<"${BENCH_COMPACT-pod-create.json}"
out="${BENCH_OUT:-${repo}/target/bench-load}"
clients=8
# How long each evenly spaced run goes on before its latencies count (paced), in ms.
settle_ms=500

for setting in BENCH_DURATION="${duration}" BENCH_REPEATS="${repeats}" \
  BENCH_WORKERS="${workers}"; do
  if [[ ! "${setting#*=}" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: ${setting%%=*} must be a positive whole number, not '${setting#*=}'" >&2
    exit 1
  fi
done
for tool in h2load curl python3; do
  if ! command -v "${tool}" >/dev/null 2>&1; then
    echo "error: ${tool} is required (h2load: apt-get install nghttp2-client)" >&2
    exit 1
  fi
done
if [[ ! -x "${bin}" ]]; then
  echo "error: ${bin} not found; run make release first" >&2
  exit 1
fi
mkdir -p "${out}"
rm -f "${out}"/*.log "${out}"/*.txt "${out}"/*.json "${out}"/*.times

# The evenly spaced load's generator (benches/paced.rs), built as `cargo bench` builds it.
paced_bin="$(cd "${repo}" && "${CARGO:-cargo}" bench --locked --bench paced --no-run \
  --message-format=json-render-diagnostics | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "paced" and m.get("executable"):
        print(m["executable"])')"
if [[ ! -x "${paced_bin}" ]]; then
  echo "error: benches/paced.rs did not build" >&2
  exit 1
fi

# Each body's file: tests/data/NAME, or NAME compacted into ${out} (NAME.compact.json).
body_file() {
  case "$1" in
  *.compact.json) echo "${out}/$1" ;;
  *) echo "${repo}/tests/data/$1" ;;
  esac
}
for body in "${compact[@]}"; do
  python3 -c 'import json, sys
json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"))' \
    "${repo}/tests/data/${body}" "${out}/${body%.json}.compact.json"
  bodies+=("${body%.json}.compact.json")
done

# The server picks free ports and logs them; it stops with this script.
TOKIO_WORKER_THREADS="${workers}" serve_locally "${bin}" "${out}" server \
  --log-level "${BENCH_LOG_LEVEL:-info}" --log-format "${BENCH_LOG_FORMAT:-json}"
server="${served_pid}" addr="${served_addr}"
trap 'kill "${server}" 2>/dev/null; wait "${server}" 2>/dev/null || true' EXIT

# The server's CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${server}/stat"; }
ticks_per_second="$(getconf CLK_TCK)"

# Checks the h2load run NAME: every request answered, 2xx, or 4xx when TYPE is not
# application/json; prints how many requests it made.
requests_made() {
  local name="$1" type="$2" finished answered class=2
  [[ "${type}" == application/json ]] || class=4
  finished="$(sed -nE 's/^requests: .* ([0-9]+) done.*/\1/p' "${out}/${name}.txt")"
  # `status codes: N 2xx, N 3xx, N 4xx, N 5xx`
  answered="$(sed -nE 's/^status codes: //p' "${out}/${name}.txt" | tr ',' '\n' |
    awk -v class="${class}xx" '$2 == class { print $1 }')"
  if [[ -z "${finished}" || "${finished}" == 0 || "${answered}" != "${finished}" ]]; then
    echo "error: ${name}: not every answer was ${class}xx; see ${out}/${name}.txt" >&2
    exit 1
  fi
  sed -nE 's/^requests: ([0-9]+) total.*/\1/p' "${out}/${name}.txt"
}

# run_h2load NAME PROTO BODY TYPE SECONDS [h2load options...]: h2load on the 8 connections,
# one request at a time on each, BODY (empty for none) sent as TYPE, stopped after SECONDS;
# its output in NAME.txt, its latencies added to NAME.log.
run_h2load() {
  local name="$1" proto="$2" body="$3" type="$4" seconds="$5"
  shift 5
  local args=(-c "${clients}" -m 1 -t 1 --log-file "${out}/${name}.log")
  [[ "${proto}" == h1 ]] && args+=(--h1)
  [[ -n "${body}" ]] && args+=(-d "$(body_file "${body}")" -H "content-type: ${type}")
  timeout "${seconds}" h2load "${args[@]}" "$@" >"${out}/${name}.txt"
}

# The CPU seconds (user + system) of the processes this shell waited for between the
# `times` it wrote to $1 and the one it wrote to $2 (a builtin: the count is the calling
# shell's, not a subshell's; its second line is the children's).
children_cpu() {
  awk 'function s(t, p) { split(t, p, "m"); return p[1] * 60 + p[2] }
    FNR == 2 { cpu[++n] = s($1) + s($2) } END { printf "%.6f", cpu[2] - cpu[1] }' "$1" "$2"
}

# load NAME PROTO PATH BODY TYPE [h2load options...]: one bounded run of BODY (empty for
# none) sent as TYPE (empty for application/json), checked by requests_made; prints req/s,
# the server's CPU microseconds per request and h2load's.
load() {
  local name="$1" proto="$2" path="$3" body="$4" type="${5:-application/json}"
  shift 5
  local before
  # The server's log keeps the last run's lines only: a JSON line per request, the runs
  # would fill gigabytes.
  : >"${out}/server.log"
  before="$(cpu_ticks)"
  times >"${out}/${name}.before.times"
  run_h2load "${name}" "${proto}" "${body}" "${type}" $((duration + 30)) -D "${duration}" \
    "$@" "https://${addr}${path}"
  times >"${out}/${name}.after.times"
  local ticks=$(($(cpu_ticks) - before))
  local generator
  generator="$(children_cpu "${out}/${name}.before.times" "${out}/${name}.after.times")"
  local total
  # A command substitution does not stop on an error (set -e) by itself.
  total="$(requests_made "${name}" "${type}")" || exit 1
  local rate
  rate="$(sed -nE 's/^finished in [^,]*, ([0-9.]+) req\/s.*/\1/p' "${out}/${name}.txt")"
  echo "${rate} $(awk -v t="${ticks}" -v hz="${ticks_per_second}" -v n="${total}" \
    -v g="${generator}" 'BEGIN { printf "%.1f %.1f", t / hz * 1e6 / n, g * 1e6 / n }')"
}

# paced NAME PROTO PATH BODY RATE: BODY (empty for none) to PATH evenly spaced, RATE req/s
# in all, for settle_ms and then BENCH_DURATION seconds, by benches/paced.rs: one thread
# with the 8 connections, one request at a time on each, a timerfd handing the next
# connection its turn every 1 / RATE seconds (to the microsecond). Its latencies, after
# the first settle_ms, in NAME.log (h2load's columns, then the latency from the turn).
# Prints the rate reached in them (the requests over the time from the first start to the
# last), how busy the machine's CPUs were meanwhile (%), and p99 from the turn (ms).
#
# It replaces eight h2load processes with timing scripts, one per connection: they spent 2
# to 2.5 times the CPU per request that one h2load spends at its highest rate (about 110-140
# us against 45 for the 28 KB pod), and h2load times each line from the one before, so a
# late request moved the rest of its schedule, and the wait for a turn did not show.
paced() {
  local name="$1" proto="$2" path="$3" body="$4" rate="$5"
  local args=(--addr "${addr}" --ca "${out}/ca.crt" --path "${path}" --rate "${rate}"
    --connections "${clients}" --duration "${duration}" --settle-ms "${settle_ms}"
    --log "${out}/${name}.log")
  [[ "${proto}" == h1 ]] && args+=(--http1)
  [[ -n "${body}" ]] && args+=(--body "$(body_file "${body}")")
  local before after
  : >"${out}/server.log"
  before="$(cpu_busy)"
  if ! timeout $((duration * 3 + 30)) "${paced_bin}" --bench "${args[@]}" \
    >"${out}/${name}.txt" 2>&1; then
    echo "error: ${name}: the paced run failed; see ${out}/${name}.txt" >&2
    exit 1
  fi
  after="$(cpu_busy)"
  local reached busy
  reached="$(awk 'NR == 1 || $1 < first { first = $1 } $1 > last { last = $1 }
    END { printf "%.0f", (NR - 1) / ((last - first) / 1e6) }' "${out}/${name}.log")"
  busy="$(awk -v b="${before}" -v a="${after}" 'BEGIN { split(b, x); split(a, y)
    printf "%.0f", (y[1] - x[1]) * 100 / (y[2] - x[2]) }')"
  echo "${reached} ${busy} $(percentile "${out}/${name}.log" 99 4)"
}

# The machine's busy and total CPU time so far, in clock ticks (/proc/stat: all but idle
# and iowait, and all).
cpu_busy() {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# ranked P DIVISOR NONE: percentile P (0-100) of the numbers on standard input, divided by
# DIVISOR (as read when empty), or NONE when there are none.
ranked() {
  sort -g | awk -v p="$1" -v d="$2" -v none="$3" '{ v[NR] = $1 } END {
    if (NR == 0) { print none; exit }
    i = int((NR * p + 99) / 100); if (i < 1) i = 1; print (d == "" ? v[i] : v[i] / d) }'
}

# Percentile P (0-100) of the reviews' durations in the server's log since it was last
# emptied, in milliseconds; "-" when it has none (BENCH_LOG_LEVEL above info). The log
# writer's last lines of a run may still be on their way (it writes every 10 ms).
review_percentile() {
  grep -oE 'duration_ms(=|":)[0-9.]+' "${out}/server.log" | sed -E 's/.*[=:]//' |
    ranked "$1" "" -
}

# Percentile P (0-100) of the latencies in an h2load log (microseconds; column C, default
# 3), in milliseconds.
percentile() {
  cut -f"${3:-3}" "$1" | ranked "$2" 1000 0
}

# Column C (1-based) of the lines in "$1" (the pairs, one line each: /healthz req/s and CPU,
# the body's req/s and CPU, the two ratios, the refused body's ratio, h2load's CPU for
# /healthz and for the body; or the evenly spaced runs, one line each: the rate reached,
# CPUs busy, p99 from the turn, the reviews' own p99, p50, p99, /healthz's p99): its min,
# median and max.
spread() {
  awk -v c="$2" '{ print $c }' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END {
    print v[1], (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }'
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; the server on ${workers} async worker(s); h2load -c ${clients} -m 1, ${duration} s per run, ${repeats} pairs per body"
printf '%-6s %-34s %9s %17s %12s %10s %14s %17s %11s %9s %9s %12s %13s %6s %9s %19s %12s %13s %11s\n' \
  protocol body 'req/s' 'x healthz' 'CPU us/req' 'x healthz' 'h2load us/req' 'refused x healthz' \
  'half rate' 'p50 ms' 'p99 ms' 'healthz p99' 'evenly at' 'busy %' 'p50 ms' 'p99 ms' \
  'healthz p99' 'p99 from turn' 'review p99'
for proto in h2 h1; do
  # Each run of a body follows a /healthz run of its own, and each ratio is taken within
  # its pair, so that what the machine's neighbours do between pairs does not enter it.
  declare -A pairs=()
  for ((r = 1; r <= repeats; r++)); do
    for body in "${bodies[@]}"; do
      name="${proto}-${body%.json}-${r}"
      # Assigned first, so that a failed run stops the script (set -e).
      run="$(load "${name}-healthz" "${proto}" /healthz "" "")"
      read -r healthz healthz_cpu healthz_generator <<<"${run}"
      run="$(load "${name}" "${proto}" /mutate "${body}" "")"
      read -r rate cpu generator <<<"${run}"
      run="$(load "${name}-refused" "${proto}" /mutate "${body}" text/plain)"
      read -r refused _ <<<"${run}"
      pairs["${body}"]+="$(awk -v h="${healthz}" -v hc="${healthz_cpu}" -v m="${rate}" -v mc="${cpu}" \
        -v r="${refused}" -v hg="${healthz_generator}" -v mg="${generator}" \
        'BEGIN { printf "%s %s %s %s %.4f %.4f %.4f %s %s", h, hc, m, mc, m / h, hc / mc, r / h, hg, mg }')"$'\n'
    done
  done
  all="$(printf '%s' "${pairs[@]}")"
  read -r low mid high <<<"$(spread "${all}" 1)"
  printf '%-6s %-34s %9.0f %17s %12.1f %10s %14.1f %17s   (%.0f to %.0f req/s)\n' "${proto}" \
    "GET /healthz" "${mid}" 1.00 "$(spread "${all}" 2 | cut -d' ' -f2)" 1.00 \
    "$(spread "${all}" 8 | cut -d' ' -f2)" "" "${low}" "${high}"
  for body in "${bodies[@]}"; do
    runs="${pairs[${body}]%$'\n'}"
    read -r _ max _ <<<"$(spread "${runs}" 3)"
    read -r _ cpu _ <<<"$(spread "${runs}" 4)"
    read -r low mid high <<<"$(spread "${runs}" 5)"
    read -r _ cpu_ratio _ <<<"$(spread "${runs}" 6)"
    read -r _ refused _ <<<"$(spread "${runs}" 7)"
    read -r _ generator _ <<<"$(spread "${runs}" 9)"
    name="${proto}-${body%.json}"
    per_client="$(awk -v r="${max}" -v c="${clients}" 'BEGIN { n = int(r / 2 / c); print (n < 1 ? 1 : n) }')"
    half=$((per_client * clients))
    load "${name}-half" "${proto}" /mutate "${body}" "" --rps "${per_client}" >/dev/null
    load "${name}-half-healthz" "${proto}" /healthz "" "" --rps "${per_client}" >/dev/null
    # Evenly spaced, BENCH_REPEATS pairs: the body, then /healthz at the same rate; per pair
    # the rate reached, CPUs busy, p99 from the turn, the reviews' own p99, p50, p99 and
    # /healthz's p99.
    evens=""
    for ((r = 1; r <= repeats; r++)); do
      even="$(paced "${name}-even-${r}" "${proto}" /mutate "${body}" "${half}")"
      even+=" $(review_percentile 99)"
      paced "${name}-even-healthz-${r}" "${proto}" /healthz "" "${half}" >/dev/null
      evens+="${even} $(percentile "${out}/${name}-even-${r}.log" 50)"
      evens+=" $(percentile "${out}/${name}-even-${r}.log" 99)"
      evens+=" $(percentile "${out}/${name}-even-healthz-${r}.log" 99)"$'\n'
    done
    evens="${evens%$'\n'}"
    read -r _ even _ <<<"$(spread "${evens}" 1)"
    read -r _ even_busy _ <<<"$(spread "${evens}" 2)"
    read -r _ even_turn _ <<<"$(spread "${evens}" 3)"
    read -r _ even_review _ <<<"$(spread "${evens}" 4)"
    read -r _ even_p50 _ <<<"$(spread "${evens}" 5)"
    read -r even_low even_p99 even_high <<<"$(spread "${evens}" 6)"
    read -r _ even_healthz _ <<<"$(spread "${evens}" 7)"
    size="$(stat -c %s "$(body_file "${body}")")"
    printf '%-6s %-34s %9.0f %17s %12.1f %10.2f %14.1f %17.2f %11s %9.3f %9.3f %12.3f %11.0f/s %6.0f %9.3f %19s %12.3f %13.3f %11s\n' \
      "${proto}" \
      "${body} ($(((size + 500) / 1000)) kB)" "${max}" \
      "$(awk -v l="${low}" -v m="${mid}" -v h="${high}" 'BEGIN { printf "%.2f [%.2f-%.2f]", m, l, h }')" \
      "${cpu}" "${cpu_ratio}" "${generator}" "${refused}" "${half}/s" \
      "$(percentile "${out}/${name}-half.log" 50)" "$(percentile "${out}/${name}-half.log" 99)" \
      "$(percentile "${out}/${name}-half-healthz.log" 99)" "${even}" "${even_busy}" \
      "${even_p50}" \
      "$(awk -v l="${even_low}" -v m="${even_p99}" -v h="${even_high}" \
        'BEGIN { printf "%.3f [%.2f-%.2f]", m, l, h }')" "${even_healthz}" "${even_turn}" \
      "${even_review}"
  done
  unset pairs
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
