#!/usr/bin/python3
"""Checks the push benchmark peers by hand, with real clients.

For each server (tidegate, nchan, pushpin) it starts a private instance on a free
127.0.0.1 port, opens a WebSocket subscriber (python3-websockets) and an SSE subscriber
(urllib, Accept: text/event-stream) on channel "t", publishes through the server's own
publish API until both have received a published payload (a new one every 0.25 s, so a
subscription that completes asynchronously, as Pushpin's WebSocket one does, is not a
race), then stops the server by PID (tidegate) or with its stop script (nchan, pushpin).

  /usr/bin/python3 bench/peers/check.py [--servers tidegate,nchan,pushpin] [--timeout 10]
      [--workers 2] [--tidegate build/release/tidegate]

Exit status: 0 when every server delivered over WebSocket and over SSE; 1 otherwise
(what failed is printed); 2 on bad usage. Python 3 standard library plus
python3-websockets (Debian packages only).
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "bench", "peers")
CHANNEL = "t"


def free_port(span=1):
    """A free loopback port p such that p..p+span-1 are all free (pushpin uses 3)."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p + span > 65535:
            continue
        ok = True
        for q in range(p, p + span):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", q))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return p
    raise RuntimeError("no free port range")


def http(method, url, body=None, headers=None, timeout=3):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


