#!/usr/bin/env bash
# Gate benchmark: the request path through tidegate to a backend, against nginx
# proxying to an equivalent backend. Same machine, loopback only.
#
#   tidegate side: wrk -> build/release/tidegate (--io-threads 2, route.echo.http = /echo/)
#                  -> backend link -> build/release/examples/echo (libtidegate-backend,
#                  the framed backend protocol, --capacity 1024)
#   nginx side:    wrk -> /usr/sbin/nginx (worker_processes 2, proxy_pass to an upstream
#                  with keepalive 64, HTTP/1.1) -> build/release/echo-http (tools/echo-http.c:
#                  HTTP/1.1 on tidegate's own loop and HTTP layer)
#
# Both backends answer every request 200 with its body and content-type, each on
# one thread running the same loop code (src/core), so what differs is the proxy
# and the hop behind it (one framed link against kept-alive HTTP connections).
#
#   1. Throughput: GET /echo/ (no body) and POST /echo/ with a BODY_SIZE-byte JSON
#      body, wrk -t1 -cCONNS -dDURATION --latency; ROUNDS rounds, each running
#      tidegate then nginx for GET, then for POST. Printed per round and as medians:
#      requests/s, p99 latency, and the CPU per request of the proxy (tidegate;
#      nginx master + workers) and, separately, of the backend process.
#   2. kill -9 of one of two backends under load: a fresh tidegate with two
#      examples/echo backends (round-robin), wrk -t1 -cKILL_CONNS -dDURATION on
#      GET /echo/, one backend killed by PID at KILL_AT seconds (and not restarted).
#      Printed: requests/s (wrk's, and the gate's replies per second from /stats),
#      4xx/5xx responses and socket errors wrk saw (the goal is 0), the jobs in flight
#      on the gate just before the kill and the jobs it resubmitted. examples/echo
#      answers at once, so a plain kill -9 often finds no job on that backend;
#      FREEZE_MS=100 stops it first so that jobs are surely caught in flight.
#
#   3. Reply cache (PARTS=cache, not run by default): a fresh tidegate whose route
#      "cached" (/cached/) keeps replies CACHE_TTL, beside the uncached /echo/, one
#      examples/echo serving both; nginx with proxy_cache (+ proxy_cache_lock) on
#      /cached/ and plain proxy_pass on /echo/, in front of echo-http. wrk GET on
#      each path, each proxy; printed: requests/s, p99 and the requests that reached
#      the backend during the run (tidegate: gate replies from /stats; nginx: its
#      log of responses that were not cache hits).
#
# No process is pinned: every one shares the box's cores (2 here) with wrk's one
# thread, which is why CPU per request is printed next to requests/s.
#
# Runs from any directory (it cds to the repository root), after
# `make VARIANT=release build` (`make bench` does both). Environment:
#   IO_THREADS=2      tidegate --io-threads and nginx worker_processes
#   ROUNDS=3          rounds of part 1
#   DURATION=10s      wrk duration per run (plain seconds or wrk units: 10s, 1m)
#   WARMUP=1s         unmeasured wrk run before each measured one (0 = none)
#   CONNS=100         wrk connections in part 1
#   KILL_CONNS=200    wrk connections in part 2 (many, so jobs are in flight at the kill)
#   KILL_AT=          seconds into part 2's run for the kill (default: half, rounded up)
#   FREEZE_MS=0       part 2: SIGSTOP the backend this long before the SIGKILL, so that
#                     jobs are surely in flight on it (0: a plain kill -9; with a backend as
#                     quick as examples/echo it often holds no job at that instant)
#   BODY_SIZE=1024    POST body bytes (at least 64)
#   LZ4_MIN=          tidegate gate.lz4_min (empty: its default, 128; 0: never compress)
#   PARTS="compare kill"  which parts to run (compare, kill, cache)
#   CACHE_TTL=10s     part 3: how long a reply is kept (tidegate route.cached.cache,
#                     nginx proxy_cache_valid 200)
#   TIDEGATE, ECHO_BACKEND, ECHO_HTTP  the binaries (default build/release/...)
#   KEEP_WRK=DIR      copy the raw wrk outputs into DIR
# Exit status: 0 if every run was measured without a failed request, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
TIDEGATE=${TIDEGATE:-$ROOT/build/release/tidegate}
ECHO_BACKEND=${ECHO_BACKEND:-$ROOT/build/release/examples/echo}
ECHO_HTTP=${ECHO_HTTP:-$ROOT/build/release/echo-http}
IO_THREADS=${IO_THREADS:-2}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-100}
KILL_CONNS=${KILL_CONNS:-200}
KILL_AT=${KILL_AT:-}
FREEZE_MS=${FREEZE_MS:-0}
BODY_SIZE=${BODY_SIZE:-1024}
LZ4_MIN=${LZ4_MIN:-}
PARTS=${PARTS:-compare kill}
CACHE_TTL=${CACHE_TTL:-10s}
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s
[[ $WARMUP =~ ^[0-9]+$ ]] && WARMUP=${WARMUP}s

