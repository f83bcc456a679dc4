#!/usr/bin/python3
"""bench/frames_idle.py - user-space bytes per idle TCP-frames subscriber.

    /usr/bin/python3 bench/frames_idle.py [COUNT] [build/release]

Starts its own tidegate (--io-threads 2, frames.listen on a free port), opens
COUNT (default 10,000) TCP-frames connections, each subscribed to one channel
(a JSON frame {"op":"sub","ch":"idle"}, its answer read), and prints the
server's RSS growth divided by COUNT. The tidegate it started is stopped by
PID. Standard library only.
"""

import os
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BUILD = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build/release"))


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def frame(text):
    body = text.encode()
    return struct.pack(">IB", len(body) + 1, 1) + body


def read_frame(s):
    head = b""
    while len(head) < 5:
        chunk = s.recv(5 - len(head))
        if not chunk:
            raise SystemExit("bench/frames_idle.py: the server closed a connection")
        head += chunk
    n, _ = struct.unpack(">IB", head)
    body = b""
    while len(body) < n - 1:
        body += s.recv(n - 1 - len(body))
    return body


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if COUNT + 64 > hard:
        raise SystemExit("bench/frames_idle.py: %d connections need %d descriptors; the limit "
                         "is %d" % (COUNT, COUNT + 64, hard))
    tmp = tempfile.mkdtemp(prefix="tgframes.")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fport = sock.getsockname()[1]
    sock.close()
    conf = os.path.join(tmp, "tidegate.conf")
    with open(conf, "w") as f:
        f.write("frames.listen = 127.0.0.1:%d\n" % fport)
    log = open(os.path.join(tmp, "tidegate.log"), "wb")
    tg = subprocess.Popen([os.path.join(BUILD, "tidegate"), "--config", conf, "--listen",
                           "127.0.0.1:0", "--backend-listen", "", "--io-threads", "2"],
                          stdout=log, stderr=log, preexec_fn=lambda: resource.setrlimit(
                              resource.RLIMIT_NOFILE, (hard, hard)))
    conns = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", fport)).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        before = rss(tg.pid)
        sub = frame('{"op":"sub","ch":"idle"}')
        for i in range(COUNT):
            s = socket.create_connection(("127.0.0.1", fport))
            s.sendall(sub)
            conns.append(s)
        for s in conns:
            if b'"sub"' not in read_frame(s):
                raise SystemExit("bench/frames_idle.py: a subscription was not confirmed")
        time.sleep(0.5)
        after = rss(tg.pid)
        print("%d TCP-frames subscribers: %d bytes of user space per connection "
              "(RSS %d -> %d KiB)" % (COUNT, (after - before) // COUNT, before >> 10, after >> 10))
    finally:
        for s in conns:
            s.close()
        tg.terminate()
        tg.wait(10)
        log.close()


if __name__ == "__main__":
    main()
