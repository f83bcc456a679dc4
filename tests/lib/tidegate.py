"""tidegate.py - drive the real tidegate binary from integration tests.

    srv = Server(os.environ["TIDEGATE_BIN"], {"http.header_timeout": "1s"})
    srv.start()
    c = srv.connect()
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert c.recv_response().status == 200
    assert srv.stats()["requests"] == 1
    assert srv.stop() == 0

Everything here is standard library. Waits are deadlines on real events (a log
line, a socket becoming readable, a /stats value), never bare sleeps.
"""

import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

LISTENING_RE = re.compile(rb"(?<!TCP frames )listening on 127\.0\.0\.1:(\d+)")
BACKEND_RE = re.compile(rb"backend listener on 127\.0\.0\.1:(\d+)")
LOG_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn|info|debug) +\S")
SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:")

# Linux: let connect() pick the source port, so that binding many sockets to one
# source address before connect() does not exhaust the ephemeral range.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

ERROR_KINDS = ("bad_request", "uri_too_long", "header_too_large", "body_too_large",
               "unsupported_te", "expectation_failed", "header_timeout", "body_timeout",
               "send_timeout", "emfile", "out_of_memory",
               # WebSocket and session closes (docs/operations.md)
               "protocol_error", "invalid_data", "message_too_big", "unsupported_data",
               "policy", "slow_consumer", "ping_timeout")

_asan_cache = {}


def is_asan(binary):
    """True when the binary was linked with AddressSanitizer."""
    if binary not in _asan_cache:
        try:
            with open(binary, "rb") as f:
                data = f.read()
            _asan_cache[binary] = b"__asan_init" in data
        except OSError:
            _asan_cache[binary] = False
    return _asan_cache[binary]


def binary_path():
    path = os.environ.get("TIDEGATE_BIN")
    if not path:
        raise RuntimeError("TIDEGATE_BIN is not set (run through `make integration`)")
    return path


def slowdown(binary=None):
    """Factor for deadlines that only bound a wait (never for asserted timings)."""
    return 3.0 if is_asan(binary or binary_path()) else 1.0


def wait_readable(socks, timeout):
    """The subset of socks (objects with fileno()) readable within timeout
    seconds; poll(), so descriptors above 1024 work too."""
    p = select.poll()
    by_fd = {}
    for s in socks:
        by_fd[s.fileno()] = s
        p.register(s.fileno(), select.POLLIN | select.POLLPRI)
    events = p.poll(max(0, int(timeout * 1000 + 0.999)) if timeout is not None else None)
    return [by_fd[fd] for fd, _ in events]


def wait_writable(sock, timeout):
    p = select.poll()
    p.register(sock.fileno(), select.POLLOUT)
    return bool(p.poll(max(0, int(timeout * 1000 + 0.999))))


