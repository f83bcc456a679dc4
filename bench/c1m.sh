#!/usr/bin/env bash
# bench/c1m.sh - the idle-connection ceiling and the cost of each connection.
#
#   bash bench/c1m.sh [N]        (default: the largest N this box's limits permit)
#
# Checks the limits that N idle WebSocket subscribers need (descriptors per
# process, system-wide files, ephemeral ports, memory), refuses with exit 2 and
# the limit to raise when N does not fit, applies the sysctls that a large N
# wants (as root, only where the kernel lets it; each one printed, each one
# restored on exit), then measures, on a fresh tidegate each time:
#   one      N subscribers on one channel
#   per-conn N subscribers on N channels (one each)
# and prints tidegate's user-space bytes per connection (VmRSS delta / N) and
# the kernel's, split by slab cache, with the share of each object that belongs
# to the server's end (both ends of every connection are on this box).
#
# As root, the test runs in a network namespace of its own (unshare -n, its
# loopback only): per-namespace sysctls are changed there and nowhere else, and
# /proc/net/sockstat counts only the test's sockets. Without root, or without
# unshare, it runs on 127.0.0.0/8 in the current namespace.
#
# Environment: MODES ("one per-conn"), TIMEOUT (whole run, s; 900),
# SETTLE (s before each reading; 2), IO_THREADS (2), KEEP_SYSCTLS=1 (do not
# change any sysctl). Output: a table per mode and RESULT lines on stdout;
# progress on stderr. Exit: 0 measured; 1 a server or client failed; 2 refused
# (limits) or bad usage; 3 time-out.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TG=$ROOT/build/release/tidegate
HOLD=$ROOT/bench/c1m_hold.py
PY=/usr/bin/python3
MODES=${MODES:-one per-conn}
TIMEOUT=${TIMEOUT:-900}
SETTLE=${SETTLE:-2}
IO_THREADS=${IO_THREADS:-2}
SERVER_FD_MARGIN=64   # tidegate's own descriptors (13 at rest) + /stats probes + slack
CLIENT_FD_MARGIN=64

