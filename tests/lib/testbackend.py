#!/usr/bin/python3
"""testbackend.py - a backend process for the integration tests, built on the
Python reference library (clients/python/tidegate_backend.py).

    testbackend.py --connect 127.0.0.1:PORT --routes echo,slow --name b1 \\
        --exec-log /tmp/x/exec.log --ready-file /tmp/x/b1.ready --mode echo

Modes (--mode):

    echo        status 200, header "x-backend: NAME" (and "x-job: ID",
                "x-attempt: N"), body = the request body; for a call, data =
                the call's data
    silent      never replies (the job stays taken; a repeat of it is not run)
    error       every job fails: ERROR code "test_error", message
                "mode error (NAME)", status 502
    garbage     after the gate's HELLO, writes random bytes that are not a
                frame (first byte never 'T'); jobs are then echoed
    oversize    after the gate's HELLO, writes a frame header announcing a
                1 GiB body (a PUSH, id 0) and nothing more
    unknown-id  replies (as echo would) to job ID+1000000 instead of ID, and
                never to ID itself
    mirror      status 200, body = the request body, and each request header
                "X-Reply-NAME: VALUE" becomes the reply header "NAME: VALUE"
                (content-type, content-encoding, cache-control, ...)

    parts       for scatter routes: a part whose body is a JSON array of
                numbers gets them doubled; with no body, [NAME]; on path
                /object, {NAME: PART}; a reducer's job (parts but no
                part) gets {"parts": N, "missing": [...], "sum": the sum
                of the numbers in every part's array}
    cache       for the gate's reply cache: the reply tells which job made it
                (header "x-job: ID", JSON {"job","path","query","user","data"});
                http: query parameters status=N (reply status), ttl=MS (pair
                cache_ttl), fail=1 (ERROR test_error); call data members
                "status", "ttl", "fail" likewise, and "login": USER
                (set_user: binds the caller)

In garbage and oversize modes the process does not reconnect: it exits 0 once
the gate has closed the link (tests can wait for the exit).

--delay-ms makes every handler sleep that long first (echo, error, unknown-id).

--exec-log FILE: one line per executed job, appended from on_done (that is,
only after the reply was written to the gate's socket), with a single
O_APPEND write(2) per line, so several processes may share one file:

    JOBID ROUTE KEY START_NS END_NS ATTEMPT NAME

KEY is "-" when the job has none; START_NS and END_NS are time.monotonic_ns()
(CLOCK_MONOTONIC, comparable between processes) when the handler was called
and when it returned.

--ready-file FILE: "ready\\n" is written (atomically, by rename) each time the
gate's HELLO arrives. --stats-file FILE: {"runs":..,"repeats":..,
"remembered":..} is written (atomically) on SIGUSR1 and on exit.

SIGTERM (and SIGINT) exits 0 at once (after writing the stats file), unless
--drain-on-term: then DRAIN is sent, the jobs in flight are answered, and the
process exits 0. Nothing is printed except errors, on stderr.
"""

import argparse
import json
import os
import signal
import struct
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))

import tidegate_backend as tb  # noqa: E402

MODES = ("echo", "silent", "error", "garbage", "oversize", "unknown-id", "kick", "mirror",
         "parts", "cache")


