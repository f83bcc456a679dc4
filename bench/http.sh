#!/usr/bin/env bash
# HTTP benchmark: tidegate against nginx (peer), same machine, loopback only.
#
#   1. memory per idle HTTP/1.1 keep-alive connection (10,000 of them),
#   2. wrk -t1 -cC -dDURATION --latency on GET /healthz, C in 50 and 1000:
#      requests/s, p99 latency, and server CPU per request.
#
# Runs from any directory (it cds to the repository root), after building build/release/tidegate
# (`make bench` does both). Environment:
#   IO_THREADS=2      tidegate --io-threads and nginx worker_processes
#   DURATION=10s      wrk duration per run (plain seconds or wrk units: 10s, 1m)
#   WARMUP=1s         unmeasured wrk run before each measured one (0 = none)
#   CONNS="50 1000"   wrk connection counts
#   IDLE_CONNS=10000  idle connections for the memory figure (0 = skip)
#   SERVERS="tidegate nginx"  which servers to run
#   TIDEGATE=build/release/tidegate  binary to run
#   KEEP_WRK=DIR      copy the raw wrk outputs into DIR
# Exit status: 0 if every server ran every measurement, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
TIDEGATE=${TIDEGATE:-$ROOT/build/release/tidegate}
IO_THREADS=${IO_THREADS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-50 1000}
IDLE_CONNS=${IDLE_CONNS:-10000}
SERVERS=${SERVERS:-tidegate nginx}
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s
[[ $WARMUP =~ ^[0-9]+$ ]] && WARMUP=${WARMUP}s

die() { echo "bench/http.sh: $*" >&2; exit 1; }
note() { echo "bench/http.sh: $*" >&2; }

for tool in wrk nginx curl pgrep timeout "$PY"; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh bench installs it)"
done
[[ $IO_THREADS =~ ^[1-9][0-9]*$ ]] || die "IO_THREADS must be a positive integer"

# seconds in a wrk duration (10s, 2m, 1h, 10)
secs() {
  local d=$1
  case $d in
    *h) echo $((${d%h} * 3600)) ;;
    *m) echo $((${d%m} * 60)) ;;
    *s) echo "${d%s}" ;;
    *) echo "$d" ;;
  esac
}
secs "$DURATION" | grep -qE '^[0-9]+$' || die "bad DURATION $DURATION"
secs "$WARMUP" | grep -qE '^[0-9]+$' || die "bad WARMUP $WARMUP"

TMP=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
declare -A PID=()   # server name -> PID we started (nginx: the master)
declare -A PORT=()
declare -A BROKEN=()  # server name -> reason it stopped being measured
declare -A FLAWED=()  # server name -> measured, but with failed requests

CHILD=""           # load client running now (wrk or idle_conns.py, under timeout)

