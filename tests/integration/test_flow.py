"""Subscribers that stop reading: on a `latest` channel the backlog collapses to
the newest value; on an `all` channel the subscriber is cut at the output cap
(close 1008) while everyone else gets everything. Server memory stays bounded."""

import asyncio
import base64
import http.client
import json
import os
import socket
import struct
import threading

import websockets

import tidegate


def stalled_subscriber(server, ch, rcvbuf=4096):
    """A WebSocket subscriber over a plain socket that reads nothing until told."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /sub/%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (ch, key)).encode())
    data = b""
    while b'"type":"sub"' not in data:
        chunk = s.recv(4096)
        assert chunk, "closed before subscribing"
        data += chunk
    s.settimeout(20)
    return s


def read_frames(sock):
    """Every frame until the close frame: [(opcode, payload)]."""
    buf, frames = b"", []
    while True:
        while len(buf) < 2 or len(buf) < frame_len(buf):
            chunk = sock.recv(1 << 16)
            if not chunk:
                return frames
            buf += chunk
        n, hl = frame_len(buf), header_len(buf)
        op, payload = buf[0] & 0x0F, buf[hl:n]
        frames.append((op, payload))
        buf = buf[n:]
        if op == 0x8:
            return frames


def header_len(b):
    ln = b[1] & 0x7F
    return 2 + (2 if ln == 126 else 8 if ln == 127 else 0)


def frame_len(b):
    if len(b) < 2:
        return 2
    ln = b[1] & 0x7F
    if ln == 126:
        return 4 + (struct.unpack("!H", b[2:4])[0] if len(b) >= 4 else 0) if len(b) >= 4 else 4
    if ln == 127:
        return 10 + struct.unpack("!Q", b[2:10])[0] if len(b) >= 10 else 10
    return 2 + ln


def publish_many(server, ch, count, size):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    last = None
    for i in range(count):
        c.request("POST", "/pub/" + ch, body=json.dumps({"i": i, "pad": "x" * size}))
        r = c.getresponse()
        assert r.status == 202
        last = json.loads(r.read())["pos"]
    c.close()
    return last


def test_latest_channel_collapses_a_stalled_backlog(make_server):
    server = make_server({"channel.px.*.mode": "latest", "channel.px.*.history_len": "1"})
    s = stalled_subscriber(server, "px.eurusd")
    rss0 = server.rss()
    last = publish_many(server, "px.eurusd", 10000, 1000)
    grown = server.rss() - rss0
    s.settimeout(2)
    got, buf = [], b""
    try:
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= frame_len(buf):
                n = frame_len(buf)
                got.append(json.loads(buf[header_len(buf):n]))
                buf = buf[n:]
            if got and got[-1]["pos"] == last:
                break
    except socket.timeout:
        pass
    assert got and got[-1]["pos"] == last and got[-1]["data"]["i"] == 9999
    assert len(got) < 10000                                   # the backlog collapsed
    positions = [int(m["pos"].split(":")[1]) for m in got]
    assert positions == sorted(set(positions))                # in order, no repeat
    st = server.stats()
    assert st["push"]["conflated"] > 0
    # 10,000 x 1 KB went through; a queue per subscriber would have kept megabytes.
    # (Under AddressSanitizer freed memory sits in its quarantine: RSS says nothing.)
    if not tidegate.is_asan(tidegate.binary_path()):
        assert grown < 4 * 1024 * 1024, grown
    s.close()


def test_stalled_subscriber_is_cut_and_the_others_get_everything(make_server):
    server = make_server({"push.max_output": "64k"}, io_threads=2)
    n_subs, n_msgs = 50, 1000
    stalled = stalled_subscriber(server, "all")

    async def readers():
        conns = [await websockets.connect("ws://127.0.0.1:%d/sub/all" % server.port)
                 for _ in range(n_subs)]
        for ws in conns:
            assert json.loads(await ws.recv())["type"] == "sub"
        loop = asyncio.get_running_loop()
        # 4 MB in all: more than the kernel buffers between server and stalled client.
        pub = loop.run_in_executor(None, publish_many, server, "all", n_msgs, 4000)

        async def read(ws):
            got = []
            while len(got) < n_msgs:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["data"]["i"])
            return got
        results = await asyncio.gather(*(read(ws) for ws in conns))
        await pub
        for ws in conns:
            await ws.close()
        return results

    results = asyncio.run(asyncio.wait_for(readers(), 120))
    for got in results:
        assert got == list(range(n_msgs))
    frames = read_frames(stalled)
    assert frames[-1][0] == 0x8
    assert struct.unpack("!H", frames[-1][1][:2])[0] == 1008
    assert b"slow consumer" in frames[-1][1]
    stalled.close()                       # the server counts the close once it is done
    server.wait_stats(lambda st: st["errors"]["slow_consumer"] == 1, what="slow consumer counted")
