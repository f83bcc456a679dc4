#!/usr/bin/env bash
# rolling-restart.sh - upgrade every backend of a route with no failed request.
#
# Starts tidegate and three C echo backends (build/release, `make build`
# first), keeps a client busy, and replaces the backends one by one: each gets
# SIGTERM, sends DRAIN (tidegate gives it no new job), finishes what it holds
# and exits; its replacement connects; the other two carry the load meanwhile.
# At the end it prints how many requests failed: 0.
#
#   examples/rolling-restart.sh [SECONDS_PER_BACKEND]      (default 3)
#
# Everything listens on 127.0.0.1 and is stopped, by PID, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/release
PER=${1:-3}
PORT=18480
BPORT=17480
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

"$BIN/tidegate" --listen 127.0.0.1:$PORT --backend-listen 127.0.0.1:$BPORT \
    --log-level warn &
PIDS+=($!)
backend() { "$BIN/examples/echo" --connect 127.0.0.1:$BPORT --routes echo --quiet & }
slots=()
for i in 0 1 2; do backend; slots[i]=$!; PIDS+=("${slots[i]}"); done
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/echo/ready"; do sleep 0.1; done

# The client: one request after another, for the whole run; counts failures.
client() {
    local end=$((SECONDS + 3 * PER + 2)) n=0 bad=0
    while [ $SECONDS -lt $end ]; do
        if ! out=$(curl -s -m 5 -d "req-$n" "http://127.0.0.1:$PORT/api/echo/x") ||
           [ "$out" != "req-$n" ]; then
            bad=$((bad + 1))
        fi
        n=$((n + 1))
    done
    echo "$n requests, $bad failed"
}
client > /tmp/rolling-restart.$$ &
CLIENT=$!
PIDS+=($CLIENT)

for i in 0 1 2; do
    sleep "$PER"
    echo "restarting backend $((i + 1)) (pid ${slots[i]}): DRAIN, finish, exit"
    kill -TERM "${slots[i]}"
    wait "${slots[i]}" || true
    backend; slots[i]=$!; PIDS+=("${slots[i]}")
done
wait $CLIENT
cat /tmp/rolling-restart.$$
rm -f /tmp/rolling-restart.$$
