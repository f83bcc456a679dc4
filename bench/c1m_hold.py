#!/usr/bin/python3
"""Hold COUNT idle WebSocket subscribers open against a tidegate on HOST:PORT
(the load client of bench/c1m.sh; Python 3 standard library only).

Each connection binds a source address in 127.0.0.FIRST-127.0.0.LAST (round
robin, with IP_BIND_ADDRESS_NO_PORT so the port is chosen at connect time per
4-tuple), upgrades GET /ws, sends {"op":"sub","ch":NAME} and waits for the
"sub" answer. NAME is PREFIX (every connection on one channel) or, with
--per-conn, PREFIX-<OFFSET+i> (one channel per connection).

Connections are opened with poll(), never epoll, so that the client adds no
eventpoll objects of its own to the kernel's slabs: every epoll item the
kernel holds during the hold is the server's. Once all are subscribed the
client prints `READY <n> ports=<distinct local ports>` and then obeys lines
on stdin:
  drain  read (and answer with a pong) whatever the server sent meanwhile
         (pings), so no unread bytes sit in the client's receive queues;
         prints `DRAINED <connections that had bytes> closed=<n>`
  quit   (or EOF) close everything and exit (status 1 if the server had
         closed any connection)

Exit status: 0 ok; 1 a connection failed or was closed; 2 bad usage or an
open-file limit too low; 3 time-out. Progress goes to stderr.

usage: c1m_hold.py [--per-conn] [--offset K] [--prefix NAME] [--timeout S]
                   [--inflight M] [--src-first A] [--src-last B] HOST PORT COUNT
"""
import argparse
import base64
import errno
import json
import os
import resource
import select
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def log(msg):
    print("c1m_hold: " + msg, file=sys.stderr, flush=True)


def masked(opcode, payload):
    key = os.urandom(4)
    n = len(payload)
    assert n < 126
    return (bytes([0x80 | opcode, 0x80 | n]) + key
            + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))


def frames(buf):
    """Split complete server frames (unmasked) off buf: ([(op, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, pos = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, pos = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < pos + n:
            break
        out.append((op, buf[pos:pos + n]))
        buf = buf[pos + n:]
    return out, buf


class Conn:
    __slots__ = ("sock", "state", "buf", "chan")

    def __init__(self, sock, chan):
        self.sock, self.state, self.buf, self.chan = sock, "connecting", b"", chan


def open_all(a, deadline):
    nsrc = a.src_last - a.src_first + 1
    poller = select.poll()
    byfd, idle, failures = {}, [], []
    started = 0
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = ("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (a.host, a.port, key)).encode()

    def done(c, why=None):
        poller.unregister(c.sock.fileno())
        del byfd[c.sock.fileno()]
        if why is None:
            c.state, c.buf = "idle", b""
            idle.append(c)
        else:
            failures.append(why)
            c.sock.close()

    while len(idle) + len(failures) < a.count:
        while started < a.count and len(byfd) < a.inflight:
            i = started
            started += 1
            src = "127.0.0.%d" % (a.src_first + i % nsrc)
            chan = "%s-%d" % (a.prefix, a.offset + i) if a.per_conn else a.prefix
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            s.bind((src, 0))
            c = Conn(s, chan)
            err = s.connect_ex((a.host, a.port))
            byfd[s.fileno()] = c
            poller.register(s.fileno(), select.POLLOUT)
            if err not in (0, errno.EINPROGRESS):
                done(c, "connect from %s: %s" % (src, os.strerror(err)))
        if time.monotonic() > deadline:
            log("time-out: %d subscribed, %d failed, %d in flight of %d"
                % (len(idle), len(failures), len(byfd), a.count))
            sys.exit(3)
        for fd, ev in poller.poll(500):
            c = byfd.get(fd)
            if c is None:
                continue
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    done(c, "connect: %s" % os.strerror(err))
                    continue
                try:
                    c.sock.send(upgrade)
                except OSError as e:
                    done(c, "send: %s" % e)
                    continue
                c.state = "upgrading"
                poller.modify(fd, select.POLLIN)
                continue
            try:
                chunk = c.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                done(c, "recv: %s" % e)
                continue
            if not chunk:
                done(c, "closed by the server during %s" % c.state)
                continue
            c.buf += chunk
            if c.state == "upgrading":
                end = c.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not c.buf.startswith(b"HTTP/1.1 101"):
                    done(c, "upgrade answered %r" % c.buf[:40])
                    continue
                c.buf = c.buf[end + 4:]
                c.state = "subscribing"
                try:
                    c.sock.send(masked(1, json.dumps({"op": "sub", "ch": c.chan}).encode()))
                except OSError as e:
                    done(c, "send: %s" % e)
                    continue
            fs, c.buf = frames(c.buf)
            for op, payload in fs:
                if op == 1 and b'"type":"sub"' in payload:
                    c.state = "subscribed"
                elif op == 1 and b'"type":"error"' in payload:
                    done(c, "sub refused: %r" % payload[:120])
                    break
            if c.state == "subscribed":
                done(c)
    if failures:
        log("%d of %d connections failed; first: %s" % (len(failures), a.count, failures[0]))
        for c in idle:
            c.sock.close()
        sys.exit(1)
    return idle


def drain(conns):
    """Read what arrived while idle (pings), answer pings; return (had, closed)."""
    p = select.poll()
    byfd = {}
    for c in conns:
        p.register(c.sock.fileno(), select.POLLIN | select.POLLRDHUP)
        byfd[c.sock.fileno()] = c
    had = closed = 0
    for fd, ev in p.poll(0):
        c = byfd[fd]
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed += 1
            continue
        had += 1
        fs, c.buf = frames(c.buf + data)
        for op, payload in fs:
            if op == 9:  # ping: pong with the same payload
                try:
                    c.sock.send(masked(10, payload))
                except OSError:
                    pass
            elif op == 8:
                closed += 1
    return had, closed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--per-conn", action="store_true",
                    help="one channel per connection (PREFIX-<offset+i>)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--prefix", default="c1m")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--src-first", type=int, default=2)
    ap.add_argument("--src-last", type=int, default=254)
    a = ap.parse_args()
    if a.count < 1 or not (1 <= a.src_first <= a.src_last <= 254):
        ap.error("bad count or source range")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.count + 32
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            log("open-file limit %d is too low for %d connections" % (hard, a.count))
            sys.exit(2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    t0 = time.monotonic()
    conns = open_all(a, t0 + a.timeout)
    ports = len({c.sock.getsockname()[1] for c in conns})
    log("%d subscribers after %.1f s" % (len(conns), time.monotonic() - t0))
    print("READY %d ports=%d" % (len(conns), ports), flush=True)
    bad = 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "drain":
            had, closed = drain(conns)
            bad = max(bad, closed)
            print("DRAINED %d closed=%d" % (had, closed), flush=True)
        elif cmd == "quit":
            break
    for c in conns:
        c.sock.close()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
