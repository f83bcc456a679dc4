#!/usr/bin/env bash
# compare.sh - tidegate, Nchan and Pushpin side by side, same box, same client,
# one run: each server in turn, the same scenarios, one table at the end.
#
#   bash bench/compare.sh                 (after make VARIANT=release build and
#                                          scripts/deps.sh bench; make bench runs it)
#   SERVERS="tidegate nchan" SCENARIOS="fanout-ws burst" bash bench/compare.sh
#
# Scenarios (every one with build/release/tidegate-bench, the same flags for
# every server, only the URLs differ):
#   idle-ws, idle-sse   IDLE_N (10,000 and 19,000) idle subscribers: user-space
#                       bytes per connection (RSS, and PSS for multi-process servers)
#   base                1,000 WebSocket subscribers x 100 msg/s for 20 s: server CPU
#                       per delivery and p99 at a load every server sustains
#   fanout-ws, fanout-sse  10,000 subscribers on one channel, 100 msg/s for 20 s
#   burst               1,000 subscribers, publishing as fast as the server accepts, 10 s
#   channels            10,000 channels with one subscriber each, 5,000 msg/s at random
#   churn               500 connects + disconnects per second for 30 s while publishing,
#                       twice on one server; the server's fds after vs before, and its
#                       RSS after vs while the subscribers were up
#
# Output: RESULT lines per run, then a table (scenario x figure; columns tidegate,
# nchan, pushpin, and tidegate / best peer), written also to OUT (default
# build/bench/compare.txt) with a gnuplot chart (build/bench/compare.png).
# Everything listens on 127.0.0.1; every process is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TIDEGATE=${TIDEGATE:-$ROOT/build/release/tidegate}
BENCH=${BENCH:-$ROOT/build/release/tidegate-bench}
WORKERS=${WORKERS:-2}
SERVERS=${SERVERS:-tidegate nchan pushpin}
SCENARIOS=${SCENARIOS:-idle-ws idle-sse base fanout-ws fanout-sse burst channels churn}
IDLE_N=${IDLE_N:-10000 19000}
OUTDIR=${OUTDIR:-$ROOT/build/bench}
OUT=$OUTDIR/compare.txt
mkdir -p "$OUTDIR"
[ -x "$TIDEGATE" ] && [ -x "$BENCH" ] || {
  echo "compare.sh: build first: make VARIANT=release build" >&2; exit 2; }

WORK=$(mktemp -d /tmp/tgcmp.XXXXXX)
RESULTS=$OUTDIR/compare.results   # kept: compare_table.py can be rerun on it
[ -n "${APPEND:-}" ] || : >"$RESULTS"     # APPEND=1: add to an earlier run's results
TG_PID=
cleanup() {
  stop_server || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME: sets SUB_WS, SUB_SSE, PUB_URL, PUB_FORMAT, PIDS (server
# processes whose CPU and memory count), CURRENT.
start_server() {
  CURRENT=$1
  local port; port=$(free_port)
  case $1 in
    tidegate)
      # TIDEGATE_CONF: extra config lines, e.g. TIDEGATE_CONF='push.coalesce = 20ms'
      # The burst channel keeps a million messages: a subscriber cut as a slow
      # consumer resumes (--resume) from its position without a gap.
      printf '%s\n' "channel.burst.history_len = 1000000" "${TIDEGATE_CONF:-}" \
        >"$WORK/tidegate.conf"
      "$TIDEGATE" --config "$WORK/tidegate.conf" --listen "127.0.0.1:$port" --backend-listen '' \
        --io-threads "$WORKERS" --log-level warn &
      TG_PID=$!
      for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
      SUB_WS="ws://127.0.0.1:$port/sub/{ch}"
      SUB_SSE="http://127.0.0.1:$port/sub/{ch}"
      PUB_URL="http://127.0.0.1:$port/pub/{ch}"
      PUB_FORMAT=raw
      RESUME=--resume
      PIDS=$TG_PID
      ;;
    nchan|pushpin)
      local dir=$WORK/$1 info try
      mkdir -p "$dir"
      # A free port now may be taken by the time the peer binds it (or its
      # neighbours, which Pushpin uses too): try a few.
      for try in 1 2 3; do
        info=$(bash "bench/peers/$1.sh" start "$dir" "$port" "$WORKERS") && break
        info=
        port=$(free_port)
      done
      [ -n "$info" ] || { echo "compare.sh: $1 did not start" >&2; return 1; }
      SUB_WS=$(awk '$1=="SUB_WS"{print $2}' <<<"$info")
      SUB_SSE=$(awk '$1=="SUB_SSE"{print $2}' <<<"$info")
      PUB_URL=$(awk '$1=="PUBLISH"{print $2}' <<<"$info")
      if [ "$1" = nchan ]; then PUB_FORMAT=raw; else PUB_FORMAT=pushpin; fi
      RESUME=
      # The GRIP backend only answers connects: it is not the server.
      PIDS=$(awk '$1=="PID" && $2!="grip_backend"{print $3}' <<<"$info" | tr '\n' ' ')
      ;;
  esac
}

