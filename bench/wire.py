#!/usr/bin/python3
"""bench/wire.py - bytes on the wire with and without compression, for a typical
JSON reply (an order list of about 3 KB), on each hop that compresses:

  - HTTP response through the gate: gzip when the client accepts it;
  - backend link: LZ4 for bodies of gate.lz4_min (128) bytes or more, both ways
    (the request's body to the backend, its reply back), from /stats;
  - WebSocket: permessage-deflate, for the same JSON published to a channel,
    from /stats.

    /usr/bin/python3 bench/wire.py [build/release]

Starts its own tidegate (on 127.0.0.1, a free port) and examples/echo (the C
backend, which echoes the request's body), and stops both by PID.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build/release"))


def typical_json():
    items = [{"sku": "SKU-%05d" % (1000 + i), "name": "Blue cotton shirt, size %d" % (38 + i % 8),
              "qty": 1 + i % 3, "price": {"amount": 1999 + 100 * i, "currency": "EUR"},
              "status": "shipped" if i % 4 else "pending"} for i in range(20)]
    return json.dumps({"order": 123456, "customer": {"id": 987, "name": "Ada Example"},
                       "items": items, "total": {"amount": 59970, "currency": "EUR"}}).encode()


def wait(pred, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit("bench/wire.py: timed out waiting for " + what)


def stats(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port) as r:
        return json.load(r)


def http_bytes(port, body, gzip):
    """Bytes of the whole response (head and body) to POST /json/ with <body>."""
    s = socket.create_connection(("127.0.0.1", port))
    head = ("POST /json/ HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (len(body), "Accept-Encoding: gzip\r\n" if gzip else ""))
    s.sendall(head.encode() + body)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    status = got.split(b"\r\n", 1)[0]
    assert b" 200 " in status, status
    assert (b"content-encoding: gzip" in got.lower()) == gzip, got[:300]
    return len(got)


async def ws_publish_once(port, body):
    async with websockets.connect("ws://127.0.0.1:%d/sub/wire" % port,
                                  compression="deflate") as ws:
        await asyncio.wait_for(ws.recv(), 10)                       # the "sub" notice
        req = urllib.request.Request("http://127.0.0.1:%d/pub/wire" % port, data=body,
                                     method="POST")
        await asyncio.get_running_loop().run_in_executor(None, lambda: urllib.request.urlopen(req).read())
        msg = await asyncio.wait_for(ws.recv(), 10)
        return len(msg)


def main():
    body = typical_json()
    tmp = tempfile.mkdtemp(prefix="tgwire.")
    conf = os.path.join(tmp, "tidegate.conf")
    with open(conf, "w") as f:
        f.write("route.json.http = /json/\n")
    log = open(os.path.join(tmp, "tidegate.log"), "wb")
    tg = subprocess.Popen([os.path.join(BUILD, "tidegate"), "--config", conf, "--listen",
                           "127.0.0.1:0", "--backend-listen", "127.0.0.1:0", "--io-threads", "1"],
                          stdout=log, stderr=log)
    procs = [tg]
    try:
        def ports():
            text = open(log.name, "rb").read()
            c = re.search(rb"(?<!TCP frames )listening on 127\.0\.0\.1:(\d+)", text)
            b = re.search(rb"backend listener on 127\.0\.0\.1:(\d+)", text)
            return (int(c.group(1)), int(b.group(1))) if c and b else None
        port, bport = wait(ports, "tidegate to listen")
        echo = subprocess.Popen([os.path.join(BUILD, "examples/echo"), "--connect",
                                 "127.0.0.1:%d" % bport, "--routes", "json", "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(echo)
        wait(lambda: stats(port)["gate"]["links"] == 1, "the backend's link")

        plain = http_bytes(port, body, gzip=False)
        zipped = http_bytes(port, body, gzip=True)
        before = stats(port)["compression"]["backend_lz4"]
        n = 100
        for _ in range(n):
            http_bytes(port, body, gzip=False)
        after = stats(port)["compression"]["backend_lz4"]
        link_raw = (after["before"] - before["before"]) / n
        link_lz4 = (after["after"] - before["after"]) / n

        ws0 = stats(port)["compression"]["ws_deflate"]
        got = asyncio.run(ws_publish_once(port, body))
        ws1 = stats(port)["compression"]["ws_deflate"]
        ws_raw, ws_z = ws1["before"] - ws0["before"], ws1["after"] - ws0["after"]

        print("typical JSON reply: %d bytes (an order with 20 items)" % len(body))
        print("%-44s %10s %12s %7s" % ("hop", "plain", "compressed", "ratio"))
        print("%-44s %10d %12d %7.2f" % ("HTTP response through the gate (gzip, level 1)",
                                          plain, zipped, zipped / plain))
        print("%-44s %10.0f %12.0f %7.2f" % ("backend link, job + reply frames (LZ4)",
                                              link_raw, link_lz4, link_lz4 / link_raw))
        print("%-44s %10d %12d %7.2f" % ("WebSocket message (permessage-deflate)",
                                          ws_raw, ws_z, ws_z / ws_raw))
        assert got > 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


if __name__ == "__main__":
    main()