die() { echo "bench/gate.sh: $*" >&2; exit 1; }
note() { echo "bench/gate.sh: $*" >&2; }

for tool in wrk nginx curl pgrep timeout "$PY"; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh bench installs it)"
done
[[ $FREEZE_MS =~ ^[0-9]+$ ]] || die "FREEZE_MS must be a number of milliseconds"
for n in IO_THREADS ROUNDS CONNS KILL_CONNS; do
  [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer"
done
if ! [[ $BODY_SIZE =~ ^[0-9]+$ ]] || ((BODY_SIZE < 64)); then die "BODY_SIZE must be at least 64"; fi
[[ -z $LZ4_MIN || $LZ4_MIN =~ ^[0-9]+$ ]] || die "LZ4_MIN must be a number of bytes"
[[ $CACHE_TTL =~ ^[1-9][0-9]*(ms|s|m|h)$ ]] || die "CACHE_TTL must be a duration such as 10s"
for p in $PARTS; do
  [[ $p == compare || $p == kill || $p == cache ]] || die "unknown part $p (compare, kill, cache)"
done

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
secs "$DURATION" | grep -qE '^[1-9][0-9]*$' || die "bad DURATION $DURATION"
secs "$WARMUP" | grep -qE '^[0-9]+$' || die "bad WARMUP $WARMUP"
DUR_S=$(secs "$DURATION")
KILL_AT=${KILL_AT:-$(((DUR_S + 1) / 2))}
if ! [[ $KILL_AT =~ ^[1-9][0-9]*$ ]] || ((KILL_AT >= DUR_S)); then
  die "KILL_AT must be 1 to DURATION - 1 seconds"
fi

for bin in "$TIDEGATE" "$ECHO_BACKEND" "$ECHO_HTTP"; do
  [[ -x $bin ]] || die "$bin not built (make VARIANT=release build)"
done

TMP=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
declare -A PID=()    # process name -> PID we started (nginx: the master)
declare -A PORT=()   # process name -> port it listens on
declare -A BPORT=()  # tidegate instance -> its backend listener's port
STARTED=()           # names in start order: stopped in reverse
declare -A BROKEN=() # side (tidegate, nginx, kill) -> why it stopped being measured
declare -A FLAWED=() # side -> measured, but with failed requests

CHILD="" # load client running now (wrk under timeout)

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

# stop_pid NAME: SIGTERM, 5 s, then SIGKILL (and, for nginx, the workers of our master)
stop_pid() {
  local name=$1 pid=${PID[$1]:-} kids i
  [[ -n $pid ]] || return 0
  unset "PID[$name]"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kids=$(pgrep -P "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  kill -CONT "$pid" 2>/dev/null || true # a backend frozen by part 2 takes its SIGTERM
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    note "$name (pid $pid) ignored SIGTERM for 5 s; killing it"
    for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true # timeout passes it on to wrk
    wait "$CHILD" 2>/dev/null || true
  fi
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED[i]}"
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

# spawn NAME LOG CMD...: start CMD in the background, record its PID
spawn() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  PID[$name]=$!
  STARTED+=("$name")
}

# wait_for NAME WHAT CMD...: until CMD succeeds, at most 10 s, while NAME lives
wait_for() {
  local name=$1 what=$2 i
  shift 2
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      note "$name exited during start-up"
      return 1
    fi
    "$@" && return 0
    sleep 0.1
  done
  note "$name: no $what after 10 s"
  return 1
}

# shellcheck disable=SC2317  # the probes below are invoked through wait_for
http_is() { # URL EXPECTED-BODY
  [[ $(curl -s --max-time 1 "$1" || true) == "$2" ]]
}
# shellcheck disable=SC2317
http_200() { # URL
  [[ $(curl -s --max-time 1 -o /dev/null -w '%{http_code}' "$1" || true) == 200 ]]
}

# gate_stats NAME: the "gate" object of tidegate NAME's /stats, as k:v lines
gate_stats() {
  curl -s --max-time 2 "http://127.0.0.1:${PORT[$1]}/stats" |
    sed -n 's/.*"gate":{\([^}]*\)}.*/\1/p' | tr ',' '\n' | tr -d '"'
}
gate_stat() { # NAME KEY
  gate_stats "$1" | awk -F: -v k="$2" '$1 == k { print $2 }'
}
# shellcheck disable=SC2317
links_are() { [[ $(gate_stat "$1" links) == "$2" ]]; }

# start_tidegate NAME [cache]: tidegate with the echo route on /echo/ (and, with
# "cache", the caching route "cached" on /cached/)
start_tidegate() {
  local name=$1
  PORT[$name]=$(free_port)
  BPORT[$name]=$(free_port)
  {
    echo "# bench/gate.sh: the echo backends' route, on the path nginx proxies"
    echo "route.echo.http = /echo/"
    [[ -z $LZ4_MIN ]] || echo "gate.lz4_min = $LZ4_MIN"
    if [[ ${2:-} == cache ]]; then
      echo "route.cached.http = /cached/"
      echo "route.cached.cache = $CACHE_TTL"
    fi
  } >"$TMP/$name.conf"
  spawn "$name" "$TMP/$name.log" "$TIDEGATE" --listen "127.0.0.1:${PORT[$name]}" \
    --backend-listen "127.0.0.1:${BPORT[$name]}" --io-threads "$IO_THREADS" \
    --config "$TMP/$name.conf" --log-level warn
  wait_for "$name" "answer to GET /healthz" http_is "http://127.0.0.1:${PORT[$name]}/healthz" ok ||
    { tail -n 20 "$TMP/$name.log" >&2; return 1; }
}

# start_echo NAME GATE LINKS [ROUTES]: an examples/echo backend linked to tidegate
# GATE; waits until GATE counts <links> links (the backends started so far)
start_echo() {
  local name=$1 gate=$2 links=$3
  spawn "$name" "$TMP/$name.log" "$ECHO_BACKEND" --connect "127.0.0.1:${BPORT[$gate]}" \
    --routes "${4:-echo}" --name "$name" --capacity 1024 --quiet
  wait_for "$name" "link to $gate" links_are "$gate" "$links" ||
    { tail -n 20 "$TMP/$name.log" "$TMP/$gate.log" >&2; return 1; }
}

start_echo_http() {
  PORT[echo-http]=$(free_port)
  spawn echo-http "$TMP/echo-http.log" "$ECHO_HTTP" --listen "127.0.0.1:${PORT[echo-http]}"
  wait_for echo-http "answer" http_200 "http://127.0.0.1:${PORT[echo-http]}/" ||
    { tail -n 20 "$TMP/echo-http.log" >&2; return 1; }
}

start_nginx() {
  local dir=$TMP/nginx
  mkdir -p "$dir"
  # Started as root, nginx runs its workers as nobody: they must reach the temp
  # paths (created by the master, for bodies that do not fit in memory).
  chmod 711 "$TMP" "$dir"
  PORT[nginx]=$(free_port)
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|${PORT[nginx]}|g" -e "s|@WORKERS@|$IO_THREADS|g" \
    -e "s|@BACKEND_PORT@|${PORT[echo-http]}|g" -e "s|@CACHE_TTL@|$CACHE_TTL|g" \
    bench/peers/nginx-gate.conf >"$dir/nginx.conf"
  # -e: the error log in the temp dir from the start (the compiled-in
  # /var/log/nginx/error.log may not be writable by this user)
  spawn nginx "$dir/stdout.log" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
    -g 'daemon off;'
  wait_for nginx "answer to GET /healthz" http_is "http://127.0.0.1:${PORT[nginx]}/healthz" ok ||
    { tail -n 20 "$dir/error.log" "$dir/stdout.log" >&2; return 1; }
}

# echo_ok PROXY: POST the body through PROXY; the same bytes and content-type come back
echo_ok() {
  local proxy=$1 out=$TMP/check-$1
  curl -s --max-time 5 -D "$out.head" -o "$out.body" -H 'Content-Type: application/json' \
    --data-binary @"$TMP/body.json" "http://127.0.0.1:${PORT[$proxy]}/echo/check" || true
  if ! head -n 1 "$out.head" | grep -q ' 200 ' || ! cmp -s "$out.body" "$TMP/body.json" ||
    ! grep -qi '^content-type: application/json' "$out.head"; then
    note "$proxy does not echo the POST body: $(head -n 1 "$out.head" 2>/dev/null)"
    return 1
  fi
}

# PIDs of a proxy (nginx: master and workers) and of the backend behind it
# (nginx: the master and its children, but not the cache loader, which exits by
# itself a minute after the start: proxy_cache_path is always configured)
proxy_pids() {
  local p
  echo "${PID[$1]}"
  [[ $1 == nginx ]] || return 0
  for p in $(pgrep -P "${PID[nginx]}"); do
    grep -qa "cache loader" "/proc/$p/cmdline" 2>/dev/null || echo "$p"
  done
}
# pid_name PID: the name we started it under ("nginx worker" for a master's child)
pid_name() {
  local n
  for n in "${!PID[@]}"; do [[ ${PID[$n]} == "$1" ]] && { echo "$n"; return; }; done
  echo "nginx worker"
}
backend_of() { if [[ $1 == nginx ]]; then echo echo-http; else echo echo; fi; }

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

# wrk_figures FILE: "rps p99_ms requests errors" from a wrk --latency output
wrk_figures() {
  awk '/^Requests\/sec:/ { rps = $2 }
       / requests in / { n = $1 }
       $1 == "99%" {
         v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
         m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
         if (m > 0) p99 = sprintf("%.3f", v * m) }
       /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
       /Non-2xx or 3xx responses:/ { e += $NF }
       END { print (rps == "" ? "-" : rps), (p99 == "" ? "-" : p99), n + 0, e + 0 }' "$1"
}

declare -A R=() # results: R[proxy,kind,round,figure]

# wrk_args KIND: wrk's arguments for a request kind
wrk_args() {
  if [[ $1 == post ]]; then echo "-s $TMP/post.lua"; fi
}

# run_wrk PROXY KIND ROUND -> R[proxy,kind,round,{rps,p99,err,cpu_proxy,cpu_backend}]
run_wrk() {
  local proxy=$1 kind=$2 round=$3 url out ppids bpid p p0 p1 b0 b1 rps p99 n errs limit
  local -a extra
  read -r -a extra <<<"$(wrk_args "$kind")"
  url="http://127.0.0.1:${PORT[$proxy]}/echo/"
  out=$TMP/wrk-$proxy-$kind-$round.txt
  if [[ $(secs "$WARMUP") -gt 0 ]]; then
    run_bg /dev/null timeout $(($(secs "$WARMUP") + 30)) \
      wrk -t1 -c"$CONNS" -d"$WARMUP" "${extra[@]}" "$url" || true
  fi
  mapfile -t ppids < <(proxy_pids "$proxy")
  bpid=${PID[$(backend_of "$proxy")]}
  limit=$((DUR_S + 60))
  p0=$(cpu_ticks "${ppids[@]}")
  b0=$(cpu_ticks "$bpid")
  if ! run_bg "$out" timeout "$limit" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${extra[@]}" "$url"; then
    note "$proxy $kind: wrk failed or overran ${limit}s"
    cat "$out" >&2
    return 1
  fi
  for p in "${ppids[@]}" "$bpid"; do
    kill -0 "$p" 2>/dev/null || {
      note "$proxy $kind: pid $p ($(pid_name "$p")) died under load"
      tail -n 5 "$TMP"/*.log "$TMP"/*/error.log 2>/dev/null >&2
      return 1
    }
  done
  p1=$(cpu_ticks "${ppids[@]}")
  b1=$(cpu_ticks "$bpid")
  [[ -z ${KEEP_WRK:-} ]] || cp "$out" "$KEEP_WRK/"
  read -r rps p99 n errs < <(wrk_figures "$out")
  [[ $rps != - && $p99 != - && $n -gt 0 ]] ||
    { note "$proxy $kind: cannot parse wrk output"; cat "$out" >&2; return 1; }
  R[$proxy,$kind,$round,rps]=$rps
  R[$proxy,$kind,$round,p99]=$p99
  R[$proxy,$kind,$round,err]=$errs
  R[$proxy,$kind,$round,cpu_proxy]=$(awk -v t=$((p1 - p0)) -v hz="$HZ" -v n="$n" \
    'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  R[$proxy,$kind,$round,cpu_backend]=$(awk -v t=$((b1 - b0)) -v hz="$HZ" -v n="$n" \
    'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  if ((errs > 0)); then
    note "$proxy $kind round $round: $errs socket errors or 4xx/5xx responses"
    FLAWED[$proxy]+=" $kind round $round had $errs errors;"
  fi
  note "$proxy $kind round $round: $rps req/s, p99 $p99 ms, cpu/req proxy" \
    "${R[$proxy,$kind,$round,cpu_proxy]} us, backend ${R[$proxy,$kind,$round,cpu_backend]} us"
}

now() { date +%s.%N; }
sleep_until() { # absolute time from now()
  local d
  d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
  sleep "$d"
}

declare -A K=() # kill part results

# kill_run: tidegate, two echo backends, wrk; echo-a killed -9 at KILL_AT s
kill_run() {
  local url out limit t0 i r rs ts line
  start_tidegate tidegate-kill || return 1
  start_echo echo-a tidegate-kill 1 || return 1
  start_echo echo-b tidegate-kill 2 || return 1
  url="http://127.0.0.1:${PORT[tidegate-kill]}/echo/"
  out=$TMP/wrk-kill.txt
  if [[ $(secs "$WARMUP") -gt 0 ]]; then
    run_bg /dev/null timeout $(($(secs "$WARMUP") + 30)) wrk -t1 -c"$KILL_CONNS" -d"$WARMUP" "$url" || true
  fi
  K[before]=$(gate_stats tidegate-kill | tr '\n' ' ')
  limit=$((DUR_S + 60))
  # Sample the gate's replies every second (a 1-second timeline) and kill at KILL_AT.
  rs=("$(gate_stat tidegate-kill replies)")
  t0=$(now)
  ts=("$t0")
  timeout "$limit" wrk -t1 -c"$KILL_CONNS" -d"$DURATION" --latency "$url" >"$out" &
  CHILD=$!
  for ((i = 1; i < DUR_S; i++)); do
    sleep_until "$(awk -v t="$t0" -v i="$i" 'BEGIN { printf "%.3f", t + i }')"
    kill -0 "$CHILD" 2>/dev/null || break
    rs+=("$(gate_stat tidegate-kill replies)")
    ts+=("$(now)")
    if ((i == KILL_AT)); then
      if ((FREEZE_MS > 0)); then
        kill -STOP "${PID[echo-a]}"
        sleep "$(awk -v ms="$FREEZE_MS" 'BEGIN { printf "%.3f", ms / 1000 }')"
      fi
      K[inflight]=$(gate_stat tidegate-kill inflight)
      note "kill -9 echo-a (pid ${PID[echo-a]}) at ${i} s (stopped for ${FREEZE_MS} ms before);" \
        "jobs in flight on the gate: ${K[inflight]}"
      kill -KILL "${PID[echo-a]}"
      wait "${PID[echo-a]}" 2>/dev/null || true
      unset "PID[echo-a]"
    fi
  done
  r=0
  wait "$CHILD" || r=$?
  CHILD=""
  rs+=("$(gate_stat tidegate-kill replies)")
  ts+=("$(now)")
  [[ -z ${KEEP_WRK:-} ]] || cp "$out" "$KEEP_WRK/"
  if ((r != 0)); then
    note "kill: wrk failed or overran ${limit}s"
    cat "$out" >&2
    return 1
  fi
  kill -0 "${PID[tidegate-kill]}" 2>/dev/null || { note "tidegate died during the kill run"; return 1; }
  read -r 'K[rps]' 'K[p99]' 'K[n]' 'K[errs]' < <(wrk_figures "$out")
  [[ ${K[rps]} != - ]] || { note "kill: cannot parse wrk output"; cat "$out" >&2; return 1; }
  K[non2xx]=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } END { print n + 0 }' "$out")
  line=$(grep 'Socket errors:' "$out" || true)
  K[sockerr]=$(awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
  K[sockerr_detail]=${line#*Socket errors: }
  [[ -n $line ]] || K[sockerr_detail]="none"
  K[max]=$(awk '$1 == "Latency" && NF >= 4 { print $4 }' "$out")
  # replies/s per sampled interval
  K[timeline]=""
  for ((i = 1; i < ${#rs[@]}; i++)); do
    K[timeline]+=$(awk -v a="${rs[i - 1]:-0}" -v b="${rs[i]:-0}" -v s="${ts[i - 1]}" -v e="${ts[i]}" \
      'BEGIN { if (e > s) printf "%.0f ", (b - a) / (e - s); else printf "- " }')
  done
  K[after]=$(gate_stats tidegate-kill | tr '\n' ' ')
  K[links]=$(gate_stat tidegate-kill links)
  for k in resubmitted deadline no_backend overloaded failed; do
    K[$k]=$(($(gate_stat tidegate-kill "$k") - $(tr ' ' '\n' <<<"${K[before]}" | awk -F: -v k="$k" '$1 == k { print $2 }')))
  done
  if ((K[errs] > 0)); then
    FLAWED[kill]=" ${K[errs]} client-visible errors during the kill;"
  fi
  note "kill: ${K[rps]} req/s, ${K[non2xx]} 4xx/5xx, ${K[sockerr]} socket errors," \
    "${K[resubmitted]} jobs resubmitted"
}

declare -A C=() # cache part results: C[proxy,path,{rps,p99,err,jobs}]

# backend_requests PROXY: requests that reached the backend so far (nginx logs
# only /cached/ ones: on /echo/ every request does)
backend_requests() {
  if [[ $1 == nginx ]]; then
    wc -l <"$TMP/nginx/upstream.log" 2>/dev/null || echo 0
  else
    gate_stat "$1" replies
  fi
}

# cache_wrk PROXY PATH: one measured wrk GET run (after a warm-up that also
# fills the cache), with the backend requests counted around it
cache_wrk() {
  local proxy=$1 path=$2 url out j0 j1 rps p99 n errs
  url="http://127.0.0.1:${PORT[$proxy]}$path"
  out=$TMP/wrk-cache-$proxy-${path//\//}.txt
  if [[ $(secs "$WARMUP") -gt 0 ]]; then
    run_bg /dev/null timeout $(($(secs "$WARMUP") + 30)) wrk -t1 -c"$CONNS" -d"$WARMUP" "$url" || true
  fi
  j0=$(backend_requests "$proxy")
  if ! run_bg "$out" timeout $((DUR_S + 60)) wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url"; then
    note "cache: $proxy $path: wrk failed or overran"
    cat "$out" >&2
    return 1
  fi
  j1=$(backend_requests "$proxy")
  [[ -z ${KEEP_WRK:-} ]] || cp "$out" "$KEEP_WRK/"
  read -r rps p99 n errs < <(wrk_figures "$out")
  [[ $rps != - && $n -gt 0 ]] || { note "cache: cannot parse wrk output"; cat "$out" >&2; return 1; }
  C[$proxy,$path,rps]=$rps
  C[$proxy,$path,p99]=$p99
  C[$proxy,$path,err]=$errs
  C[$proxy,$path,jobs]=$((j1 - j0))
  [[ $proxy != nginx || $path != /echo/ ]] || C[$proxy,$path,jobs]=all
  ((errs == 0)) || FLAWED[cache]+=" $proxy $path had $errs errors;"
  note "cache: $proxy $path: $rps req/s, p99 $p99 ms, ${C[$proxy,$path,jobs]} backend requests of $n"
}

# cache_part: tidegate's reply cache and nginx's proxy_cache, each beside its
# uncached path, on fresh processes
cache_part() {
  local proxy path
  start_tidegate tidegate-cache cache || return 1
  start_echo echo tidegate-cache 1 echo,cached || return 1
  start_echo_http || return 1
  start_nginx || return 1
  for proxy in tidegate-cache nginx; do
    [[ $(curl -s --max-time 5 -o /dev/null -D - "http://127.0.0.1:${PORT[$proxy]}/cached/" |
      tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print tolower($2) }') != "" ]] ||
      { note "cache: $proxy says no X-Cache on /cached/"; return 1; }
  done
  for path in /echo/ /cached/; do
    for proxy in tidegate-cache nginx; do
      cache_wrk "$proxy" "$path" || return 1
    done
  done
  for name in nginx echo-http echo tidegate-cache; do stop_pid "$name"; done
}

# --- run ------------------------------------------------------------------
# Other load on the box skews every figure: record it so a reader can tell.
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# The POST body: JSON of BODY_SIZE bytes (compressible like real JSON), and wrk's script.
"$PY" - "$BODY_SIZE" >"$TMP/body.json" <<'EOF'
import sys
n = int(sys.argv[1])
s, i = '{"items":[', 0
while True:
    item = '{"id":%d,"sku":"%08x","qty":%d},' % (i, (i * 2654435761) & 0xffffffff, i % 7 + 1)
    if len(s) + len(item) + 2 > n:
        break
    s += item
    i += 1
s = s.rstrip(',') + ']'
sys.stdout.write(s + ' ' * (n - len(s) - 1) + '}')
EOF
{
  echo 'wrk.method = "POST"'
  echo 'wrk.headers["Content-Type"] = "application/json"'
  printf 'wrk.body = [==[%s]==]\n' "$(<"$TMP/body.json")"
} >"$TMP/post.lua"

note "gate path: io-threads/workers $IO_THREADS, wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds," \
  "POST body $BODY_SIZE bytes; parts: $PARTS"
if [[ " $PARTS " == *" compare "* ]]; then
  if start_tidegate tidegate && start_echo echo tidegate 1 && echo_ok tidegate; then :; else
    BROKEN[tidegate]="did not start"
  fi
  if start_echo_http && start_nginx && echo_ok nginx; then :; else
    BROKEN[nginx]="did not start"
  fi
  for ((round = 1; round <= ROUNDS; round++)); do
    for kind in get post; do
      for proxy in tidegate nginx; do
        [[ -z ${BROKEN[$proxy]:-} ]] || continue
        run_wrk "$proxy" "$kind" "$round" || BROKEN[$proxy]="$kind round $round failed"
      done
    done
  done
  # Part 2 runs alone: stop part 1's processes first.
  for name in nginx echo-http echo tidegate; do stop_pid "$name"; done
fi
if [[ " $PARTS " == *" kill "* ]]; then
  kill_run || BROKEN[kill]="the kill run failed"
fi
if [[ " $PARTS " == *" cache "* ]]; then
  cache_part || BROKEN[cache]="the cache run failed"
fi

# --- report ---------------------------------------------------------------
get() { echo "${R[$1]:--}"; }
ratio() { # tidegate/nginx
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
median() { # values... ("-" ignored)
  printf '%s\n' "$@" | grep -v '^-$' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
                              else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# med PROXY KIND FIGURE: the median over the rounds
med() {
  local r vals=()
  for ((r = 1; r <= ROUNDS; r++)); do vals+=("$(get "$1,$2,$r,$3")"); done
  median "${vals[@]}"
}
total() { # a + b, "-" if either is missing
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2f", a + b }'
}
label() {
  case $1 in
    rps) echo "req/s" ;; p99) echo "p99 ms" ;; cpu_proxy) echo "proxy us/req" ;;
    cpu_backend) echo "backend us/req" ;; cpu_total) echo "total us/req" ;;
  esac
}
kind_label() { if [[ $1 == post ]]; then echo "POST /echo/ ${BODY_SIZE} B"; else echo "GET /echo/"; fi; }
{
  if [[ " $PARTS " == *" compare "* ]]; then
    echo
    echo "Gate request path, loopback, $(nproc) cores, nothing pinned; tidegate --io-threads $IO_THREADS"
    echo "+ examples/echo (gate link) vs nginx $(nginx -v 2>&1 | sed 's|.*/||') worker_processes $IO_THREADS"
    echo "+ echo-http (HTTP keep-alive upstream); both backends: one thread, tidegate's loop code."
    echo "wrk -t1 -c$CONNS -d$DURATION --latency, ${WARMUP} warm-up; CPU = user+sys time per request,"
    echo "proxy (nginx: master + workers) and backend separately."
    echo "load average before the run: $LOADAVG (should be near 0: other load skews the figures)"
    echo
    printf '%-20s %-6s %11s %11s %7s %10s %10s %7s\n' request round "tg req/s" "ngx req/s" ratio \
      "tg p99 ms" "ngx p99" ratio
    for kind in get post; do
      for ((r = 1; r <= ROUNDS; r++)); do
        tr_=$(get "tidegate,$kind,$r,rps") nr=$(get "nginx,$kind,$r,rps")
        tp=$(get "tidegate,$kind,$r,p99") np=$(get "nginx,$kind,$r,p99")
        printf '%-20s %-6s %11s %11s %7s %10s %10s %7s\n' "$(kind_label $kind)" "$r" "$tr_" "$nr" \
          "$(ratio "$tr_" "$nr")" "$tp" "$np" "$(ratio "$tp" "$np")"
      done
    done
    echo
    printf '%-20s %-16s %12s %12s %9s\n' request "median of $ROUNDS" tidegate nginx ratio
    for kind in get post; do
      for fig in rps p99 cpu_proxy cpu_backend cpu_total; do
        if [[ $fig == cpu_total ]]; then
          t=$(total "$(med tidegate $kind cpu_proxy)" "$(med tidegate $kind cpu_backend)")
          n=$(total "$(med nginx $kind cpu_proxy)" "$(med nginx $kind cpu_backend)")
        else
          t=$(med tidegate $kind $fig)
          n=$(med nginx $kind $fig)
        fi
        printf '%-20s %-16s %12s %12s %9s\n' "$(kind_label $kind)" "$(label $fig)" "$t" "$n" "$(ratio "$t" "$n")"
      done
    done
    echo "(ratio = tidegate / nginx: higher is better for req/s, lower for p99 and CPU;"
    echo " the backends differ, so compare the proxy rows; total = proxy + backend medians)"
  fi
  if [[ " $PARTS " == *" kill "* ]]; then
    echo
    echo "kill -9 of one of two backends: tidegate --io-threads $IO_THREADS, two examples/echo"
    echo "(round-robin), wrk -t1 -c$KILL_CONNS -d$DURATION GET /echo/, one backend killed at ${KILL_AT} s"
    ((FREEZE_MS == 0)) || echo "(after ${FREEZE_MS} ms stopped with SIGSTOP)"
    printf '%-34s %s\n' "req/s (wrk, whole run)" "${K[rps]:--}"
    printf '%-34s %s\n' "replies/s per second (gate /stats)" "${K[timeline]:--}"
    printf '%-34s %s\n' "p99 / max latency" "${K[p99]:--} ms / ${K[max]:--}"
    printf '%-34s %s\n' "4xx/5xx responses (goal 0)" "${K[non2xx]:--}"
    printf '%-34s %s\n' "socket errors (goal 0)" "${K[sockerr]:--} (${K[sockerr_detail]:--})"
    printf '%-34s %s\n' "jobs in flight on the gate at kill" "${K[inflight]:--} (both backends)"
    printf '%-34s %s\n' "jobs resubmitted by the gate" "${K[resubmitted]:--}"
    printf '%-34s %s\n' "gate deadline/no_backend/overloaded" \
      "${K[deadline]:--}/${K[no_backend]:--}/${K[overloaded]:--}; links after: ${K[links]:--}"
  fi
  if [[ " $PARTS " == *" cache "* ]]; then
    echo
    echo "Reply cache: GET, wrk -t1 -c$CONNS -d$DURATION --latency (after a ${WARMUP} warm-up that fills"
    echo "the cache); tidegate route.cached.cache = $CACHE_TTL + examples/echo, nginx proxy_cache"
    echo "(proxy_cache_valid 200 $CACHE_TTL, proxy_cache_lock on) + echo-http; /echo/ is not cached."
    echo "backend = requests that reached the backend during the measured run."
    printf '%-10s %11s %11s %7s %10s %10s %11s %11s\n' path "tg req/s" "ngx req/s" ratio \
      "tg p99 ms" "ngx p99" "tg backend" "ngx backend"
    for path in /echo/ /cached/; do
      tr_=${C[tidegate-cache,$path,rps]:--} nr=${C[nginx,$path,rps]:--}
      printf '%-10s %11s %11s %7s %10s %10s %11s %11s\n' "$path" "$tr_" "$nr" "$(ratio "$tr_" "$nr")" \
        "${C[tidegate-cache,$path,p99]:--}" "${C[nginx,$path,p99]:--}" \
        "${C[tidegate-cache,$path,jobs]:--}" "${C[nginx,$path,jobs]:--}"
    done
  fi
  echo
  if [[ " $PARTS " == *" cache "* ]]; then
    for path in /echo/ /cached/; do
      echo "RESULT gate-cache path=$path conns=$CONNS ttl=$CACHE_TTL" \
        "rps_tidegate=${C[tidegate-cache,$path,rps]:--} rps_nginx=${C[nginx,$path,rps]:--}" \
        "p99_tidegate=${C[tidegate-cache,$path,p99]:--} p99_nginx=${C[nginx,$path,p99]:--}" \
        "backend_tidegate=${C[tidegate-cache,$path,jobs]:--} backend_nginx=${C[nginx,$path,jobs]:--}"
    done
  fi
  if [[ " $PARTS " == *" compare "* ]]; then
    for kind in get post; do
      for ((r = 1; r <= ROUNDS; r++)); do
        for fig in rps p99 cpu_proxy cpu_backend; do
          t=$(get "tidegate,$kind,$r,$fig") n=$(get "nginx,$kind,$r,$fig")
          echo "RESULT gate request=$kind conns=$CONNS round=$r figure=$fig tidegate=$t nginx=$n" \
            "ratio=$(ratio "$t" "$n") errors_tidegate=$(get "tidegate,$kind,$r,err")" \
            "errors_nginx=$(get "nginx,$kind,$r,err")"
        done
      done
      for fig in rps p99 cpu_proxy cpu_backend; do
        t=$(med tidegate $kind $fig) n=$(med nginx $kind $fig)
        echo "RESULT gate request=$kind conns=$CONNS round=median figure=$fig tidegate=$t nginx=$n" \
          "ratio=$(ratio "$t" "$n")"
      done
    done
  fi
  if [[ " $PARTS " == *" kill "* ]]; then
    echo "RESULT gate-kill conns=$KILL_CONNS kill_at=$KILL_AT rps=${K[rps]:--} p99=${K[p99]:--}" \
      "non2xx=${K[non2xx]:--} socket_errors=${K[sockerr]:--} resubmitted=${K[resubmitted]:--}" \
      "inflight_at_kill=${K[inflight]:--} freeze_ms=$FREEZE_MS" \
      "deadline=${K[deadline]:--} no_backend=${K[no_backend]:--}"
  fi
}

status=0
for side in tidegate nginx kill cache; do
  if [[ -n ${BROKEN[$side]:-} ]]; then
    note "$side: ${BROKEN[$side]}; its figures are missing"
    status=1
  fi
  if [[ -n ${FLAWED[$side]:-} ]]; then
    note "$side:${FLAWED[$side]} its figures are suspect"
    status=1
  fi
done
exit "$status"
