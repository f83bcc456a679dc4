#!/usr/bin/python3
"""Memory per idle WebSocket subscriber: opens N WebSocket connections to a
running tidegate, each subscribed to one of a few channels, and reports the
server's RSS growth per connection (user space only: the kernel's socket
memory is not in RSS). Loopback only; bounded by a deadline.

usage: ws_idle.py PORT PID [N] [CHANNELS]
"""
import base64
import json
import os
import socket
import sys
import time

HOST = "127.0.0.1"


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def masked(payload):
    key = os.urandom(4)
    n = len(payload)
    assert n < 126
    return bytes([0x81, 0x80 | n]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def recv_until(s, marker):
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("server closed")
        data += chunk
    return data


def open_subscriber(port, i, channel):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.%d" % (2 + i % 250), 0))          # spread source addresses
    s.connect((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    recv_until(s, b"\r\n\r\n")
    s.sendall(masked(json.dumps({"op": "sub", "ch": channel}).encode()))
    recv_until(s, b'"type":"sub"')
    return s


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    channels = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    deadline = time.time() + 120
    warm = [open_subscriber(port, i, "ch%d" % (i % channels)) for i in range(channels)]
    time.sleep(0.5)
    before = rss(pid)
    socks = []
    for i in range(n):
        if time.time() > deadline:
            raise SystemExit("ws_idle: deadline passed after %d connections" % i)
        socks.append(open_subscriber(port, i, "ch%d" % (i % channels)))
    time.sleep(1.0)                                     # let the server settle
    after = rss(pid)
    per = (after - before) / n
    print("RESULT ws_idle conns=%d channels=%d rss_before=%d rss_after=%d bytes_per_conn=%.0f"
          % (n, channels, before, after, per))
    for s in socks + warm:
        s.close()


if __name__ == "__main__":
    main()