stop_server() {
  case ${CURRENT:-} in
    tidegate) [ -n "$TG_PID" ] && kill "$TG_PID" 2>/dev/null && wait "$TG_PID" 2>/dev/null || true
              TG_PID= ;;
    nchan|pushpin) bash "bench/peers/$CURRENT.sh" stop "$WORK/$CURRENT" >/dev/null 2>&1 || true ;;
  esac
  CURRENT=
}

# run SCENARIO LABEL ARGS...: one tidegate-bench run against the current server.
run() {
  local scenario=$1 label=$2; shift 2
  local pidargs=() p
  for p in $PIDS; do pidargs+=(--pid "$p"); done
  local out
  out=$("$BENCH" "${pidargs[@]}" "$@" 2>&1) || true
  local line; line=$(grep '^RESULT ' <<<"$out" | tail -1)
  if [ -z "$line" ]; then
    echo "compare.sh: $CURRENT $scenario $label: no RESULT line:" >&2
    tail -5 <<<"$out" >&2
    line="RESULT failed=1"
  fi
  echo "$CURRENT $scenario $label ${line#RESULT }" | tee -a "$RESULTS"
}

sub_url() { if [ "$1" = sse ]; then echo "$SUB_SSE"; else echo "$SUB_WS"; fi; }

scenario() {
  local s=$1 n
  case $s in
    idle-ws|idle-sse)
      local t=${s#idle-} first=1
      for n in $IDLE_N; do
        # a fresh server for each count: memory freed by the last run would be reused
        [ $first = 1 ] || { stop_server; start_server "$srv"; }
        first=0
        run "$s" "n=$n" --transport "$t" --sub-url "$(sub_url "$t")" --pub-url "$PUB_URL" \
          --pub-format "$PUB_FORMAT" --channel idle --subs "$n" --idle 5 --connect-rate 1000
      done ;;
    base)
      run base "1000x100" --transport ws --sub-url "$SUB_WS" --pub-url "$PUB_URL" \
        --pub-format "$PUB_FORMAT" --channel base --subs 1000 --rate 100 --count 2000 \
        --connect-rate 500 ;;
    fanout-ws|fanout-sse)
      local t=${s#fanout-}
      run "$s" "10000x100" --transport "$t" --sub-url "$(sub_url "$t")" --pub-url "$PUB_URL" \
        --pub-format "$PUB_FORMAT" --channel fan --subs 10000 --rate 100 --count 2000 \
        --connect-rate 1000 ;;
    burst)
      run burst "1000xmax" --transport ws --sub-url "$SUB_WS" --pub-url "$PUB_URL" \
        --pub-format "$PUB_FORMAT" --channel burst --subs 1000 --rate 0 --duration 20 \
        --drain 10 --count 1000000 --pub-conns 4 $RESUME ;;
    channels)
      run channels "10000ch" --transport ws --sub-url "$SUB_WS" --pub-url "$PUB_URL" \
        --pub-format "$PUB_FORMAT" --channel ch --channels 10000 --subs 10000 --rate 5000 \
        --count 50000 --pub-random --connect-rate 1000 ;;
    churn)
      # Twice on the same server: the first run sizes its pools and tables
      # for the peak; what a second one adds is what churn leaks.
      local round
      for round in 500/s 500/s-2nd; do
        run churn "$round" --transport ws --sub-url "$SUB_WS" --pub-url "$PUB_URL" \
          --pub-format "$PUB_FORMAT" --channel churn --subs 2000 --rate 100 --count 3000 \
          --churn 500
      done ;;
  esac
}

for srv in $SERVERS; do
  echo "== $srv"
  for s in $SCENARIOS; do
    # a fresh server per scenario: memory figures start clean
    if start_server "$srv"; then
      scenario "$s"
    else
      echo "$srv $s - failed=1" >>"$RESULTS"
    fi
    stop_server
  done
done

/usr/bin/python3 bench/compare_table.py "$RESULTS" "$OUTDIR" | tee "$OUT"
