#!/usr/bin/env bash
# Pushpin (Debian's pushpin package) as a private push benchmark peer: never the system
# service, its own configuration, run and log directories in DIR, everything on 127.0.0.1.
#
#   bench/peers/pushpin.sh start DIR PORT WORKERS
#       writes DIR/pushpin.conf, DIR/routes and DIR/condure (a wrapper adding
#       --workers=WORKERS), starts bench/peers/grip_backend.py on BACKEND_PORT and
#         pushpin --config DIR/pushpin.conf
#       (the runner, which starts condure, zurl, pushpin-proxy and pushpin-handler), waits
#       (at most 15 s) until GET /healthz answers through Pushpin and the publish API
#       answers, then prints
#         PIDS <runner> <condure> <zurl> <pushpin-proxy> <pushpin-handler> <grip_backend>
#         PID <name> <pid>                    (one line each, names as above)
#         SUB_WS ws://127.0.0.1:PORT/sub/{ch}
#         SUB_SSE http://127.0.0.1:PORT/sub/{ch}        (Accept: text/event-stream)
#         PUBLISH http://127.0.0.1:CONTROL_PORT/publish/
#       and records "pid name" lines in DIR/pids. Exit status 1 if it did not come up (what
#       was started is stopped again).
#   bench/peers/pushpin.sh stop DIR [PORT WORKERS]
#       SIGTERM to the runner (which stops its services) and to the GRIP backend, SIGKILL to
#       any recorded process still running after 5 s. Only recorded PIDs are signalled.
#
# Environment: CONTROL_PORT (default PORT+1): Pushpin's HTTP publish API (upstream default
# 5561); BACKEND_PORT (default PORT+2): the GRIP backend. Both on 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3

die() { echo "pushpin.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR PORT WORKERS | stop DIR" >&2; exit 2; }

# alive PID NAME: PID runs and its command line mentions NAME (guards against PID reuse)
alive() {
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q -- "$2"
}

port_free() {
  "$PY" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

do_stop() {
  local dir=$1 pid name i n any
  local -a pids=() names=()
  [[ -f $dir/pids ]] || { echo "pushpin.sh: no $dir/pids; nothing to stop" >&2; return 0; }
  while read -r pid name; do
    pids+=("$pid")
    names+=("$name")
  done <"$dir/pids"
  # the runner first (it stops condure, zurl, proxy and handler), then the backend
  for i in "${!pids[@]}"; do
    case ${names[$i]} in
      pushpin | grip_backend)
        if alive "${pids[$i]}" "${names[$i]}"; then kill -TERM "${pids[$i]}" 2>/dev/null || true; fi ;;
    esac
  done
  for ((n = 0; n < 50; n++)); do
    any=0
    for i in "${!pids[@]}"; do alive "${pids[$i]}" "${names[$i]}" && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if alive "${pids[$i]}" "${names[$i]}"; then
      echo "pushpin.sh: ${names[$i]} (pid ${pids[$i]}) still runs 5 s after SIGTERM; killing it" >&2
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  rm -f "$dir/pids"
}

write_config() {
  local dir=$1 port=$2 cport=$3 bport=$4 workers=$5
  mkdir -p "$dir/run" "$dir/log"
  # Every request goes to the GRIP backend; WebSocket connections as WebSocket-over-HTTP.
  echo "* 127.0.0.1:$bport,over_http" >"$dir/routes"
  # The runner gives condure no --workers (condure's default is 2): this wrapper sets it
  # to WORKERS, as tidegate's --io-threads and nginx's worker_processes. exec keeps the PID.
  cat >"$dir/condure" <<EOF
#!/bin/sh
exec /usr/bin/condure --workers=$workers "\$@"
EOF
  chmod +x "$dir/condure"
  cat >"$dir/pushpin.conf" <<EOF
# Private Pushpin for tidegate's push benchmarks (written by bench/peers/pushpin.sh).
# Debian's /etc/pushpin/pushpin.conf (Pushpin 1.36 defaults) with these deviations:
#  - rundir, logdir, routes and every ZeroMQ endpoint inside $dir (ipc sockets; the
#    handler's tcp ports 5560/5562/5563 become ipc), so nothing is shared with a system
#    instance or another peer; http_port and the publish API on 127.0.0.1 only;
#  - zurl is started by this runner (Debian's internal.conf points pushpin-proxy at a
#    system zurl service in /var/run/zurl; that service is not used);
#  - log_level=1 (warnings): level 2 logs every request, like an access log, which the
#    other servers have off;
#  - stats off: no stats_spec for proxy and handler (no ZeroMQ stats publishing);
#  - message_rate=0 and message_hwm=0 (unlimited; defaults 2500 and 25000). The handler
#    counts one action per subscriber delivery, so 10,000 subscribers x 100 msg/s is
#    1,000,000 actions/s: the default rate would spread each message over 4 s and the
#    high-water mark would then drop deliveries;
#  - condure --workers=$workers (the runner passes none; condure's default is 2).
# Kept: client_maxconn=50000 (>= 20,000 connections), client_buffer_size=8192,
# connection_subscription_max=20 (one channel per connection here).
[global]
include=/usr/lib/pushpin/internal.conf
rundir=$dir/run
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:$port
logdir=$dir/log
log_level=1
client_buffer_size=8192
client_maxconn=50000
condure_bin=$dir/condure
zurl_bin=/usr/bin/zurl
mongrel2_bin=mongrel2
m2sh_bin=m2sh

[proxy]
routesfile=routes
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=changeme
upstream_key=
updates_check=off
organization_name=
stats_spec=
zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in
zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream
zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out

[handler]
push_in_spec=ipc://{rundir}/{ipc_prefix}push-in
push_in_sub_specs=ipc://{rundir}/{ipc_prefix}push-in-sub
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port=$cport
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=
proxy_stats_spec=
command_spec=ipc://{rundir}/{ipc_prefix}handler-command
message_rate=0
message_hwm=0
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
EOF
}

