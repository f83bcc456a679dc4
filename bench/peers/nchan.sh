#!/usr/bin/env bash
# Nchan (nginx + libnginx-mod-nchan) as a private push benchmark peer: never the system
# service, everything in DIR, listening on 127.0.0.1 only.
#
#   bench/peers/nchan.sh start DIR PORT WORKERS
#       writes DIR/nchan.conf from bench/peers/nchan.conf and runs, in the background,
#         nginx -p DIR -c DIR/nchan.conf -e DIR/error.log -g 'daemon off;'
#       waits (at most 10 s) until GET /healthz answers and WORKERS workers run, then prints
#         PIDS <master> <worker>...
#         PID master <pid>
#         PID worker <pid>            (one line per worker)
#         SUB_WS ws://127.0.0.1:PORT/sub/{ch}
#         SUB_SSE http://127.0.0.1:PORT/sub/{ch}        (Accept: text/event-stream)
#         PUBLISH http://127.0.0.1:PORT/pub/{ch} raw    (POST, the body is the message)
#       and records the PIDs in DIR/pids. Exit status 1 if it did not come up (it is then
#       stopped again).
#   bench/peers/nchan.sh stop DIR [PORT WORKERS]
#       SIGTERM to the master recorded in DIR/pids, SIGKILL to every recorded process still
#       running after 5 s. Only those PIDs are signalled.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
NGINX=${NGINX:-/usr/sbin/nginx}
MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

die() { echo "nchan.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR PORT WORKERS | stop DIR" >&2; exit 2; }

# alive PID NAME: PID runs and its command line mentions NAME (guards against PID reuse)
alive() {
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q -- "$2"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT. Needed because nchan.conf listens with
# reuseport: a second nginx would otherwise share the port with the first without an error.
port_free() {
  /usr/bin/python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

do_stop() {
  local dir=$1 master pids p i
  [[ -f $dir/pids ]] || { echo "nchan.sh: no $dir/pids; nothing to stop" >&2; return 0; }
  read -r -a pids <"$dir/pids"
  master=${pids[0]}
  if alive "$master" nginx; then kill -TERM "$master" 2>/dev/null || true; fi
  for ((i = 0; i < 50; i++)); do
    local any=0
    for p in "${pids[@]}"; do alive "$p" nginx && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    if alive "$p" nginx; then
      echo "nchan.sh: pid $p ignored SIGTERM for 5 s; killing it" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  rm -f "$dir/pids"
}

do_start() {
  local dir=$1 port=$2 workers=$3 master i w body kids=()
  [[ $port =~ ^[0-9]+$ && $workers =~ ^[1-9][0-9]*$ ]] || usage
  [[ -x $NGINX ]] || die "$NGINX not found (scripts/deps.sh bench installs nginx)"
  [[ -f $MODULE ]] || die "$MODULE not found (scripts/deps.sh bench installs libnginx-mod-nchan)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/pids ]] && alive "$(cut -d' ' -f1 "$dir/pids")" nginx; then
    die "an nchan peer already runs from $dir (stop it first)"
  fi
  port_free "$port" || die "port $port on 127.0.0.1 is in use"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$workers|g" \
    "$HERE/nchan.conf" >"$dir/nchan.conf"
  "$NGINX" -p "$dir" -c "$dir/nchan.conf" -e "$dir/error.log" -g 'daemon off;' \
    </dev/null >"$dir/stdout.log" 2>&1 &
  master=$!
  echo "$master" >"$dir/pids"
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$master" 2>/dev/null; then
      tail -n 20 "$dir/error.log" "$dir/stdout.log" >&2 2>/dev/null || true
      rm -f "$dir/pids"
      die "nginx exited during start-up"
    fi
    mapfile -t kids < <(pgrep -P "$master" || true)
    body=$(curl -s --max-time 1 "http://127.0.0.1:$port/healthz" || true)
    if [[ $body == ok && ${#kids[@]} -ge $workers ]]; then
      echo "$master ${kids[*]}" >"$dir/pids"
      echo "PIDS $master ${kids[*]}"
      echo "PID master $master"
      for w in "${kids[@]}"; do echo "PID worker $w"; done
      echo "SUB_WS ws://127.0.0.1:$port/sub/{ch}"
      echo "SUB_SSE http://127.0.0.1:$port/sub/{ch}"
      echo "PUBLISH http://127.0.0.1:$port/pub/{ch} raw"
      return 0
    fi
    sleep 0.1
  done
  echo "$master ${kids[*]}" >"$dir/pids"
  tail -n 20 "$dir/error.log" "$dir/stdout.log" >&2 2>/dev/null || true
  do_stop "$dir"
  die "nginx does not answer GET /healthz (or lacks workers) after 10 s"
}

case "${1:-}" in
  start) [[ $# -eq 4 ]] || usage; do_start "$2" "$3" "$4" ;;
  stop) [[ $# -ge 2 ]] || usage; do_stop "$2" ;;
  *) usage ;;
esac
