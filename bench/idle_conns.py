#!/usr/bin/python3
"""Hold COUNT idle HTTP/1.1 keep-alive connections open against HOST:PORT.

Each connection binds a source address in 127.0.0.2-127.0.0.254 (so ephemeral
ports never run out), sends one `GET /healthz`, reads the whole response
(status 200 expected), then stays open and idle.  Once every connection is
idle (and, with --stats, once the server's `GET /stats` reports
`connections.live >= COUNT`), the client either runs the command given after
`--` while the connections are held, or prints `READY <n>` on stdout and
waits for a line (or EOF) on stdin.  It then checks that the server closed
none of them, closes them all and exits.

Standard library only; run with /usr/bin/python3.

Exit status: 0 on success, 1 if connections failed or were closed by the
server, 2 on bad usage, 3 on a time-out, else the command's own status if it
failed.

stdout carries only the command's output (or the READY line); progress and
errors go to stderr.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

REQUEST_PATH = "/healthz"


def log(msg):
    print("idle_conns: " + msg, file=sys.stderr, flush=True)


def parse_response(buf):
    """Return (status, body, consumed) if buf holds one complete response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ValueError("bad status line %r" % head[0])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body_start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pos, body = body_start, b""
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(buf[pos:eol].split(b";")[0], 16)
            if len(buf) < eol + 2 + size + 2:
                return None
            if size == 0:
                # No trailers expected from these servers.
                return status, body, eol + 4
            body += buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    length = int(headers.get("content-length", "0"))
    if len(buf) < body_start + length:
        return None
    return status, buf[body_start:body_start + length], body_start + length


def http_get(host, port, path, timeout):
    """One request on a fresh connection (Connection: close); returns (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                   % (path, host, port)).encode())
        buf = b""
        while True:
            r = parse_response(buf)
            if r is not None:
                return r[0], r[1]
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("server closed before a full response")
            buf += chunk


def live_connections(host, port, path, timeout):
    status, body = http_get(host, port, path, timeout)
    if status != 200:
        raise ValueError("GET %s answered %d" % (path, status))
    doc = json.loads(body)
    return int(doc["connections"]["live"])


class Conn:
    __slots__ = ("sock", "state", "buf")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"
        self.buf = b""


def open_idle(args, deadline):
    """Open args.count connections; return the list of idle sockets."""
    first, last = args.src_first, args.src_last
    nsrc = last - first + 1
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
               % (REQUEST_PATH, args.host, args.port)).encode()
    sel = selectors.DefaultSelector()
    idle, failures = [], []
    started = inflight = 0

    def fail(c, why):
        nonlocal inflight
        failures.append(why)
        inflight -= 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while len(idle) + len(failures) < args.count:
        while started < args.count and inflight < args.inflight:
            src = "127.0.0.%d" % (first + started % nsrc)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.bind((src, 0))
            err = s.connect_ex((args.host, args.port))
            started += 1
            inflight += 1
            c = Conn(s)
            if err not in (0, errno.EINPROGRESS):
                fail(c, "connect from %s: %s" % (src, os.strerror(err)))
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        if time.monotonic() > deadline:
            log("time-out: %d idle, %d failed, %d in flight of %d"
                % (len(idle), len(failures), inflight, args.count))
            sys.exit(3)
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, "connect: %s" % os.strerror(err))
                    continue
                try:
                    c.sock.send(request)  # a few dozen bytes: one send
                except OSError as e:
                    fail(c, "send: %s" % e)
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                chunk = c.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(c, "recv: %s" % e)
                continue
            if not chunk:
                fail(c, "closed by server before the response")
                continue
            c.buf += chunk
            try:
                r = parse_response(c.buf)
            except ValueError as e:
                fail(c, str(e))
                continue
            if r is None:
                continue
            status, _, used = r
            if status != 200 or used != len(c.buf):
                fail(c, "status %d, %d extra bytes" % (status, len(c.buf) - used))
                continue
            sel.unregister(c.sock)
            c.state = "idle"
            c.buf = b""
            inflight -= 1
            idle.append(c.sock)
    sel.close()
    if failures:
        log("%d of %d connections failed; first: %s"
            % (len(failures), args.count, failures[0]))
        for s in idle:
            s.close()
        sys.exit(1)
    return idle


def count_closed(socks):
    """Idle sockets that became readable (EOF, reset or unexpected bytes)."""
    import select
    p = select.poll()
    for s in socks:
        p.register(s.fileno(), select.POLLIN | select.POLLRDHUP)
    return len(p.poll(0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--stats", metavar="PATH",
                    help="poll GET PATH (JSON) until connections.live >= count")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds allowed to open the connections and for the "
                         "server to report them (default 120)")
    ap.add_argument("--inflight", type=int, default=256,
                    help="connections being opened at once (default 256)")
    ap.add_argument("--src-first", type=int, default=2)
    ap.add_argument("--src-last", type=int, default=254)
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="-- CMD ARGS...: run while the connections are held")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.count < 1 or not (1 <= args.src_first <= args.src_last <= 254):
        ap.error("bad count or source range")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.count + 64
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            log("open-file limit %d is too low for %d connections" % (hard, args.count))
            sys.exit(2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    t0 = time.monotonic()
    deadline = t0 + args.timeout
    socks = open_idle(args, deadline)
    log("%d idle keep-alive connections open after %.1f s"
        % (len(socks), time.monotonic() - t0))

    if args.stats:
        live = -1
        while True:
            try:
                live = live_connections(args.host, args.port, args.stats, 5.0)
            except (OSError, ValueError, KeyError) as e:
                log("GET %s: %s" % (args.stats, e))
            if live >= args.count:
                break
            if time.monotonic() > deadline:
                log("time-out: server reports %d live connections, want %d"
                    % (live, args.count))
                sys.exit(3)
            time.sleep(0.2)
        log("server reports connections.live = %d" % live)

    closed = count_closed(socks)
    if closed:
        log("%d connections closed by the server before the hold" % closed)
        sys.exit(1)

    rc = 0
    if cmd:
        sys.stdout.flush()
        rc = subprocess.call(cmd)
    else:
        print("READY %d" % len(socks), flush=True)
        sys.stdin.readline()

    closed = count_closed(socks)
    for s in socks:
        s.close()
    if closed:
        log("%d connections closed by the server during the hold" % closed)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
