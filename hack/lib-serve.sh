# shellcheck shell=bash
# Shared by release.sh (its training runs) and bench-load.sh (sourced, not run): the webhook
# started as `serve --self-signed` on loopback.

# serve_locally BIN DIR NAME [serve options...]: BIN as `serve --self-signed` on free ports
# of 127.0.0.1, its CA written to DIR/ca.crt and its log appended to DIR/NAME.log, made
# empty first (appended, so that the caller may empty it while the server runs). Returns
# once it has logged its addresses and answers /readyz, its process in served_pid, its
# addresses in served_addr (the reviews, HTTPS) and served_metrics (metrics and probes); the
# caller stops it. When it does not start, stops it and the script, with its log.
serve_locally() {
  local bin="$1" dir="$2" name="$3" line
  shift 3
  : >"${dir}/${name}.log"
  "${bin}" serve --self-signed --ca-out "${dir}/ca.crt" \
    --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --shutdown-delay 0s "$@" \
    2>>"${dir}/${name}.log" &
  served_pid=$!
  served_addr="" served_metrics=""
  for _ in $(seq 100); do
    # `local_addr=ADDR` in a text line, `"local_addr":"ADDR"` in a JSON one.
    line="$(grep -m1 'local_addr' "${dir}/${name}.log" || true)"
    if [[ -n "${line}" ]]; then
      served_addr="$(sed -E 's/.*local_addr(=|":")([0-9.:]+).*/\2/' <<<"${line}")"
      served_metrics="$(sed -E 's/.*metrics_addr(=|":")([0-9.:]+).*/\2/' <<<"${line}")"
      break
    fi
    sleep 0.1
  done
  if [[ -z "${served_addr}" ]] ||
    ! curl -sf --noproxy '*' "http://${served_metrics}/readyz" >/dev/null; then
    kill "${served_pid}" 2>/dev/null || true
    echo "error: ${bin} did not start serving; its log (${dir}/${name}.log):" >&2
    cat "${dir}/${name}.log" >&2
    exit 1
  fi
}