def wait_for(predicate, timeout, interval=0.02, what="condition"):
    """Polls predicate() until it returns a truthy value; returns that value.
    Raises AssertionError with the last value seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(interval)


def parse_duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    if not m:
        raise ValueError("bad duration %r" % text)
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_size(text):
    m = re.fullmatch(r"(\d+)([km]?)", str(text).strip().lower())
    if not m:
        raise ValueError("bad size %r" % text)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2)]


def config_key(name):
    """make_server(http_max_uri="1k") -> "http.max_uri"; other names unchanged."""
    if name.startswith("http_"):
        return "http." + name[len("http_"):]
    return name


def request(method="GET", path="/healthz", version="HTTP/1.1", headers=None, body=b"",
            host=True):
    """Bytes of one request. headers: list of (name, value) or dict."""
    lines = ["%s %s %s" % (method, path, version)]
    if host:
        lines.append("Host: t")
    if isinstance(headers, dict):
        headers = list(headers.items())
    for name, value in headers or ():
        lines.append("%s: %s" % (name, value))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body


def chunked(*parts, trailers=b""):
    """A chunked body made of the given byte strings."""
    out = b""
    for p in parts:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


class Response:
    def __init__(self, version, status, reason, headers, body, raw):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (lower-case name, value)
        self.body = body
        self.raw = raw

    def header(self, name, default=None):
        name = name.lower()
        for k, v in reversed(self.headers):
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def closes(self):
        conn = self.header("connection", "")
        return "close" in [t.strip().lower() for t in conn.split(",")]

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "<Response %s %s %r>" % (self.status, self.reason, self.body[:80])


class ConnectionClosed(AssertionError):
    pass


class Conn:
    """A blocking client socket with a read buffer shared by the helpers, so that
    pipelined responses can be read one by one."""

    def __init__(self, sock, server=None):
        self.sock = sock
        self.server = server
        self.buf = b""
        self.eof = False
        self.reset = False

    # -- plumbing --
    def fileno(self):
        return self.sock.fileno()

    def sendall(self, data):
        self.sock.sendall(data)
        if self.server is not None:
            self.server.sent_bytes += len(data)

    def send_some(self, data):
        """Non-blocking send of as much as fits; returns the count sent."""
        try:
            n = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        if self.server is not None:
            self.server.sent_bytes += n
        return n

    def readable(self, timeout):
        if self.buf or self.eof:
            return True
        return bool(wait_readable([self.sock], max(0.0, timeout)))

    def _fill(self, deadline):
        """Reads once into the buffer; False on timeout. Sets eof on EOF/reset."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not wait_readable([self.sock], remaining):
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        if self.server is not None:
            self.server.received_bytes += len(data)
        self.buf += data
        return True

    def recv_some(self, timeout=5.0):
        """Whatever arrives first (buffered bytes included); b"" on timeout/EOF."""
        if not self.buf:
            self._fill(time.monotonic() + timeout)
        data, self.buf = self.buf, b""
        return data

    def recv_all(self, timeout=5.0):
        """Everything until EOF or until timeout passes; buffered bytes included."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._fill(deadline)
        data, self.buf = self.buf, b""
        return data

    def wait_closed(self, timeout=5.0):
        """Reads until the peer closes. Returns (bytes received, seconds taken,
        closed?) - closed is False when the deadline passed first."""
        start = time.monotonic()
        data = self.recv_all(timeout)
        return data, time.monotonic() - start, self.eof

    def _need(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed(
                    "connection %s after %d of %d bytes (buffer %r)"
                    % ("closed" if self.eof else "timed out", len(self.buf), n,
                       self.buf[:200]))

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if not self._fill(deadline):
                raise ConnectionClosed(
                    "connection %s while reading a line (buffer %r)"
                    % ("closed" if self.eof else "timed out", self.buf[:200]))

    def recv_response(self, timeout=5.0, head=False):
        """Parses one response (interim 1xx responses are returned on their own).
        head=True: the request was HEAD, so there is no body whatever the headers.
        Raises ConnectionClosed if the connection closes or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if not self._fill(deadline):
                raise ConnectionClosed(
                    "connection %s before a complete response head (got %r)"
                    % ("closed" if self.eof else "timed out", self.buf[:300]))
        head_bytes, self.buf = self.buf[:i + 4], self.buf[i + 4:]
        lines = head_bytes[:-4].split(b"\r\n")
        m = re.match(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        version, status, reason = m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise AssertionError("bad header line %r in %r" % (line, head_bytes))
            headers.append((name.decode("latin-1").strip().lower(),
                            value.decode("latin-1").strip()))
        resp = Response(version, status, reason, headers, b"", head_bytes)
        if head or 100 <= status < 200 or status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te and "chunked" in te.lower():
            body = b""
            raw = b""
            while True:
                size_line = self._line(deadline)
                raw += size_line + b"\r\n"
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self._line(deadline)
                        raw += t + b"\r\n"
                        if not t:
                            break
                    break
                self._need(size + 2, deadline)
                body += self.buf[:size]
                raw += self.buf[:size + 2]
                self.buf = self.buf[size + 2:]
            resp.body = body
            resp.raw = head_bytes + raw
        elif cl is not None:
            n = int(cl)
            self._need(n, deadline)
            resp.body, self.buf = self.buf[:n], self.buf[n:]
            resp.raw = head_bytes + resp.body
        else:
            # Delimited by close.
            resp.body = self.recv_all(timeout=max(0.0, deadline - time.monotonic()))
            resp.raw = head_bytes + resp.body
        return resp

    def request(self, method="GET", path="/healthz", timeout=5.0, **kw):
        self.sendall(request(method, path, **kw))
        return self.recv_response(timeout=timeout, head=(method == "HEAD"))

    def send_until_response(self, data, piece=4096, timeout=5.0):
        """Sends data in pieces, stopping as soon as the server has answered (or
        closed), so that the answer is not lost to a reset. Returns bytes sent."""
        sent = 0
        deadline = time.monotonic() + timeout
        while sent < len(data):
            if self.readable(0):
                break
            if not wait_writable(self.sock, max(0.0, deadline - time.monotonic())):
                break
            try:
                n = self.sock.send(data[sent:sent + piece])
            except (BrokenPipeError, ConnectionResetError):
                break
            if self.server is not None:
                self.server.sent_bytes += n
            sent += n
        return sent

    def abort(self):
        """Closes with SO_LINGER 0: the peer sees a reset, not a FIN."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def client_socket(source=None, blocking=True):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if source:
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((source, 0))
    s.setblocking(blocking)
    return s


def source_address(i):
    """Spreads clients over 127.0.0.2 .. 127.0.0.254."""
    return "127.0.0.%d" % (2 + i % 253)


def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...)): float}; also checks that
    each sample's family has # HELP and # TYPE lines."""
    out = {}
    helps, types = set(), set()
    sample_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
    label_re = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            types.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        m = sample_re.match(line)
        if not m:
            raise AssertionError("bad metrics line %r" % line)
        name, labels_text, value = m.group(1), m.group(3), m.group(4)
        labels = []
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = label_re.match(labels_text, pos)
                if not lm:
                    raise AssertionError("bad labels in %r" % line)
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        key = (name, tuple(sorted(labels)))
        if key in out:
            raise AssertionError("duplicate sample %r" % line)
        out[key] = float(value)
    for name, _ in out:
        family = name
        for suffix in ("_total", "_bucket", "_sum", "_count"):
            if family not in types and family.endswith(suffix):
                family = family[: -len(suffix)]
        if name not in types and family not in types:
            raise AssertionError("metric %s has no # TYPE line" % name)
        if name not in helps and family not in helps:
            raise AssertionError("metric %s has no # HELP line" % name)
    return out


def metric_sum(metrics, name, **match):
    """Sum of every sample of name whose labels include match."""
    total = 0.0
    found = False
    for (n, labels), v in metrics.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == str(val) for k, val in match.items()):
            total += v
            found = True
    if not found:
        raise AssertionError("no metric %s%r" % (name, match))
    return total


