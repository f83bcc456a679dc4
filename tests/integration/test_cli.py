"""tidegate-cli (tools/tidegate-cli.c, tools/cli/, docs/cli.md) against the real server:
each subcommand's output parsed as JSON, its exit codes, and a client calling through the
gate to `tidegate-cli backend` with neither side written yet."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from backends import wait_links
from tidegate import wait_for


def cli_path():
    import tidegate
    return os.path.join(os.path.dirname(tidegate.binary_path()), "tidegate-cli")


def env_for(srv):
    env = dict(os.environ)
    env["TIDEGATE"] = "127.0.0.1:%d" % srv.port
    env.setdefault("ASAN_OPTIONS", "")
    return env


def frames_addr(srv):
    m = re.search(rb"TCP frames listening on 127\.0\.0\.1:(\d+)", srv.log_bytes())
    assert m, srv.log_text()
    return "127.0.0.1:%s" % m.group(1).decode()


def cli(srv, *args, input=None, timeout=30):
    """Runs tidegate-cli to its end; returns the CompletedProcess (text)."""
    return subprocess.run([cli_path(), *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=timeout * srv.slow, env=env_for(srv))


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def get_json(srv, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (srv.port, path), timeout=10) as r:
        return json.loads(r.read())


def closed_port():
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LineReader:
    """A long-running tidegate-cli whose stdout lines are read by a thread, so that tests
    wait for a line with a deadline."""

    def __init__(self, srv, *args):
        self.srv = srv
        self.stderr_path = os.path.join(srv.dir, "cli-%d.stderr" % len(srv.children))
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([cli_path(), *map(str, args)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env_for(srv))
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        srv.children.append(self)   # stopped with the server, whatever the outcome

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.decode())
        self.lines.put(None)

    def line(self, timeout=10.0):
        """The next stdout line, parsed as JSON."""
        try:
            text = self.lines.get(timeout=timeout * self.srv.slow)
        except queue.Empty:
            raise AssertionError("no line within %.0fs; stderr: %s"
                                 % (timeout, self.stderr())) from None
        assert text is not None, "tidegate-cli ended: %s" % self.stderr()
        assert text.endswith("\n") and "\n" not in text[:-1]
        return json.loads(text)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait(self, timeout=10.0):
        code = self.proc.wait(timeout * self.srv.slow)
        self._stderr.close()
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self._stderr.closed:
            self._stderr.close()
        return self.proc.returncode


def start_backend(srv, *args, links=1):
    """tidegate-cli backend on srv's backend listener; returns once it is linked."""
    b = LineReader(srv, "backend", "--backend", "127.0.0.1:%d" % srv.backend_port, *args)
    wait_for(lambda: "ready:" in b.stderr() or b.proc.poll() is not None, 10 * srv.slow,
             what="tidegate-cli backend to say ready")
    assert b.proc.poll() is None, b.stderr()
    wait_links(srv, links)
    return b


# ---- pub, stats ----

def test_pub_prints_the_position_and_pull_shows_the_message(server):
    run = cli(server, "pub", "news", '{"title": "hello", "n": [1, 2]}')
    assert run.returncode == 0, run.stderr
    (answer,) = json_lines(run.stdout)
    assert answer["ch"] == "news" and re.fullmatch(r"\d+:1", answer["pos"])
    pulled = get_json(server, "/channels/news/messages")
    assert [(m["pos"], m["data"]) for m in pulled["messages"]] == \
        [(answer["pos"], {"title": "hello", "n": [1, 2]})]


def test_pub_reads_stdin_and_refuses_what_is_not_json(server):
    run = cli(server, "pub", "news", "-", input='"from stdin"\n')
    assert run.returncode == 0, run.stderr
    for args in (("news", "{not json"), ("news", "-"), ("bad channel", "1"), ("news",)):
        run = cli(server, "pub", *args, input="{")
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.startswith("tidegate-cli: pub: ") and run.stdout == ""
    assert [m["data"] for m in get_json(server, "/channels/news/messages")["messages"]] == \
        ["from stdin"]


def test_stats_parses_pretty_and_compact(server):
    run = cli(server, "stats")
    assert run.returncode == 0, run.stderr
    pretty = json.loads(run.stdout)
    assert pretty["connections"]["live"] >= 1
    assert len(run.stdout.splitlines()) > 10
    run = cli(server, "stats", "--compact")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    assert json.loads(run.stdout)["requests"] > pretty["requests"]


# ---- sub ----