def parse_args(argv):
    p = argparse.ArgumentParser(description="tidegate test backend")
    p.add_argument("--connect", default="127.0.0.1:7070", help="the gate's backend listener")
    p.add_argument("--routes", required=True, help="routes served, comma-separated")
    p.add_argument("--name", default=None, help="this instance (default testbackend-PID)")
    p.add_argument("--capacity", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--exec-log", default=None)
    p.add_argument("--mode", choices=MODES, default="echo")
    p.add_argument("--drain-on-term", action="store_true")
    p.add_argument("--ready-file", default=None)
    p.add_argument("--listen", default=None,
                   help="be dialed by the gate on HOST:PORT instead of connecting")
    p.add_argument("--port-file", default=None,
                   help="with --listen: write the port listened on here")
    p.add_argument("--stats-file", default=None)
    return p.parse_args(argv)


def write_atomically(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    name = args.name or "testbackend-%d" % os.getpid()
    delay = args.delay_ms / 1000.0

    log_fd = None
    log_lock = threading.Lock()
    if args.exec_log:
        log_fd = os.open(args.exec_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_done(job):
        if log_fd is None:
            return
        line = "%d %s %s %d %d %d %s\n" % (job.id, job.route, job.key or "-", job.started_ns,
                                           job.ended_ns, job.attempt, name)
        with log_lock:
            os.write(log_fd, line.encode("utf-8", "replace"))

    def on_connect(info):
        if args.mode == "garbage":
            junk = bytearray(os.urandom(64))
            junk[0] = junk[0] if junk[0] != tb.MAGIC else 0x00
            backend.send_raw(bytes(junk))
        elif args.mode == "oversize":
            backend.send_raw(struct.pack(">BBBBIQ", tb.MAGIC, tb.VERSION, tb.PUSH, 0, 1 << 30, 0))
        if args.ready_file:
            write_atomically(args.ready_file, "ready\n")

    def handler(job):
        if args.mode == "silent":
            return tb.NO_REPLY
        if delay:
            time.sleep(delay)
        if args.mode == "error":
            raise tb.JobError("test_error", "mode error (%s)" % name, status=502)
        if args.mode == "cache":
            return cache_reply(job)
        if args.mode == "parts":
            return parts_reply(job)
        if args.mode == "mirror":
            return tb.Reply(status=200, body=job.body,
                            headers=[(k[len("x-reply-"):], v) for k, v in job.headers
                                     if k.lower().startswith("x-reply-")])
        reply = tb.Reply(status=200,
                         headers=[("x-backend", name), ("x-job", str(job.id)),
                                  ("x-attempt", str(job.attempt))],
                         body=job.body,
                         data=job.data if job.kind == "call" else None)
        if args.mode == "unknown-id":
            backend.send_raw(reply.encode(job.id + 1000000))
            return tb.NO_REPLY
        if args.mode == "kick":                 # answer, then show the caller out
            backend.send_raw(reply.encode(job.id))
            backend.kick(job.conn, "bye from %s" % name)
            return tb.NO_REPLY
        return reply

    def cache_reply(job):
        if job.kind == "http":
            opts = dict(urllib.parse.parse_qsl(job.query or ""))
        else:
            opts = job.data if isinstance(job.data, dict) else {}
        if opts.get("fail"):
            raise tb.JobError("test_error", "asked to fail (%s)" % name, status=502)
        made = {"job": job.id, "path": job.path, "query": job.query, "user": job.user,
                "data": job.data if job.kind == "call" else None}
        return tb.Reply(status=int(opts.get("status", 200)),
                        headers=[("x-backend", name), ("x-job", str(job.id))],
                        data=made,
                        cache_ttl=int(opts["ttl"]) if "ttl" in opts else None,
                        set_user=opts.get("login"))
    def parts_reply(job):
        if job.parts is not None and job.part is None:      # a reducer's job
            out = {"parts": job.parts, "missing": job.missing,
                   "sum": sum(sum(json.loads(v)) for v in job.part_replies.values())}
        elif job.path == "/object":
            out = {name: job.part}
        else:
            text = job.body if job.kind == "http" else (job.data_text or "").encode()
            got = json.loads(text) if text else None
            out = [x * 2 for x in got] if isinstance(got, list) else [name]
        if job.kind == "call":
            return tb.Reply(status=200, data=out)
        return tb.Reply(status=200, headers=[("content-type", "application/json")],
                        body=json.dumps(out).encode())

    backend = tb.Backend(args.routes, name=name, capacity=args.capacity, connect=args.connect,
                         workers=args.workers, on_done=on_done, on_connect=on_connect,
                         reconnect=args.mode not in ("garbage", "oversize"),
                         listen=args.listen)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % backend.listening_port)
        os.rename(tmp, args.port_file)
    for route in backend.routes:
        backend.handle(route, handler)

    def write_stats():
        if args.stats_file:
            s = backend.stats()
            write_atomically(args.stats_file, json.dumps(
                {"runs": s["runs"], "repeats": s["repeats"], "remembered": s["remembered"]}) + "\n")

    def on_term(signum, frame):
        if args.drain_on_term:
            backend.drain()
            return
        write_stats()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda signum, frame: write_stats())

    try:
        backend.run()
    except OSError as e:
        print("testbackend %s: %s" % (name, e), file=sys.stderr)
        write_stats()
        return 1
    write_stats()
    return 0


if __name__ == "__main__":
    # os._exit: handler threads that are still sleeping must not hold the exit up.
    code = main()
    sys.stderr.flush()
    os._exit(code)