class Server:
    """Start/stop one server and publish to it."""

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.proc = None
        self.dir = None
        self.port = None
        self.publish_url = None

    def start(self):
        if self.name == "tidegate":
            binary = self.args.tidegate
            if not os.access(binary, os.X_OK):
                raise RuntimeError("%s not built (make VARIANT=release build)" % binary)
            self.port = free_port()
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(
                [binary, "--listen", "127.0.0.1:%d" % self.port, "--backend-listen", "",
                 "--io-threads", str(self.args.workers), "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            while True:
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    raise RuntimeError("tidegate exited: %s" % self.log.read()[-500:].decode(errors="replace"))
                try:
                    if http("GET", "http://127.0.0.1:%d/healthz" % self.port, timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("tidegate does not answer /healthz after 10 s")
                time.sleep(0.1)
            self.publish_url = "http://127.0.0.1:%d/pub/{ch}" % self.port
            return
        self.dir = tempfile.mkdtemp(prefix="tidegate-peer-%s." % self.name, dir="/tmp")
        self.port = free_port(3 if self.name == "pushpin" else 1)
        script = os.path.join(PEERS, "%s.sh" % self.name)
        r = subprocess.run(["bash", script, "start", self.dir, str(self.port), str(self.args.workers)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("%s start failed (%d): %s" % (self.name, r.returncode, r.stderr.strip()[-800:]))
        lines = r.stdout.splitlines()
        pids = [l for l in lines if l.startswith("PIDS ")]
        pub = [l for l in lines if l.startswith("PUBLISH ")]
        if not pids or not pub:
            raise RuntimeError("%s start printed no PIDS/PUBLISH line: %r" % (self.name, r.stdout))
        self.publish_url = pub[0].split()[1]
        print("%s: %s; %s" % (self.name, pids[0], pub[0]), flush=True)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.dir is not None:
            script = os.path.join(PEERS, "%s.sh" % self.name)
            subprocess.run(["bash", script, "stop", self.dir], stdin=subprocess.DEVNULL, timeout=30)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def publish(self, payload):
        if self.name == "pushpin":
            item = {"channel": CHANNEL, "formats": {
                "ws-message": {"content": payload},
                "http-stream": {"content": "data: %s\n\n" % payload}}}
            status, _ = http("POST", self.publish_url, json.dumps({"items": [item]}).encode(),
                             {"Content-Type": "application/json"})
        else:
            status, _ = http("POST", self.publish_url.replace("{ch}", CHANNEL), payload.encode(),
                             {"Content-Type": "text/plain"})
        if not 200 <= status < 300:
            raise RuntimeError("publish answered %d" % status)

    def sub_url(self, scheme):
        return "%s://127.0.0.1:%d/sub/%s" % (scheme, self.port, CHANNEL)


def sse_reader(url, token, deadline, result, stop):
    """Read the SSE stream until a data line carries token; result['sse'] = line or error."""
    try:
        req = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
        with urllib.request.urlopen(req, timeout=2) as r:
            ctype = r.headers.get("Content-Type", "")
            if "text/event-stream" not in ctype:
                result["sse"] = "error: Content-Type %r" % ctype
                return
            result["sse_open"] = True
            r.fp.raw._sock.settimeout(0.5)
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    line = r.readline()
                except (socket.timeout, TimeoutError):
                    continue
                if not line:
                    result["sse"] = "error: stream ended"
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text.startswith("data:") and token in text:
                    result["sse"] = "ok " + text
                    return
            result["sse"] = "error: nothing received"
    except Exception as e:  # noqa: BLE001 -- reported, not raised
        result["sse"] = "error: %s: %s" % (type(e).__name__, e)


async def ws_reader(url, token, deadline, result):
    try:
        async with websockets.connect(url, open_timeout=3, close_timeout=1) as ws:
            result["ws_open"] = True
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    result["ws"] = "error: nothing received"
                    return
                try:
                    msg = await asyncio.wait_for(ws.recv(), left)
                except asyncio.TimeoutError:
                    continue
                if isinstance(msg, bytes):
                    msg = msg.decode("utf-8", "replace")
                if token in msg:
                    result["ws"] = "ok " + msg
                    return
    except Exception as e:  # noqa: BLE001
        result["ws"] = "error: %s: %s" % (type(e).__name__, e)


async def check_one(server, timeout):
    token = "check-%s-%d" % (server.name, os.getpid())
    deadline = time.monotonic() + timeout
    result = {}
    stop = threading.Event()
    sse = threading.Thread(target=sse_reader, args=(server.sub_url("http"), token, deadline, result, stop),
                           daemon=True)
    sse.start()
    ws = asyncio.ensure_future(ws_reader(server.sub_url("ws"), token, deadline, result))
    n = 0
    publish_errors = []
    while time.monotonic() < deadline and not ("ws" in result and "sse" in result):
        await asyncio.sleep(0.25)
        if result.get("ws_open") or result.get("sse_open"):
            n += 1
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, server.publish, "%s %d" % (token, n))
            except Exception as e:  # noqa: BLE001
                publish_errors.append("%s: %s" % (type(e).__name__, e))
    stop.set()
    await ws
    await asyncio.get_running_loop().run_in_executor(None, sse.join, 5)
    failures = []
    for kind in ("ws", "sse"):
        r = result.get(kind, "error: no result")
        if r.startswith("ok"):
            print("  %s %-3s received: %s" % (server.name, kind, r[3:][:120]), flush=True)
        else:
            failures.append("%s %s: %s" % (server.name, kind, r))
    if failures and publish_errors:
        failures.append("%s publish: %s (%d errors)" % (server.name, publish_errors[-1], len(publish_errors)))
    if not failures:
        print("  %s: %d message(s) published" % (server.name, n), flush=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description="WS + SSE delivery check of tidegate, nchan, pushpin")
    ap.add_argument("--servers", default="tidegate,nchan,pushpin")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tidegate", default=os.path.join(ROOT, "build", "release", "tidegate"))
    a = ap.parse_args()
    names = [s for s in a.servers.split(",") if s]
    if not names or any(s not in ("tidegate", "nchan", "pushpin") for s in names):
        ap.error("--servers: a comma-separated subset of tidegate,nchan,pushpin")
    failures = []
    for name in names:
        server = Server(name, a)
        try:
            server.start()
            failures += asyncio.run(check_one(server, a.timeout))
        except Exception as e:  # noqa: BLE001
            failures.append("%s: %s" % (name, e))
        finally:
            server.stop()
    if failures:
        print("FAILED:", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        return 1
    print("OK: %s delivered over WebSocket and SSE" % ", ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