@pytest.mark.parametrize("transport", ["ws", "frames"])
def test_sub_prints_what_pub_sends_in_order(make_server, transport):
    srv = make_server({"frames.listen": "127.0.0.1:0"})
    sub = LineReader(srv, "sub", "prices", "--transport", transport, "--frames", frames_addr(srv),
                     "--count", 5, "--timeout", 30)
    first = sub.line()
    assert first["type"] == "sub" and first["ch"] == "prices" and first["id"] == 1
    sent = [{"p": i} for i in range(4)] + ["text,\nwith a line end"]
    positions = []
    for data in sent:
        run = cli(srv, "pub", "prices", json.dumps(data, indent=1))   # pretty: several lines
        assert run.returncode == 0, run.stderr
        positions.append(json.loads(run.stdout)["pos"])
    got = [sub.line() for _ in sent]
    assert [m["type"] for m in got] == ["msg"] * 5
    assert [m["data"] for m in got] == sent
    assert [m["pos"] for m in got] == positions
    assert sub.wait() == 0, sub.stderr()


def test_sub_from_resumes_after_a_position(server):
    positions = []
    for i in range(4):
        run = cli(server, "pub", "feed", str(i))
        positions.append(json.loads(run.stdout)["pos"])
    run = cli(server, "sub", "feed", "--from", positions[1], "--count", 2, "--timeout", 10)
    assert run.returncode == 0, run.stderr
    lines = json_lines(run.stdout)
    assert lines[0]["type"] == "sub"
    assert [(m["type"], m["pos"], m["data"]) for m in lines[1:]] == \
        [("msg", positions[2], 2), ("msg", positions[3], 3)]


def test_sub_binary_payload_is_base64(server):
    req = urllib.request.Request("http://127.0.0.1:%d/pub/bin" % server.port,
                                 data=b"\x00\xff\x01", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        pos = json.loads(r.read())["pos"]
    epoch = pos.split(":")[0]
    run = cli(server, "sub", "bin", "--from", epoch + ":0", "--count", 1, "--timeout", 10)
    assert run.returncode == 0, run.stderr
    msg = json_lines(run.stdout)[-1]
    assert (msg["pos"], msg["data"], msg["enc"]) == (pos, "AP8B", "base64")


def test_sub_timeout_short_of_count_exits_3_and_sigint_exits_0(server):
    run = cli(server, "sub", "quiet", "--count", 1, "--timeout", 0.3)
    assert run.returncode == 3, run.stderr
    assert json_lines(run.stdout)[0]["type"] == "sub"
    assert "0 of 1 messages" in run.stderr

    sub = LineReader(server, "sub", "quiet")
    assert sub.line()["type"] == "sub"                 # subscribed: now interrupt it
    sub.proc.send_signal(signal.SIGINT)
    assert sub.wait() == 0, sub.stderr()


# ---- call and backend ----

@pytest.mark.parametrize("transport", ["ws", "frames"])
def test_call_gets_the_fixed_reply_of_a_cli_backend(make_server, transport):
    srv = make_server({"frames.listen": "127.0.0.1:0"})
    b = start_backend(srv, "--route", "orders", "--reply", '{"ok": true}', "--status", 201)
    run = cli(srv, "call", "orders", '{"item": 7}', "--transport", transport,
              "--frames", frames_addr(srv))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"type": "reply", "id": 1, "status": 201,
                                      "data": {"ok": True}}
    job = b.line()
    assert job["route"] == "orders" and job["kind"] == "call" and job["attempt"] == 1
    assert job["data"] == {"item": 7} and job["id"] > 0
    assert b.stop() == 0, b.stderr()


def test_call_through_an_exec_backend(make_server):
    srv = make_server()
    b = start_backend(srv, "--route", "upper", "--exec", "tr a-z A-Z")
    run = cli(srv, "call", "upper", '{"greeting": "hello"}')
    assert run.returncode == 0, run.stderr
    reply = json.loads(run.stdout)
    job = b.line()
    assert reply["type"] == "reply" and reply["status"] == 200
    # the command got the job's JSON line and its output, JSON too, is the data
    assert reply["data"]["DATA"] == {"GREETING": "HELLO"}
    assert reply["data"]["ID"] == job["id"] and reply["data"]["ROUTE"] == "UPPER"

    # a pipeline whose output is not JSON: the reply's data is the text
    p = start_backend(srv, "--route", "count", "--exec", "wc -c | sed 's/^/bytes: /'",
                      links=2)
    run = cli(srv, "call", "count", '"x"')
    assert run.returncode == 0, run.stderr
    line = json.dumps(p.line(), separators=(",", ":")) + "\n"
    assert json.loads(run.stdout)["data"] == "bytes: %d\n" % len(line.encode())