do_start() {
  local dir=$1 port=$2 workers=$3 cport bport runner backend i body pub pid name
  local -a kids=()
  [[ $port =~ ^[0-9]+$ && $workers =~ ^[1-9][0-9]*$ ]] || usage
  cport=${CONTROL_PORT:-$((port + 1))}
  bport=${BACKEND_PORT:-$((port + 2))}
  for tool in pushpin condure zurl pushpin-proxy pushpin-handler curl "$PY"; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh bench installs it)"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/pids ]]; then
    while read -r pid name; do
      alive "$pid" "$name" && die "a pushpin peer already runs from $dir (stop it first)"
    done <"$dir/pids"
  fi
  # ZeroMQ ipc paths must fit a sockaddr_un (108 bytes)
  ((${#dir} <= 60)) || die "DIR path too long for ZeroMQ ipc sockets (at most 60 characters): $dir"
  for i in "$port" "$cport" "$bport"; do
    port_free "$i" || die "port $i on 127.0.0.1 is in use"
  done
  write_config "$dir" "$port" "$cport" "$bport" "$workers"

  "$PY" "$HERE/grip_backend.py" --port "$bport" </dev/null >"$dir/grip_backend.log" 2>&1 &
  backend=$!
  echo "$backend grip_backend" >"$dir/pids"
  pushpin --config "$dir/pushpin.conf" </dev/null >"$dir/pushpin.log" 2>&1 &
  runner=$!
  echo "$runner pushpin" >>"$dir/pids"

  for ((i = 0; i < 150; i++)); do
    if ! kill -0 "$runner" 2>/dev/null || ! kill -0 "$backend" 2>/dev/null; then
      tail -n 20 "$dir/pushpin.log" "$dir/grip_backend.log" "$dir"/log/*.log >&2 2>/dev/null || true
      do_stop "$dir"
      die "pushpin or the GRIP backend exited during start-up"
    fi
    mapfile -t kids < <(pgrep -P "$runner" || true)
    body=$(curl -s --max-time 1 "http://127.0.0.1:$port/healthz" || true)
    pub=$(curl -s --max-time 1 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
      --data '{"items":[]}' "http://127.0.0.1:$cport/publish/" || true)
    if [[ $body == ok && $pub == 200 && ${#kids[@]} -ge 4 ]]; then
      break
    fi
    sleep 0.1
  done
  # record the runner's services by name (condure runs as the wrapper's exec)
  : >"$dir/pids.new"
  echo "$runner pushpin" >>"$dir/pids.new"
  for name in condure zurl pushpin-proxy pushpin-handler; do
    for pid in "${kids[@]}"; do
      if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${name:0:15}" ]]; then
        echo "$pid $name" >>"$dir/pids.new"
      fi
    done
  done
  echo "$backend grip_backend" >>"$dir/pids.new"
  mv "$dir/pids.new" "$dir/pids"
  if ! [[ $body == ok && $pub == 200 && $(wc -l <"$dir/pids") -eq 6 ]]; then
    tail -n 20 "$dir/pushpin.log" "$dir/grip_backend.log" "$dir"/log/*.log >&2 2>/dev/null || true
    do_stop "$dir"
    die "pushpin not ready after 15 s (healthz '$body', publish API $pub, services ${#kids[@]})"
  fi
  echo "PIDS $(cut -d' ' -f1 "$dir/pids" | tr '\n' ' ' | sed 's/ $//')"
  while read -r pid name; do echo "PID $name $pid"; done <"$dir/pids"
  echo "SUB_WS ws://127.0.0.1:$port/sub/{ch}"
  echo "SUB_SSE http://127.0.0.1:$port/sub/{ch}"
  echo "PUBLISH http://127.0.0.1:$cport/publish/"
}

case "${1:-}" in
  start) [[ $# -eq 4 ]] || usage; do_start "$2" "$3" "$4" ;;
  stop) [[ $# -ge 2 ]] || usage; do_stop "$2" ;;
  *) usage ;;
esac