def run_binary(args, timeout=10.0, binary=None, env=None):
    """Runs the binary to completion: (exit code, stdout, stderr). Fails if it is
    still running after timeout (e.g. it started serving on a bad config)."""
    binary = binary or binary_path()
    try:
        p = subprocess.run([binary] + list(args), capture_output=True, timeout=timeout,
                           env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s %s still running after %.0fs; stderr: %r"
                             % (binary, " ".join(args), timeout, e.stderr)) from None
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    reports = [l for l in (out + err).splitlines() if SANITIZER_RE.search(l)]
    if reports:
        raise AssertionError("%s %s: sanitizer reports:\n%s" % (binary, " ".join(args), err[-8000:]))
    return p.returncode, out, err


class Server:
    """One tidegate process on 127.0.0.1 and a free port."""

    def __init__(self, binary=None, config=None, args=(), log_to_file=False,
                 nofile=None, start_timeout=10.0, env=None, listen="127.0.0.1:0",
                 backend_listen="127.0.0.1:0"):
        self.binary = binary or binary_path()
        self.config = dict(config or {})
        self.args = list(args)
        self.log_to_file = log_to_file
        self.nofile = nofile
        self.start_timeout = start_timeout * slowdown(self.binary)
        self.env = env
        self.listen = listen
        self.backend_listen = backend_listen
        self.backend_port = None   # the gate's backend listener, once started
        self.children = []         # processes started for this server (backends): stopped first
        self.dir = tempfile.mkdtemp(prefix="tidegate-test-")
        self.config_path = os.path.join(self.dir, "tidegate.conf")
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.log_path = os.path.join(self.dir, "tidegate.log") if log_to_file else None
        self.proc = None
        self.port = None
        self.exit_code = None
        self.sent_bytes = 0        # by every Conn of this server (stats() included)
        self.received_bytes = 0
        self.conns = []
        self.stats_calls = 0       # /stats requests made by stats() and wait_stats()
        self.asan = is_asan(self.binary)
        self.slow = slowdown(self.binary)

    # -- configuration as the server sees it --
    def setting(self, key, default):
        return self.config.get(key, default)

    @property
    def header_timeout(self):
        return parse_duration(self.setting("http.header_timeout", "10s"))

    @property
    def body_timeout(self):
        return parse_duration(self.setting("http.body_timeout", "30s"))

    @property
    def keepalive_timeout(self):
        return parse_duration(self.setting("http.keepalive_timeout", "75s"))

    @property
    def send_timeout(self):
        return parse_duration(self.setting("http.send_timeout", "60s"))

    # -- process --
    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write("# written by tests/lib/tidegate.py\n")
            for k, v in self.config.items():
                if isinstance(v, bool):
                    v = "true" if v else "false"
                f.write("%s = %s\n" % (k, v))

    def command(self):
        cmd = [self.binary, "--config", self.config_path, "--listen", self.listen,
               "--backend-listen", self.backend_listen]
        if self.log_to_file:
            cmd += ["--log-file", self.log_path]
        return cmd + self.args

    def _preexec(self):
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        else:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def start(self):
        self.write_config()
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("ASAN_OPTIONS", "")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr,
                                     preexec_fn=self._preexec, env=env)
        deadline = time.monotonic() + self.start_timeout
        while True:
            m = LISTENING_RE.search(self.log_bytes())
            if m:
                self.port = int(m.group(1))
                b = BACKEND_RE.search(self.log_bytes())
                self.backend_port = int(b.group(1)) if b else None
                break
            if self.proc.poll() is not None:
                self.exit_code = self.proc.returncode
                raise AssertionError("tidegate exited with %d before listening:\n%s"
                                     % (self.exit_code, self.log_text()))
            if time.monotonic() > deadline:
                text = self.log_text()
                self.kill()
                raise AssertionError("no 'listening on' line within %.0fs:\n%s"
                                     % (self.start_timeout, text))
            time.sleep(0.01)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_bytes(self):
        """stderr and the log file, concatenated."""
        out = b""
        for path in (self.stderr_path, self.log_path):
            if path and os.path.exists(path):
                with open(path, "rb") as f:
                    out += f.read()
        return out

    def log_text(self):
        return self.log_bytes().decode(errors="replace")

    def sanitizer_reports(self):
        """Lines in stderr / the log that report sanitizer errors (any dir file)."""
        text = ""
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if name != "tidegate.conf" and os.path.isfile(path):
                with open(path, "rb") as f:
                    text += f.read().decode(errors="replace")
        return [l for l in text.splitlines() if SANITIZER_RE.search(l)]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit code or None if still running."""
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_code

    def stop(self, timeout=None):
        """SIGTERM, then waits; returns the exit code (killing it if it hangs,
        in which case the code is the string "hung")."""
        if self.proc is None:
            return None
        for child in self.children:
            child.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            code = self.wait(timeout if timeout is not None else 5.0 * self.slow)
            if code is None:
                self.kill()
                self.exit_code = "hung"
        self.exit_code = self.proc.returncode if self.exit_code != "hung" else "hung"
        self._close_conns()
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_conns()

    def close_clients(self):
        """Closes every client connection made through connect()."""
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.conns = []

    def _close_conns(self):
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.conns = []
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- /proc --
    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def rss(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime, stime are fields 14, 15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def threads(self):
        return len(os.listdir("/proc/%d/task" % self.pid))

    # -- clients --
    def connect(self, source=None, timeout=5.0):
        s = client_socket(source)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", self.port))
        s.settimeout(None)
        c = Conn(s, self)
        self.conns.append(c)
        return c

    def get(self, path="/healthz", method="GET", headers=None, timeout=5.0):
        """One request on a fresh connection with Connection: close; waits for
        the server to close so that the connection no longer counts as live."""
        hdrs = [("Connection", "close")] + list((headers or {}).items() if isinstance(headers, dict) else headers or [])
        with self.connect() as c:
            c.sendall(request(method, path, headers=hdrs))
            try:
                resp = c.recv_response(timeout=timeout * self.slow, head=(method == "HEAD"))
            except ConnectionClosed as e:
                raise ConnectionClosed("%s %s on a new connection: %s" % (method, path, e)) from None
            c.recv_all(timeout=2.0 * self.slow)     # until the server closes
        self.conns.remove(c)
        return resp

    def stats(self, conn=None):
        """GET /stats as parsed JSON; on conn (keep-alive) if given, else on a
        fresh connection (which then counts as accepted and live)."""
        self.stats_calls += 1
        if conn is not None:
            r = conn.request("GET", "/stats", timeout=5.0 * self.slow)
        else:
            r = self.get("/stats")
        assert r.status == 200, r
        return r.json()

    def metrics(self, conn=None):
        if conn is not None:
            r = conn.request("GET", "/metrics", timeout=5.0 * self.slow)
        else:
            r = self.get("/metrics")
        assert r.status == 200, r
        return parse_metrics(r.body.decode())

    def wait_stats(self, predicate, timeout=5.0, what="stats condition", conn=None):
        """Polls /stats until predicate(stats) holds; returns those stats."""
        box = {}

        def check():
            box["s"] = self.stats(conn)
            return predicate(box["s"])
        try:
            wait_for(check, timeout * self.slow, interval=0.05, what=what)
        except AssertionError as e:
            raise AssertionError("%s; last stats: %s" % (e, json.dumps(box.get("s")))) from None
        return box["s"]

    def wait_live(self, live, timeout=5.0):
        """Waits until connections.live == live (the /stats connection counts)."""
        return self.wait_stats(lambda s: s["connections"]["live"] == live, timeout,
                               what="connections.live == %d" % live)

    def wait_fds(self, count, timeout=5.0):
        """Waits until the process has exactly count open descriptors."""
        try:
            return wait_for(lambda: self.fd_count() == count, timeout * self.slow,
                            what="fd count == %d" % count)
        except AssertionError as e:
            raise AssertionError("%s; now %d: %s" % (e, self.fd_count(), self.fd_list())) from None

    def fd_list(self):
        out = []
        d = "/proc/%d/fd" % self.pid
        for name in sorted(os.listdir(d), key=int):
            try:
                out.append("%s->%s" % (name, os.readlink(os.path.join(d, name))))
            except OSError:
                pass
        return out


def publish(server, ch, body):
    """POST /pub/ch with <body> (bytes as they are, anything else as JSON);
    asserts 202 and returns the position the server gave the message."""
    import urllib.request
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d/pub/%s" % (server.port, ch), data=data,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
        answer = json.loads(r.read())
    assert answer["ch"] == ch
    return answer["pos"]