def test_exec_failure_is_an_error_reply_with_its_stderr(make_server):
    srv = make_server()
    start_backend(srv, "--route", "broken", "--exec",
                  "cat >/dev/null; echo 'no such order' >&2; exit 3")
    run = cli(srv, "call", "broken", "{}")
    assert run.returncode == 1
    err = json.loads(run.stdout)
    assert (err["type"], err["code"], err["message"], err["status"], err["id"]) == \
        ("error", "exec_failed", "no such order", 502, 1)
    start_backend(srv, "--route", "stuck", "--exec", "sleep 30", "--exec-timeout", 0.3, links=2)
    run = cli(srv, "call", "stuck", "{}")
    assert run.returncode == 1
    assert json.loads(run.stdout)["code"] == "exec_timeout"


def test_call_without_a_backend_is_an_error(make_server):
    srv = make_server({"route.orders.window": "200ms"})
    run = cli(srv, "call", "nobody", "{}")
    assert run.returncode == 1
    err = json.loads(run.stdout)
    assert (err["type"], err["code"], err["status"], err["id"]) == \
        ("error", "no_such_route", 404, 1)
    run = cli(srv, "call", "orders", "{}")            # configured, nobody connected
    assert run.returncode == 1
    err = json.loads(run.stdout)
    assert (err["type"], err["code"], err["status"]) == ("error", "no_backend", 503)
    run = cli(srv, "call", "orders", "{oops")
    assert run.returncode == 2 and run.stdout == ""


def test_backend_prints_each_job_as_json_and_echoes(make_server):
    srv = make_server()
    b = start_backend(srv, "--route", "echo,other")
    body = b"\x00\xffbinary"
    r = srv.connect().request("POST", "/api/echo/some/path?q=1", body=body,
                              headers={"Content-Length": str(len(body)), "X-Test": "1",
                                       "Content-Type": "application/x-thing"})
    assert r.status == 200 and r.body == body
    assert r.header("content-type") == "application/x-thing"
    job = b.line()
    assert (job["route"], job["kind"], job["method"], job["path"], job["query"]) == \
        ("echo", "http", "POST", "/some/path", "q=1")
    assert ["x-test", "1"] in job["headers"]
    assert "body" not in job and job["body_base64"] == "AP9iaW5hcnk="

    r = srv.connect().request("GET", "/api/other/")
    assert r.status == 200 and r.body == b""
    job = b.line()
    assert (job["route"], job["method"], job["path"]) == ("other", "GET", "/")
    assert "body" not in job and "body_base64" not in job

    run = cli(srv, "call", "other", "[1, 2]")
    assert json.loads(run.stdout)["data"] == [1, 2]
    assert b.line()["data"] == [1, 2]
    assert b.stop() == 0
    assert "drained" in b.stderr()


# ---- usage ----

@pytest.mark.parametrize("sub", ["pub", "sub", "call", "stats", "backend"])
def test_help_for_each_subcommand(server, sub):
    run = cli(server, sub, "--help")
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout.startswith("usage: tidegate-cli " + sub)
    assert "exit: 0 ok" in run.stdout


def test_help_and_bad_usage(server):
    run = cli(server, "--help")
    assert run.returncode == 0
    for sub in ("pub", "sub", "call", "stats", "backend"):
        assert "\n  %s " % sub in run.stdout
    for args in ([], ["frob"], ["sub"], ["sub", "ch", "--bogus"], ["sub", "ch", "--count"],
                 ["sub", "ch", "--count", "0"], ["sub", "ch", "--from", "12"],
                 ["sub", "ch", "--transport", "sse"], ["call", "r"], ["call", "r", "{", "x"],
                 ["stats", "extra"], ["stats", "--server", "example.com:80"],
                 ["backend"], ["backend", "--route", "a", "--reply", "1", "--exec", "true"],
                 ["backend", "--route", ",", "--reply", "1"],
                 ["backend", "--route", "a", "--reply", "{"]):
        run = cli(server, *args)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert run.stderr.startswith("tidegate-cli: ") or run.stderr.startswith("usage:"), args
        assert run.stdout == "", args


def test_cannot_connect_is_a_clear_error(server):
    port = closed_port()
    for args in (["sub", "x"], ["pub", "x", "1"], ["stats"], ["call", "r", "1"]):
        run = cli(server, *args, "--server", "127.0.0.1:%d" % port)
        assert run.returncode == 1, (args, run.stderr)
        assert run.stderr == "tidegate-cli: %s: cannot connect to 127.0.0.1:%d: " \
            "Connection refused\n" % (args[0], port)
    run = cli(server, "backend", "--route", "x", "--backend", "127.0.0.1:%d" % port,
              "--give-up", 0.2)
    assert run.returncode == 1
    assert "tidegate-cli: backend: cannot connect to 127.0.0.1:%d" % port in run.stderr