log() { echo "c1m: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- sysctls ---
declare -a RESTORE=()
set_sysctl() { # name value reason: set it (root only), remember the old value
    local name=$1 want=$2 why=$3 path old
    path=/proc/sys/${name//.//}
    if [[ ${KEEP_SYSCTLS:-0} == 1 ]]; then
        log "sysctl   $name: left as $(tr '\t' ' ' <"$path" 2>/dev/null) (KEEP_SYSCTLS=1); wanted '$want' ($why)"
        return 1
    fi
    if [[ ! -e $path ]]; then
        log "sysctl   $name: CANNOT set '$want': not present in this kernel/namespace ($why)"
        return 1
    fi
    old=$(tr '\t' ' ' <"$path")
    if [[ $old == "$want" ]]; then
        log "sysctl   $name = $want already ($why)"
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        log "sysctl   $name: CANNOT set '$want' (is '$old'): not root ($why)"
        return 1
    fi
    if echo "$want" >"$path" 2>/dev/null; then
        RESTORE+=("$path=$old")
        log "sysctl   $name: set '$want' (was '$old') ($why)"
        return 0
    fi
    log "sysctl   $name: CANNOT set '$want' (is '$old'): the kernel refused ($why)"
    return 1
}
restore_sysctls() {
    local i kv
    for ((i = ${#RESTORE[@]} - 1; i >= 0; i--)); do
        kv=${RESTORE[i]}
        if echo "${kv#*=}" >"${kv%%=*}" 2>/dev/null; then
            log "restored ${kv%%=*} = ${kv#*=}$([[ ${C1M_NETNS:-0} == 1 && ${kv%%=*} == /proc/sys/net/* ]] && echo " (in the test namespace)")"
        else
            log "could NOT restore ${kv%%=*} to ${kv#*=}"
        fi
    done
    RESTORE=()
}
raise_sysctl() { # name minimum reason: only ever raise a single-number sysctl
    local name=$1 min=$2 why=$3 cur
    cur=$(cat "/proc/sys/${name//.//}" 2>/dev/null || echo 0)
    if ((cur >= min)); then
        log "sysctl   $name = $cur, enough (need >= $min: $why)"
        return 0
    fi
    set_sysctl "$name" "$min" "$why"
}

# ================================================================ inner ======
# Runs the measurement (in the test namespace when there is one).
inner() {
    local N=$1 PER_PROC=$2
    TMP=$(mktemp -d /tmp/c1m.XXXXXX) || die "mktemp"
    PIDS=() FDS=() TG_PID=""

    stop_pid() { # pid: TERM, then KILL after 5 s
        local p=$1 i
        kill -TERM "$p" 2>/dev/null || return 0
        for ((i = 0; i < 50; i++)); do
            kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    }
    stop_all() {
        local fd i
        for fd in "${FDS[@]}"; do eval "exec $fd>&-" 2>/dev/null; done
        FDS=()
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
        PIDS=()
        [[ -n $TG_PID ]] && stop_pid "$TG_PID"
        TG_PID=""
    }
    cleanup_inner() {
        stop_all
        restore_sysctls
        rm -rf "$TMP"
    }
    trap cleanup_inner EXIT
    trap 'exit 3' TERM INT

    if [[ ${C1M_NETNS:-0} == 1 ]]; then
        ip link set lo up || die "cannot bring up lo in the test namespace"
        log "in a private network namespace (loopback only)"
    fi
    # Per-namespace sysctls: in the test namespace they touch nothing else
    # (in a shared namespace they are left alone: other work runs there).
    [[ ${C1M_NETNS:-0} == 1 ]] || KEEP_SYSCTLS=1
    set_sysctl net.core.somaxconn 65535 \
        "accept queue cap; tidegate's listen backlog (config 'backlog', 4096) is clamped to it"
    set_sysctl net.ipv4.tcp_max_syn_backlog 65535 "half-open connections queued during a connect burst"
    set_sysctl net.ipv4.ip_local_port_range "1024 65535" \
        "ephemeral ports per (source, destination) pair on the client side"
    set_sysctl net.ipv4.tcp_rmem "4096 16384 4194304" \
        "small default receive buffer: bounds what a connection pins when bytes queue (idle: none)"
    set_sysctl net.ipv4.tcp_wmem "4096 16384 4194304" "small default send buffer, same reason"

    local port
    port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

    snapshot() { # dir pid
        local d=$1 pid=$2
        mkdir -p "$d"
        cat /proc/slabinfo >"$d/slabinfo" 2>/dev/null || : >"$d/slabinfo"
        # Caches that SLUB merged with others are read by their own name in
        # sysfs (objects of the merged cache, its object size, its identity).
        for n in TCP sock_inode_cache filp dentry lsm_inode_cache lsm_file_cache \
                 eventpoll_epi ep_head eventpoll_pwq; do
            if [[ -r /sys/kernel/slab/$n/objects ]]; then
                echo "$n $(cut -d' ' -f1 /sys/kernel/slab/$n/objects) $(cat /sys/kernel/slab/$n/slab_size) $(basename "$(readlink -f /sys/kernel/slab/$n)")"
            fi
        done >"$d/sysslab"
        cat /proc/net/sockstat >"$d/sockstat"
        cat /proc/meminfo >"$d/meminfo"
        cat "/proc/$pid/status" >"$d/status"
    }

    start_server() {
        (ulimit -n "$(ulimit -Hn)"
         exec "$TG" --listen "127.0.0.1:$port" --backend-listen '' --io-threads "$IO_THREADS" \
             --log-level warn) 2>"$TMP/tidegate.err" &
        TG_PID=$!
        local i
        for ((i = 0; i < 100; i++)); do
            $PY - "$port" <<'EOF' 2>/dev/null && return 0
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
sys.exit(0 if s.recv(100).startswith(b"HTTP/1.1 200") else 1)
EOF
            kill -0 "$TG_PID" 2>/dev/null || break
            sleep 0.1
        done
        cat "$TMP/tidegate.err" >&2
        return 1
    }

    CLIENT_FD=""
    start_client() { # name count extra-args...: a hold client fed through a fifo (CLIENT_FD)
        local name=$1 count=$2 fd
        shift 2
        rm -f "$TMP/$name.in" "$TMP/$name.out" "$TMP/$name.err"
        mkfifo "$TMP/$name.in"
        timeout --kill-after=5 "$((TIMEOUT + 60))" \
            $PY "$HOLD" --timeout 300 "$@" 127.0.0.1 "$port" "$count" \
            <"$TMP/$name.in" >"$TMP/$name.out" 2>"$TMP/$name.err" &
        PIDS+=($!)
        exec {fd}>"$TMP/$name.in"
        FDS+=("$fd")
        CLIENT_FD=$fd
    }
    wait_line() { # file prefix seconds: the first line starting with prefix
        local f=$1 pre=$2 t=$3 i line
        for ((i = 0; i < t * 10; i++)); do
            line=$(grep -m1 "^$pre" "$f" 2>/dev/null) && { echo "$line"; return 0; }
            sleep 0.1
        done
        return 1
    }

    local mode rc=0
    for mode in $MODES; do
        log "---- mode $mode: $N idle WebSocket subscribers ----"
        start_server || { log "tidegate did not start"; rc=1; break; }
        local warm_args=(--prefix c1m) args=() k nclients
        [[ $mode == per-conn ]] && warm_args=(--prefix warm)
        # One subscriber before the baseline: the server's first-use
        # allocations (and, for 'one', the channel record) are not counted.
        local wfd
        start_client warm 1 "${warm_args[@]}"
        wfd=$CLIENT_FD
        wait_line "$TMP/warm.out" READY 30 >/dev/null || { cat "$TMP/warm.err" >&2; rc=1; break; }
        sleep "$SETTLE"
        snapshot "$TMP/$mode.before" "$TG_PID"
        local t0=$SECONDS
        nclients=$(((N + PER_PROC - 1) / PER_PROC))
        local left=$N off=0 share ports_total=0 line
        declare -a cfds=()
        for ((k = 0; k < nclients; k++)); do
            share=$(((left + nclients - k - 1) / (nclients - k)))
            args=(--prefix c1m)
            [[ $mode == per-conn ]] && args=(--per-conn --prefix ch --offset "$off")
            start_client "c$k" "$share" "${args[@]}"
            cfds+=("$CLIENT_FD")
            left=$((left - share))
            off=$((off + share))
        done
        for ((k = 0; k < nclients; k++)); do
            if ! line=$(wait_line "$TMP/c$k.out" READY 330); then
                log "client $k did not get its subscribers:"; cat "$TMP/c$k.err" >&2; rc=1; break 2
            fi
            ports_total=$((ports_total + $(sed 's/.*ports=//' <<<"$line")))
        done
        local open_s=$((SECONDS - t0))
        # Pings that arrived meanwhile are read, so no client receive queue holds bytes.
        for ((k = 0; k < nclients; k++)); do echo drain >&"${cfds[k]}"; done
        for ((k = 0; k < nclients; k++)); do
            line=$(wait_line "$TMP/c$k.out" DRAINED 30) || { rc=1; break 2; }
            [[ $line == *"closed=0" ]] || { log "client $k: server closed connections: $line"; rc=1; break 2; }
        done
        sleep "$SETTLE"
        snapshot "$TMP/$mode.after" "$TG_PID"
        local live
        live=$($PY - "$port" <<'EOF'
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
b = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    b += c
d = json.loads(b.split(b"\r\n\r\n", 1)[1])
print(d["connections"]["live"], d["push"]["subscribers"], d["push"]["channels"])
EOF
)
        log "open in ${open_s}s; server /stats: live subscribers channels = $live"
        $PY - "$TMP/$mode.before" "$TMP/$mode.after" "$N" "$mode" "$nclients" "$ports_total" \
            "$live" "${C1M_NETNS:-0}" <<'EOF'
import os, sys
bdir, adir, n, mode, nclients, ports, live, netns = sys.argv[1:9]
n, ports, nclients = int(n), int(ports), int(nclients)

def slabinfo(d):
    out = {}
    for line in open(d + "/slabinfo").read().splitlines()[2:]:
        f = line.split()
        out[f[0]] = (int(f[1]), int(f[2]), int(f[3]))   # active, total, object size
    return out

def sysslab(d):
    out = {}
    for line in open(d + "/sysslab"):
        name, objs, size, ident = line.split()
        out[name] = (int(objs), int(size), ident)
    return out

def kv(path, key, field=1):
    for line in open(path):
        if line.startswith(key):
            return int(line.split()[field])
    return 0

def sock(path):
    for line in open(path):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[2]), int(f[10])             # inuse, mem (pages)
    return 0, 0

sb, sa = sysslab(bdir), sysslab(adir)
ib, ia = slabinfo(bdir), slabinfo(adir)
rss = (kv(adir + "/status", "VmRSS:") - kv(bdir + "/status", "VmRSS:")) * 1024
anon = (kv(adir + "/status", "RssAnon:") - kv(bdir + "/status", "RssAnon:")) * 1024
(in0, mem0), (in1, mem1) = sock(bdir + "/sockstat"), sock(adir + "/sockstat")
slabkb = kv(adir + "/meminfo", "Slab:") - kv(bdir + "/meminfo", "Slab:")

# Objects each connection holds, per end, and why. The client binds a source
# address and lets connect() pick the port: one tcp_bind2_bucket per socket and
# one tcp_bind_bucket per distinct port, in the cache SLUB shares with
# eventpoll_epi. The client uses poll(), so every epoll object is the server's.
rows = [  # cache, server objects per conn, client objects per conn, note
    ("TCP", 1, 1, "struct tcp_sock"),
    ("sock_inode_cache", 1, 1, "socket + its inode"),
    ("filp", 1, 1, "struct file (the descriptor)"),
    ("dentry", 1, 1, "sockfs dentry"),
    ("lsm_inode_cache", 1, 1, "LSM blob of the inode"),
    ("lsm_file_cache", 1, 1, "LSM blob of the file"),
    ("eventpoll_epi", 1, 1 + ports / n, "server: epitem; client: tcp_bind2/bind buckets (same cache)"),
    ("eventpoll_pwq", 1, 0, "epoll wait-queue entry on the socket"),
    ("ep_head", 1, 0, "epitems_head of a watched file"),
]
print()
print("mode=%s N=%d client_processes=%d distinct_client_ports=%d own_netns=%s "
      "server_live/subscribers/channels=%s" % (mode, n, nclients, ports, netns, live.replace(" ", "/")))
print("%-17s %6s %9s %9s %7s %10s %10s  %s" % ("slab cache", "size", "expected", "measured",
      "ratio", "B/conn srv", "B/conn cli", "what"))
srv = cli = 0.0
exp_total = meas_total = 0.0
seen = {}
for name, so, co, note in rows:
    if name not in sa or name not in sb:
        print("%-17s  not readable" % name)
        continue
    objs = sa[name][0] - sb[name][0]
    size, ident = sa[name][1], sa[name][2]
    expected = (so + co) * n
    # Caches merged by SLUB share one counter: compare the counter once, against
    # the sum of what every row in it expects.
    seen.setdefault(ident, [0.0, objs, size])
    seen[ident][0] += expected
    srv += so * size
    cli += co * size
    print("%-17s %6d %9.0f %9d %7.2f %10.0f %10.0f  %s"
          % (name, size, expected, objs, objs / expected if expected else 0, so * size, co * size, note))
for ident, (expected, objs, size) in seen.items():
    exp_total += expected * size
    meas_total += objs * size
print("%-17s %6s %9s %9s %7.2f %10.0f %10.0f  expected = from the objects above; ratio = measured/expected bytes"
      % ("kernel per conn", "", "", "", meas_total / exp_total if exp_total else 0, srv, cli))
named = set(seen)
other = []
for name in ia:
    if name not in ib:
        continue
    try:
        ident = os.path.basename(os.path.realpath("/sys/kernel/slab/" + name))
    except OSError:
        ident = name
    if ident in named:
        continue
    d = (ia[name][0] - ib[name][0]) * ia[name][2]
    if abs(d) / n >= 8:
        other.append((d, name))
if other:
    print("other slab caches that moved by >= 8 B/conn (both ends, plus any other work on the box):")
    print("   " + ", ".join("%s %+.0f" % (nm, d / n) for d, nm in sorted(other, reverse=True)))
print("user space: tidegate VmRSS delta / N = %.0f B (RssAnon %.0f B)" % (rss / n, anon / n))
print("sockstat (this namespace): TCP inuse %+d = %.2f per connection; TCP mem %+d pages (global counter)"
      % (in1 - in0, (in1 - in0) / n, mem1 - mem0))
print("meminfo Slab %+d kB = %.0f B per connection, both ends (whole machine; freed objects reused)"
      % (slabkb, slabkb * 1024 / n))
m = 1_000_000
print("projection to 1,000,000 connections, server side: user %.0f MB + kernel %.0f MB = %.2f GB"
      % (rss / n * m / 1e6, srv * m / 1e6, (rss / n + srv) * m / 1e9))
print("RESULT c1m mode=%s conns=%d user_bytes_per_conn=%.0f kernel_server_bytes_per_conn=%.0f "
      "kernel_client_bytes_per_conn=%.0f slab_measured_over_expected=%.2f meminfo_slab_bytes_per_conn=%.0f "
      "tcp_inuse_delta=%d tcp_mem_pages_delta=%d"
      % (mode, n, rss / n, srv, cli, meas_total / exp_total if exp_total else 0,
         slabkb * 1024 / n, in1 - in0, mem1 - mem0))
EOF
        for ((k = 0; k < ${#cfds[@]}; k++)); do echo quit >&"${cfds[k]}"; done
        echo quit >&"$wfd"
        local p
        for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
        stop_all
        sleep 1
    done
    return $rc
}

if [[ ${C1M_INNER:-0} == 1 ]]; then
    inner "$1" "$2"
    exit $?
fi

# ================================================================ outer ======
usage() { echo "usage: bash bench/c1m.sh [CONNECTIONS]" >&2; exit 2; }
[[ $# -le 1 ]] || usage
[[ -x $TG ]] || { log "$TG is missing: run make VARIANT=release build"; exit 2; }

HARD=$(ulimit -Hn)
[[ $HARD == unlimited ]] && HARD=$(cat /proc/sys/fs/nr_open)
NR_OPEN=$(cat /proc/sys/fs/nr_open)
FILE_MAX=$(cat /proc/sys/fs/file-max)
FILES_USED=$(cut -f1 /proc/sys/fs/file-nr)
MEM_AVAIL_KB=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
read -r PLO PHI < /proc/sys/net/ipv4/ip_local_port_range
# Can this process raise its hard limit (CAP_SYS_RESOURCE)? Ask the kernel.
CAN_RAISE=0
if (ulimit -Hn $((HARD + 1))) 2>/dev/null; then CAN_RAISE=1; fi

MAXN=$((HARD - SERVER_FD_MARGIN))
N=${1:-$MAXN}
[[ $N =~ ^[0-9]+$ && $N -ge 1 ]] || usage

# ---- what N needs, and what blocks it ----
NEED_FD=$((N + SERVER_FD_MARGIN))
NEED_FILES=$((2 * N + FILES_USED + 65536))   # both ends are on this box
SRC_ADDRS=253                                  # 127.0.0.2 - 127.0.0.254
PORTS_NOW=$(((PHI - PLO + 1) * SRC_ADDRS))
PORTS_WIDE=$(((65535 - 1024 + 1) * SRC_ADDRS))
EST_BYTES=12288   # per connection, both ends: ~2 x 4.5 KB kernel, <1 KB tidegate, ~1.5 KB Python client
NEED_MEM_KB=$((N * EST_BYTES / 1024))
declare -a BLOCK=()
if ((NEED_FD > HARD)); then
    if ((CAN_RAISE == 1)); then
        if ((NEED_FD > NR_OPEN)) && [[ $EUID -ne 0 ]]; then
            BLOCK+=("fs.nr_open is $NR_OPEN < $NEED_FD and only root may raise it: sysctl -w fs.nr_open=$((NEED_FD + 1024))")
        fi
    else
        BLOCK+=("RLIMIT_NOFILE: tidegate needs $NEED_FD descriptors for $N connections, but this process's hard limit is $HARD and cannot be raised here (no CAP_SYS_RESOURCE: 'ulimit -Hn $NEED_FD' fails). Set fs.nr_open >= $NEED_FD, then LimitNOFILE=$NEED_FD in the tidegate unit (systemd) or 'ulimit -Hn $NEED_FD -Sn $NEED_FD' as root before starting it (and the same, or several processes of at most that many connections each, for the load client). The largest run here: bash bench/c1m.sh $MAXN")
    fi
fi
if ((NEED_FILES > FILE_MAX)) && [[ $EUID -ne 0 ]]; then
    BLOCK+=("fs.file-max is $FILE_MAX < $NEED_FILES (both ends of $N connections): sysctl -w fs.file-max=$NEED_FILES as root")
fi
if ((N > PORTS_WIDE)); then
    BLOCK+=("ephemeral ports: $N connections from $SRC_ADDRS source addresses to one address:port exceed $PORTS_WIDE even with ip_local_port_range '1024 65535': listen on more ports or addresses")
elif ((N > PORTS_NOW)) && [[ $EUID -ne 0 ]]; then
    BLOCK+=("ephemeral ports: ip_local_port_range '$PLO $PHI' x $SRC_ADDRS source addresses = $PORTS_NOW < $N: sysctl -w net.ipv4.ip_local_port_range='1024 65535' as root")
fi
if ((NEED_MEM_KB > MEM_AVAIL_KB * 8 / 10)); then
    BLOCK+=("memory: about $((NEED_MEM_KB / 1024)) MB for both ends of $N connections (12 KB each, server and client on this box) but only $((MEM_AVAIL_KB / 1024)) MB available: run the client on another machine or ask for fewer")
fi
if ((${#BLOCK[@]} > 0)); then
    echo "c1m: REFUSED: $N connections do not fit this box's limits:" >&2
    for b in "${BLOCK[@]}"; do echo "  - $b" >&2; done
    exit 2
fi

# ---- limits and global sysctls (restored on exit) ----
OUTER_PID=""
cleanup_outer() {
    if [[ -n $OUTER_PID ]] && kill -0 "$OUTER_PID" 2>/dev/null; then
        kill -TERM "$OUTER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$OUTER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$OUTER_PID" 2>/dev/null
    fi
    restore_sysctls
}
trap cleanup_outer EXIT
trap 'exit 3' TERM INT

log "limits: RLIMIT_NOFILE hard $HARD (raisable: $([[ $CAN_RAISE == 1 ]] && echo yes || echo no)), fs.nr_open $NR_OPEN, fs.file-max $FILE_MAX ($FILES_USED in use), MemAvailable $((MEM_AVAIL_KB / 1024)) MB"
if ((NEED_FD > HARD)); then
    raise_sysctl fs.nr_open $((NEED_FD + 1024)) "per-process descriptor ceiling for RLIMIT_NOFILE" || exit 2
    ulimit -Hn "$NEED_FD" && ulimit -Sn "$NEED_FD" || { log "cannot raise RLIMIT_NOFILE to $NEED_FD"; exit 2; }
    log "limit    RLIMIT_NOFILE: raised to $NEED_FD"
else
    log "limit    RLIMIT_NOFILE hard $HARD >= $NEED_FD: enough for the server"
fi
raise_sysctl fs.file-max "$NEED_FILES" "system-wide open files: both ends of every connection" ||
    { ((NEED_FILES > FILE_MAX)) && exit 2; }
PER_PROC=$(($(ulimit -Hn) - CLIENT_FD_MARGIN))
log "client: $(((N + PER_PROC - 1) / PER_PROC)) process(es) of at most $PER_PROC connections, sources 127.0.0.2-127.0.0.254"
if [[ -w /proc/sys/net/netfilter/nf_conntrack_max ]]; then
    log "sysctl   net.netfilter.nf_conntrack_max: not changed: the test namespace has no netfilter rules, so nothing is tracked (count now $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo -)); a host with conntrack needs it >= its connections, or NOTRACK on the port"
fi
log "sysctl   net.ipv4.tcp_mem: not changed (global; idle sockets queue nothing: see the TCP mem delta)"

export C1M_INNER=1 MODES TIMEOUT SETTLE IO_THREADS
if [[ $EUID -eq 0 ]] && unshare -n true 2>/dev/null; then
    C1M_NETNS=1 timeout --kill-after=10 "$TIMEOUT" unshare -n -- bash "$0" "$N" "$PER_PROC" &
else
    log "no private network namespace (not root or no unshare): running on 127.0.0.0/8 here"
    if (( N > PORTS_NOW )); then
        set_sysctl net.ipv4.ip_local_port_range "1024 65535" "ephemeral ports for $N client connections" || exit 2
    fi
    C1M_NETNS=0 timeout --kill-after=10 "$TIMEOUT" bash "$0" "$N" "$PER_PROC" &
fi
OUTER_PID=$!
wait "$OUTER_PID"
rc=$?
OUTER_PID=""
((rc == 124)) && { log "time-out after ${TIMEOUT}s"; rc=3; }
exit $rc
