"""backends.py - backend processes for gate tests, built on the reference
libraries: tests/lib/testbackend.py (Python) and build/<variant>/examples/*
(C). Each runs as its own process and connects to a Server's backend
listener; waits are on real events (a ready file written when the gate's
HELLO arrives, the process exiting), never bare sleeps.

    b = Backend(srv, "echo", name="b1").start()
    ...
    b.kill()                      # kill -9
    assert b.executed() == [...]  # from its exec log
"""

import json
import os
import signal
import subprocess
import sys
import time

from tidegate import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"


class Backend:
    """One tests/lib/testbackend.py process."""

    def __init__(self, srv, routes, name, mode="echo", capacity=None, workers=None,
                 delay_ms=None, drain_on_term=False, extra=(), listen=None):
        self.srv = srv
        self.routes = routes
        self.name = name
        self.mode = mode
        self.capacity = capacity
        self.workers = workers
        self.delay_ms = delay_ms
        self.drain_on_term = drain_on_term
        self.extra = list(extra)
        self.listen = listen        # "HOST:PORT": the gate dials it (gate.backends)
        base = os.path.join(srv.dir, "backend-" + name)
        self.exec_log = base + ".exec"
        self.ready_file = base + ".ready"
        self.stats_file = base + ".stats"
        self.stderr_path = base + ".stderr"
        self.proc = None
        srv.children.append(self)  # stopped with the server, whatever the test's outcome

    def command(self):
        cmd = [PY, os.path.join(HERE, "testbackend.py"),
               "--connect", "127.0.0.1:%d" % (self.srv.backend_port or 1),
               "--routes", self.routes, "--name", self.name, "--mode", self.mode,
               "--exec-log", self.exec_log, "--ready-file", self.ready_file,
               "--stats-file", self.stats_file]
        for flag, v in (("--capacity", self.capacity), ("--workers", self.workers),
                        ("--delay-ms", self.delay_ms)):
            if v is not None:
                cmd += [flag, str(v)]
        if self.drain_on_term:
            cmd.append("--drain-on-term")
        if self.listen:
            cmd += ["--listen", self.listen, "--port-file", self.ready_file + ".port"]
        return cmd + self.extra

    def start(self, wait=True):
        if os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        wait_for(lambda: os.path.exists(self.ready_file) or self.proc.poll() is not None,
                 timeout * self.srv.slow, what="backend %s to say HELLO" % self.name)
        assert self.proc.poll() is None, "backend %s exited: %s" % (self.name, self.stderr())

    def listening_port(self, timeout=10.0):
        """Listen mode: the port, once the process listens."""
        path = self.ready_file + ".port"
        wait_for(lambda: os.path.exists(path), timeout * self.srv.slow,
                 what="backend %s to listen" % self.name)
        with open(path) as f:
            return int(f.read())

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        """kill -9, and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def term(self, timeout=30.0):
        """SIGTERM; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout * self.srv.slow)

    def wait_exit(self, timeout=10.0):
        return self.proc.wait(timeout * self.srv.slow)

    def stats(self):
        """{"runs", "repeats", "remembered"} asked with SIGUSR1."""
        if os.path.exists(self.stats_file):
            os.unlink(self.stats_file)
        self.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(self.stats_file), 10, what="backend stats")

        def read():
            try:
                with open(self.stats_file) as f:
                    return json.load(f)
            except ValueError:
                return None  # being written
        return wait_for(read, 10, what="backend stats file")

    def executed(self):
        """Jobs this backend ran, from its exec log: dicts of id, route, key,
        start and end (ns, monotonic), attempt, name."""
        out = []
        if not os.path.exists(self.exec_log):
            return out
        with open(self.exec_log) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 7:
                    continue
                out.append({"id": int(parts[0]), "route": parts[1], "key": parts[2],
                            "start": int(parts[3]), "end": int(parts[4]),
                            "attempt": int(parts[5]), "name": parts[6]})
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class CBackend:
    """A C example backend (build/<variant>/examples/NAME) on the gate."""

    def __init__(self, srv, example, args=()):
        self.srv = srv
        variant_dir = os.path.dirname(srv.binary)
        self.path = os.path.join(variant_dir, "examples", example)
        self.args = list(args)
        self.proc = None
        self.stderr_path = os.path.join(srv.dir, "c-%s.stderr" % example)
        srv.children.append(self)

    def start(self):
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [self.path, "--connect", "127.0.0.1:%d" % self.srv.backend_port] + self.args,
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None


def links(srv):
    """Backend links open now, per the gate's /stats."""
    return srv.stats()["gate"]["links"]


def wait_links(srv, n, timeout=10.0):
    wait_for(lambda: links(srv) == n, timeout * srv.slow, what="%d backend links" % n)
