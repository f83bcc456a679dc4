"""Process and connection life cycle: clients that vanish, SIGTERM/SIGINT with
work in flight, SIGHUP log reopening, running out of descriptors, command line
and configuration errors."""

import os
import re
import signal
import socket
import threading
import time

import pytest

from tidegate import (LOG_LINE_RE, Conn, ConnectionClosed, Server, request,
                      run_binary, source_address, wait_for, wait_readable, wait_writable)

REQ = request("GET", "/healthz")


def small_rcvbuf_conn(srv):
    """A connection whose receive buffer is tiny, so responses back up quickly."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    c = Conn(s, srv)
    srv.conns.append(c)
    return c


def requests_counted(srv, base, calls_before):
    """Requests the server counted since `base` stats, minus our own /stats polls."""
    def count(st):
        return st["requests"] - base["requests"] - (srv.stats_calls - calls_before)
    return count


# ---- clients that vanish ----

def test_clients_vanishing_mid_request_leak_nothing(server):
    fds = server.fd_count()
    partial = [
        b"GET /healthz HTTP/1.1\r\nHo",                                           # mid head
        b"GET /heal",                                                             # mid request line
        request("GET", "/healthz", headers={"Content-Length": 10000}) + b"x" * 100,  # mid body
        request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"}) + b"100\r\nyyy",
        request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n",
        request("GET", "/healthz", headers={"Content-Length": 10, "Expect": "100-continue"}),
    ]
    conns = []
    for i in range(240):
        c = server.connect(source=source_address(i))
        c.sendall(partial[i % len(partial)])
        conns.append(c)
    server.wait_live(len(conns) + 1, timeout=10)
    for i, c in enumerate(conns):
        if i % 2:
            c.abort()              # reset
        else:
            c.close()              # FIN
    st = server.wait_live(1, timeout=10)
    assert st["connections"]["closed"] == st["connections"]["accepted"] - 1
    server.wait_fds(fds)
    assert server.get("/healthz").status == 200


def test_clients_vanishing_mid_response_leak_nothing(server):
    fds = server.fd_count()
    blob = request("GET", "/metrics") * 3000
    conns = []
    for i in range(20):
        c = small_rcvbuf_conn(server)
        sent, deadline = 0, time.monotonic() + 2
        # Push requests until the server stops taking them (its answers are stuck).
        while sent < len(blob) and time.monotonic() < deadline:
            if not wait_writable(c.sock, 0.1):
                break
            sent += c.send_some(blob[sent:sent + 65536])
        conns.append(c)
    for c in conns:
        assert c.readable(5 * server.slow), "no response at all"
    for i, c in enumerate(conns):
        if i % 2:
            c.abort()
        else:
            c.close()              # with unread data: the kernel resets too
    st = server.wait_live(1, timeout=10)
    assert st["connections"]["closed"] == st["connections"]["accepted"] - 1
    server.wait_fds(fds)
    assert server.get("/healthz").status == 200


def test_thousands_of_pipelined_requests_then_reset(server):
    fds = server.fd_count()
    c = server.connect()
    blob = REQ * 5000
    sent = 0
    while sent < len(blob):
        if not wait_writable(c.sock, 0.5):
            break
        sent += c.send_some(blob[sent:])
    assert c.readable(5 * server.slow)
    c.abort()
    server.wait_live(1, timeout=10)
    server.wait_fds(fds)


# ---- signals ----

def test_sigterm_answers_requests_in_flight(make_server):
    srv = make_server(io_threads=2)
    idle = srv.connect()
    assert idle.request("GET", "/healthz").status == 200
    c = small_rcvbuf_conn(srv)
    base = srv.stats()
    calls = srv.stats_calls
    n = 300
    c.sendall(request("GET", "/metrics") * n)       # ~11 KiB of requests, ~MB of answers
    count = requests_counted(srv, base, calls)
    # Wait until the server has read (and answered into its buffers) as many of
    # them as it will without the client reading: all, or until it stops growing.
    seen = []

    def settled(st):
        seen.append(count(st))
        return seen[-1] == n or (len(seen) >= 4 and seen[-1] == seen[-4] and seen[-1] > 0)
    srv.wait_stats(settled, timeout=5, what="requests read")
    counted = seen[-1]

    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    got = []
    while True:
        try:
            r = c.recv_response(timeout=3 * srv.slow)
        except ConnectionClosed:
            break
        got.append(r.status)
    assert c.eof, "in-flight connection neither finished nor closed"
    assert c.buf == b"", "connection closed in the middle of a response (%d bytes left)" % len(c.buf)
    code = srv.wait(max(0.0, t0 + 2.0 + (0.5 if srv.asan else 0) - time.monotonic()))
    elapsed = time.monotonic() - t0
    assert code == 0, "exit %r %.2fs after SIGTERM" % (code, elapsed)
    assert len(got) >= counted, "server had answered %d requests, client received %d%s" % (
        counted, len(got), " (connection reset)" if c.reset else "")
    assert len(got) <= n
    assert set(got) == {200}
    print("server had answered %d of %d when signalled; client received %d" % (counted, n, len(got)))
    data, _, closed = idle.wait_closed(timeout=0.5)
    assert closed and data == b"", "idle connection got %r" % data[:200]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_0_within_2s_whatever_the_clients_do(make_server, sig):
    srv = make_server()
    idle = srv.connect()
    assert idle.request("GET", "/healthz").status == 200
    silent = srv.connect()
    partial = srv.connect()
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    body = srv.connect()
    body.sendall(request("GET", "/healthz", headers={"Content-Length": 1000}) + b"x" * 10)
    stuck = small_rcvbuf_conn(srv)                    # never reads its answers

    def pump():
        try:
            stuck.sock.sendall(request("GET", "/metrics") * 5000)
        except OSError:
            pass
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    base = srv.stats()
    count = requests_counted(srv, base, srv.stats_calls)
    srv.wait_stats(lambda st: st["connections"]["live"] == 6 and count(st) >= 3,
                   what="all connections up and the stuck client's answers piling up")
    t0 = time.monotonic()
    srv.signal(sig)
    code = srv.wait(2.0 + (0.5 if srv.asan else 0) + 3)
    elapsed = time.monotonic() - t0
    assert code == 0, "exit code %r" % code
    assert elapsed <= 2.0 + (0.5 if srv.asan else 0), "took %.2fs to exit" % elapsed
    for c in (idle, silent, partial, body):
        data, _, closed = c.wait_closed(timeout=1)
        assert closed, "connection still open after the server exited"
        assert not data.startswith(b"HTTP/1.1 200"), data[:100]
    stuck.abort()
    t.join(5)


def test_sigterm_stops_accepting(make_server):
    srv = make_server()
    stuck = small_rcvbuf_conn(srv)     # keeps the server busy through its grace period
    stuck.sendall(request("GET", "/metrics") * 300)
    assert stuck.readable(5)
    srv.signal(signal.SIGTERM)

    def refused_or_unanswered():
        s = socket.socket()
        try:
            s.settimeout(0.5)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(REQ)
            if not wait_readable([s], 0.3):
                return True
            try:
                return not s.recv(100).startswith(b"HTTP/1.1 200")
            except OSError:
                return True
        except OSError:
            return True
        finally:
            s.close()
    wait_for(refused_or_unanswered, 1.0, interval=0.05,
             what="new connections refused or left unanswered after SIGTERM")
    stuck.recv_all(timeout=3)
    assert srv.wait(3) == 0


def test_sighup_reopens_log_file(make_server):
    srv = make_server(log_to_file=True, log_level="debug")
    path = srv.log_path
    with open(path) as f:
        first = f.read()
    assert "listening on 127.0.0.1:%d" % srv.port in first
    os.rename(path, path + ".1")
    srv.signal(signal.SIGHUP)
    # Activity after the reopen produces log lines (debug level), and a stop does.
    for _ in range(3):
        assert srv.get("/healthz").status == 200
    c = srv.connect()
    c.sendall(b"BROKEN\r\n\r\n")
    assert c.recv_response().status == 400
    wait_for(lambda: os.path.exists(path), 3 * srv.slow, what="a new log file at %s" % path)
    assert srv.stop() == 0
    with open(path) as f:
        new = f.read()
    with open(path + ".1") as f:
        old = f.read()
    assert new.strip(), "nothing written to the reopened log (old file:\n%s)" % old[-2000:]
    for line in new.splitlines():
        assert LOG_LINE_RE.match(line), "bad log line %r" % line
    assert "listening on" not in new
    assert old.startswith(first)


def test_log_file_receives_the_log_and_line_format(make_server):
    srv = make_server(log_to_file=True)
    with open(srv.log_path) as f:
        lines = f.read().splitlines()
    line = next(l for l in lines if "listening on" in l)
    assert LOG_LINE_RE.match(line), line
    assert re.match(r"^\S+Z info  .*listening on 127\.0\.0\.1:%d\b" % srv.port, line), line
    with open(srv.stderr_path) as f:
        assert "listening on" not in f.read()


def test_listening_line_on_stderr_without_log_file(server):
    text = server.log_text()
    line = next(l for l in text.splitlines() if "listening on" in l)
    assert LOG_LINE_RE.match(line), line
    assert line.endswith(":%d" % server.port) or (":%d " % server.port) in line


# ---- descriptors run out ----

def test_emfile_keeps_serving_and_does_not_spin(make_server):
    srv = make_server(io_threads=1, workers=1, backlog=512, nofile=64)
    a = srv.connect()
    assert a.request("GET", "/healthz").status == 200
    fds = srv.fd_count()
    clients = []
    for _ in range(120):
        c = srv.connect()
        c.sendall(REQ)
        clients.append(c)
    st = srv.wait_stats(lambda s: s["errors"]["emfile"] > 0, conn=a, what="errors.emfile > 0")
    assert srv.fd_count() <= 64

    # Out of descriptors, the server must wait rather than spin on accept.
    cpu0, t0 = srv.cpu_seconds(), time.monotonic()
    time.sleep(1.0)                                  # a measurement window
    cpu1, t1 = srv.cpu_seconds(), time.monotonic()
    share = (cpu1 - cpu0) / (t1 - t0)
    assert share < (0.25 if srv.asan else 0.1), "server used %.0f%% CPU while out of fds" % (share * 100)

    st = srv.stats(conn=a)                           # existing connections still answered
    assert st["errors"]["emfile"] > 0
    answered = [c for c in clients if c.readable(0)]
    assert 0 < len(answered) < len(clients), "%d of %d answered" % (len(answered), len(clients))
    print("out of fds: %d of %d answered, CPU %.1f%%, emfile %d"
          % (len(answered), len(clients), share * 100, st["errors"]["emfile"]))

    # Closing clients frees descriptors: the waiting connections get accepted.
    pending = list(clients)
    deadline = time.monotonic() + 15 * srv.slow
    while pending:
        ready = wait_readable(pending, 0.5)
        for c in ready:
            r = c.recv_response()
            assert (r.status, r.body) == (200, b"ok\n")
            c.close()
            pending.remove(c)
        assert time.monotonic() < deadline, "%d connections never answered" % len(pending)
    srv.wait_stats(lambda s: s["connections"]["live"] == 1, conn=a, what="live == 1")
    srv.wait_fds(fds)
    a.close()
    assert srv.get("/healthz").body == b"ok\n"


# ---- command line and configuration ----

def test_help_and_version_exit_0():
    code, out, err = run_binary(["--help"])
    assert code == 0, err
    for flag in ("--listen", "--io-threads", "--workers", "--config", "--log-level",
                 "--log-file", "--reuseport", "--help", "--version"):
        assert flag in out + err, flag
    code, out, err = run_binary(["--version"])
    assert code == 0, err
    assert re.search(r"\d+\.\d+", out + err), out + err


@pytest.mark.parametrize("args, named", [
    (["--bogus"], "--bogus"),
    (["--io-threads", "abc"], "--io-threads"),
    (["--io-threads"], "--io-threads"),
    (["--workers", "x"], "--workers"),
    (["--listen", "nowhere"], "--listen"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--log-level", "loud"], "--log-level"),
    (["--config"], "--config"),
])
def test_bad_flag_exits_2_naming_it(args, named):
    if args[0] != "--listen":
        args = ["--listen", "127.0.0.1:0"] + args     # missing values come last
    code, out, err = run_binary(args, timeout=5)
    assert code == 2, "exit %r for %s; stderr %r" % (code, args, err)
    assert named in err, "stderr does not name %s: %r" % (named, err)
    assert "listening on" not in out + err


def test_missing_config_file_exits_2(tmp_path):
    path = str(tmp_path / "nope.conf")
    code, _, err = run_binary(["--config", path, "--listen", "127.0.0.1:0"])
    assert code == 2
    assert path in err


@pytest.mark.parametrize("line, key", [
    ("bogus_key = 1", "bogus_key"),
    ("http.max_uri = 12q", "http.max_uri"),
    ("http.header_timeout = 5", "http.header_timeout"),
    ("http.body_timeout = 5x", "http.body_timeout"),
    ("shutdown_grace = soon", "shutdown_grace"),
    ("reuseport = maybe", "reuseport"),
    ("io_threads = zero", "io_threads"),
    ("workers = many", "workers"),
    ("log_level = loud", "log_level"),
    ("listen = nowhere", "listen"),
    ("backlog = lots", "backlog"),
    ("http.max_headers = -", "http.max_headers"),
    ("just some words", None),
])
def test_bad_config_line_exits_2_naming_file_line_and_key(tmp_path, line, key):
    path = tmp_path / "bad.conf"
    path.write_text("# a comment\n\nworkers = 2\n%s\nio_threads = 1\n" % line)
    args = ["--config", str(path)]
    if key != "listen":            # a --listen flag would override the bad value
        args += ["--listen", "127.0.0.1:0"]
    code, out, err = run_binary(args, timeout=5)
    assert code == 2, "exit %r for %r; stderr %r" % (code, line, err)
    assert "%s:4" % path in err, "stderr does not name %s:4: %r" % (path, err)
    if key:
        assert key in err, "stderr does not name %s: %r" % (key, err)
    assert "listening on" not in out + err


def test_full_valid_config_is_accepted(make_server):
    srv = make_server({
        "io_threads": 2, "workers": 2, "reuseport": False, "log_level": "info",
        "backlog": 128, "shutdown_grace": "500ms", "http.max_uri": "2k",
        "http.max_header_size": "16k", "http.max_headers": 50, "http.max_body": "1m",
        "http.header_timeout": "2m", "http.body_timeout": "1h",
        "http.keepalive_timeout": "75s", "http.send_timeout": "60s",
    })
    c = srv.connect()
    assert c.request("GET", "/healthz").status == 200
    c.sendall(request("GET", "/" + "a" * 3000))
    assert c.recv_response().status == 414        # http.max_uri = 2k took effect
    st = srv.stats()
    assert (st["io_threads"], st["workers"]) == (2, 2)


def test_config_with_comments_blank_lines_and_spacing(make_server):
    srv = make_server(start=False)
    text = ("# tidegate\n\n   \n# io\nio_threads=3\n  workers   =   2  \n\n"
            "\t# indented comment\nhttp.max_uri = 1k\n")

    def write_config():
        with open(srv.config_path, "w") as f:
            f.write(text)
    srv.write_config = write_config
    srv.start()
    st = srv.stats()
    assert (st["io_threads"], st["workers"]) == (3, 2)
    c = srv.connect()
    c.sendall(request("GET", "/" + "a" * 1100))
    assert c.recv_response().status == 414


def test_flags_override_config_file(make_server):
    srv = make_server({"io_threads": 1, "workers": 1, "listen": "127.0.0.1:1"},
                      args=["--io-threads", "3", "--workers", "2"])
    assert srv.port != 1
    st = srv.stats()
    assert (st["io_threads"], st["workers"]) == (3, 2)
    assert len(st["loops"]) == 3


def test_reuseport_lets_two_servers_share_a_port(make_server):
    a = make_server(reuseport=True)
    b = make_server(listen="127.0.0.1:%d" % a.port, args=["--reuseport"])
    assert b.port == a.port
    assert a.get("/healthz").status == 200
    # Both processes serve: closing one leaves the other answering on the port.
    assert a.stop() == 0
    assert b.get("/healthz").status == 200


def test_server_object_reports_exit_before_listening(binary, tmp_path):
    # The harness itself: a server that cannot start fails with its log.
    srv = Server(binary, {"bogus_key": "1"})
    try:
        with pytest.raises(AssertionError, match="exited with 2"):
            srv.start()
    finally:
        srv.cleanup()