# run_bg OUT CMD...: run CMD in the background with stdout to OUT, and wait for it;
# waiting this way lets INT/TERM interrupt the script at once.
run_bg() {
  local out=$1 rc=0
  shift
  "$@" >"$out" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$? name pid kids i
  trap - EXIT INT TERM
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true # timeout passes it on to its command
    wait "$CHILD" 2>/dev/null || true
  fi
  for name in "${!PID[@]}"; do
    pid=${PID[$name]}
    kill -0 "$pid" 2>/dev/null || continue
    kids=$(pgrep -P "$pid" || true)   # nginx workers of our master only
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      note "$name (pid $pid) ignored SIGTERM for 5 s; killing it"
      # its children (nginx workers) were listed while it was alive
      for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_up NAME: until GET /healthz answers "ok", at most 10 s
wait_up() {
  local name=$1 i body
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      note "$name exited during start-up"
      return 1
    fi
    body=$(curl -s --max-time 1 "http://127.0.0.1:${PORT[$name]}/healthz" || true)
    [[ $body == ok ]] && return 0
    sleep 0.1
  done
  note "$name does not answer GET /healthz with ok after 10 s"
  return 1
}

start_tidegate() {
  [[ -x $TIDEGATE ]] || { note "$TIDEGATE not built"; return 1; }
  PORT[tidegate]=$(free_port)
  "$TIDEGATE" --listen "127.0.0.1:${PORT[tidegate]}" --io-threads "$IO_THREADS" \
    --log-level warn >"$TMP/tidegate.log" 2>&1 &
  PID[tidegate]=$!
  wait_up tidegate || { tail -n 20 "$TMP/tidegate.log" >&2; return 1; }
}

start_nginx() {
  local dir=$TMP/nginx
  mkdir -p "$dir"
  PORT[nginx]=$(free_port)
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|${PORT[nginx]}|g" -e "s|@WORKERS@|$IO_THREADS|g" \
    bench/peers/nginx-http.conf >"$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' \
    >"$dir/stdout.log" 2>&1 &
  PID[nginx]=$!
  wait_up nginx || { tail -n 20 "$dir/error.log" "$dir/stdout.log" >&2; return 1; }
}

# PIDs whose memory and CPU count for a server: tidegate is one process;
# nginx is the master and its workers.
server_pids() {
  local pid=${PID[$1]}
  echo "$pid"
  if [[ $1 == nginx ]]; then pgrep -P "$pid" || true; fi
}

# mem_bytes MODE PID...: sum of VmRSS (MODE=rss) or of Pss from smaps_rollup
# (MODE=pss), in bytes. Exported: idle_conns.py runs it while holding.
mem_bytes() {
  local mode=$1 pid kb total=0
  shift
  for pid in "$@"; do
    if [[ $mode == rss ]]; then
      kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    else
      kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")
    fi
    total=$((total + kb))
  done
  echo $((total * 1024))
}
export -f mem_bytes

# cpu_ticks PID...: utime + stime (clock ticks), all threads
cpu_ticks() {
  local pid total=0 f
  for pid in "$@"; do
    # fields after "(comm)": state is $1, utime is $12, stime is $13
    f=$(sed 's/^.*) //' "/proc/$pid/stat")
    total=$((total + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

declare -A R=()   # results: R[name,key]

# idle_memory NAME: bytes per idle keep-alive connection -> R[name,mem]
idle_memory() {
  local name=$1 mode stats=() pids before after out held
  if [[ $name == tidegate ]]; then mode=rss; stats=(--stats /stats); else mode=pss; fi
  # warm the server (first request, lazy initialisation) before the baseline
  curl -s --max-time 2 -o /dev/null "http://127.0.0.1:${PORT[$name]}/healthz" || true
  [[ $name == tidegate ]] &&
    { curl -s --max-time 2 -o /dev/null "http://127.0.0.1:${PORT[$name]}/stats" || true; }
  sleep 0.2
  mapfile -t pids < <(server_pids "$name")
  before=$(mem_bytes "$mode" "${pids[@]}")
  if ! run_bg "$TMP/idle-$name.txt" timeout 300 "$PY" bench/idle_conns.py "${stats[@]}" \
    --timeout 120 127.0.0.1 "${PORT[$name]}" "$IDLE_CONNS" -- \
    bash -c 'mem_bytes "$@"' _ "$mode" "${pids[@]}"; then
    note "$name: idle-connection test failed"
    return 1
  fi
  out=$(<"$TMP/idle-$name.txt")
  after=${out##*$'\n'}
  [[ $after =~ ^[0-9]+$ ]] || { note "$name: no memory figure ($out)"; return 1; }
  held=$IDLE_CONNS
  R[$name,mem]=$(((after - before) / held))
  R[$name,mem_before]=$before
  R[$name,mem_after]=$after
  note "$name: $mode $before -> $after bytes with $held idle connections"
  # let the server reap the closed connections before the load runs
  sleep 1
}

# run_wrk NAME CONNS: -> R[name,rps,C] R[name,p99,C] (ms) R[name,cpu,C] (us/req)
run_wrk() {
  local name=$1 c=$2 url out pids t0 t1 rps p99 errs limit
  url="http://127.0.0.1:${PORT[$name]}/healthz"
  if [[ $(secs "$WARMUP") -gt 0 ]]; then
    run_bg /dev/null timeout $(($(secs "$WARMUP") + 30)) wrk -t1 -c"$c" -d"$WARMUP" "$url" || true
  fi
  mapfile -t pids < <(server_pids "$name")
  limit=$(($(secs "$DURATION") + 60))
  t0=$(cpu_ticks "${pids[@]}")
  if ! run_bg "$TMP/wrk-$name-$c.txt" timeout "$limit" wrk -t1 -c"$c" -d"$DURATION" --latency "$url"; then
    note "$name: wrk -c$c failed or overran ${limit}s"
    cat "$TMP/wrk-$name-$c.txt" >&2
    return 1
  fi
  kill -0 "${PID[$name]}" 2>/dev/null || { note "$name died under load"; return 1; }
  t1=$(cpu_ticks "${pids[@]}")
  out=$(<"$TMP/wrk-$name-$c.txt")
  [[ -z ${KEEP_WRK:-} ]] || cp "$TMP/wrk-$name-$c.txt" "$KEEP_WRK/"
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  # "    99%  1.23ms": convert us/ms/s to milliseconds
  p99=$(awk '$1 == "99%" {
      v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
      m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
      if (m > 0) printf "%.3f", v * m }' <<<"$out")
  errs=$(awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
              /Non-2xx or 3xx responses:/ { n += $NF }
              END { print n + 0 }' <<<"$out")
  [[ -n $rps && -n $p99 ]] || { note "$name: cannot parse wrk output"; echo "$out" >&2; return 1; }
  R[$name,rps,$c]=$rps
  R[$name,p99,$c]=$p99
  R[$name,err,$c]=$errs
  # CPU per request: server ticks over the run / requests completed
  R[$name,cpu,$c]=$(awk -v t=$((t1 - t0)) -v hz="$HZ" \
    '/ requests in / { n = $1 } END { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "-" }' <<<"$out")
  if ((errs > 0)); then
    note "$name -c$c: $errs socket errors or non-2xx responses"
    FLAWED[$name]+=" wrk -c$c had $errs errors;"
  fi
  note "$name -c$c: $rps req/s, p99 $p99 ms, $errs errors"
}

# --- run ------------------------------------------------------------------
# Other load on the box skews every figure: record it so a reader can tell.
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
note "tidegate vs nginx: io-threads/workers $IO_THREADS, wrk -t1 -d$DURATION, conns $CONNS, idle $IDLE_CONNS"
for name in $SERVERS; do
  case $name in
    tidegate) start_tidegate || BROKEN[tidegate]="did not start" ;;
    nginx) start_nginx || BROKEN[nginx]="did not start" ;;
    *) die "unknown server $name" ;;
  esac
done

# Memory first, on servers that have not yet seen the load (their allocators
# would otherwise reuse memory freed by wrk's connections).
if ((IDLE_CONNS > 0)); then
  for name in $SERVERS; do
    [[ -z ${BROKEN[$name]:-} ]] || continue
    idle_memory "$name" || BROKEN[$name]="idle-connection test failed"
    kill -0 "${PID[$name]}" 2>/dev/null || BROKEN[$name]="died"
  done
fi

for c in $CONNS; do
  for name in $SERVERS; do
    [[ -z ${BROKEN[$name]:-} ]] || continue
    run_wrk "$name" "$c" || BROKEN[$name]="wrk -c$c failed"
  done
done

# --- report ---------------------------------------------------------------
get() { echo "${R[$1]:--}"; }
ratio() { # tidegate/nginx
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
{
  echo
  echo "HTTP GET /healthz, loopback, $(nproc) cores; io-threads = nginx workers = $IO_THREADS;"
  echo "wrk -t1 -d$DURATION --latency; CPU = server user+sys time per request;"
  echo "load average before the run: $LOADAVG (should be near 0: other load skews the figures)"
  printf '%-6s %-14s %12s %12s %9s\n' conns figure tidegate nginx ratio
  for c in $CONNS; do
    for fig in rps p99 cpu; do
      case $fig in rps) label="req/s" ;; p99) label="p99 ms" ;; cpu) label="cpu us/req" ;; esac
      t=$(get "tidegate,$fig,$c")
      n=$(get "nginx,$fig,$c")
      printf '%-6s %-14s %12s %12s %9s\n' "$c" "$label" "$t" "$n" "$(ratio "$t" "$n")"
    done
  done
  if ((IDLE_CONNS > 0)); then
    t=$(get tidegate,mem)
    n=$(get nginx,mem)
    printf '%-6s %-14s %12s %12s %9s\n' "$IDLE_CONNS" "B/idle conn" "$t" "$n" "$(ratio "$t" "$n")"
    echo "(idle memory: tidegate VmRSS delta, nginx Pss delta over master+workers, user space only)"
  fi
  echo
  for c in $CONNS; do
    for fig in rps p99 cpu; do
      t=$(get "tidegate,$fig,$c")
      n=$(get "nginx,$fig,$c")
      echo "RESULT http conns=$c figure=$fig tidegate=$t nginx=$n ratio=$(ratio "$t" "$n")" \
        "errors_tidegate=$(get "tidegate,err,$c") errors_nginx=$(get "nginx,err,$c")"
    done
  done
  if ((IDLE_CONNS > 0)); then
    t=$(get tidegate,mem)
    n=$(get nginx,mem)
    echo "RESULT http conns=$IDLE_CONNS figure=idle_bytes_per_conn tidegate=$t nginx=$n ratio=$(ratio "$t" "$n")"
  fi
}

status=0
for name in $SERVERS; do
  if [[ -n ${BROKEN[$name]:-} ]]; then
    note "$name ${BROKEN[$name]}; its figures are missing"
    status=1
  fi
  if [[ -n ${FLAWED[$name]:-} ]]; then
    note "$name:${FLAWED[$name]} its figures are suspect"
    status=1
  fi
done
exit "$status"
