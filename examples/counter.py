#!/usr/bin/python3
"""counter.py - a backend that counts, to show effectively-once execution.

Route "counter": every job adds one to a counter and replies the new value
({"value": N}). Kill the link (or restart this backend's network) while jobs
are in flight: tidegate resubmits the jobs it got no reply for, with the same
id, and the library answers those it already ran from memory instead of
counting them again. On exit it prints how many times the handler ran and how
many jobs were answered from memory.

    python3 examples/counter.py [--connect 127.0.0.1:7070]
    curl -s -X POST 127.0.0.1:8080/api/counter/      # {"value":1}

Ctrl-C or SIGTERM drains: no new jobs, the ones in flight are answered, then
it exits.
"""

import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "clients", "python"))

from tidegate_backend import Backend  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connect", default="127.0.0.1:7070")
    args = p.parse_args()

    backend = Backend(["counter"], name="counter-%d" % os.getpid(), connect=args.connect)
    lock = threading.Lock()
    count = 0

    @backend.route("counter")
    def bump(job):
        nonlocal count
        with lock:        # handlers run on several threads at once
            count += 1
            return {"value": count}

    signal.signal(signal.SIGTERM, lambda *_: backend.drain())
    signal.signal(signal.SIGINT, lambda *_: backend.drain())
    backend.run()
    print("value %d, runs %d, repeats %d" % (count, backend.runs, backend.repeats))


if __name__ == "__main__":
    main()
