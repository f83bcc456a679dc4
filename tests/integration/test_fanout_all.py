"""Ordering and no loss across every transport: 1,000 subscribers spread over
both IO loops (WebSocket, SSE, chunked stream, TCP frames, long-poll), 1,000
messages published; every subscriber sees exactly 0..999, in order, once."""

import asyncio
import http.client
import json
import re
import struct

import websockets

import tidegate

N_MSGS = 1000
CH = "everyone"


async def http_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return head


async def ws_sub(port, ready):
    ws = await websockets.connect("ws://127.0.0.1:%d/sub/%s" % (port, CH), compression=None)
    assert json.loads(await ws.recv())["type"] == "sub"
    ready()
    got = []
    while len(got) < N_MSGS:
        got.append(json.loads(await ws.recv())["data"])
    await ws.close()
    return got


async def sse_sub(port, ready):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(("GET /sub/%s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n" % CH).encode())
    await http_head(r)
    got, event = [], None
    while len(got) < N_MSGS:
        line = (await r.readline()).rstrip(b"\n")
        if line.startswith(b"event: "):
            event = line[7:]
            if event == b"sub":
                ready()
        elif line.startswith(b"data: ") and event == b"message":
            got.append(json.loads(line[6:]))
    w.close()
    return got


async def stream_sub(port, ready):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(("GET /sub/%s?mode=stream HTTP/1.1\r\nHost: t\r\n\r\n" % CH).encode())
    await http_head(r)
    got = []
    while len(got) < N_MSGS:
        size = int((await r.readline()).strip(), 16)
        chunk = await r.readexactly(size + 2)
        m = json.loads(chunk[:size])
        if m["type"] == "sub":
            ready()
        elif m["type"] == "msg":
            got.append(m["data"])
    w.close()
    return got


async def frames_sub(port, ready):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"op": "sub", "ch": CH}).encode()
    w.write(struct.pack("!IB", len(body) + 1, 1) + body)
    got = []
    while len(got) < N_MSGS:
        length, ftype = struct.unpack("!IB", await r.readexactly(5))
        m = json.loads(await r.readexactly(length - 1))
        if m["type"] == "sub":
            ready()
        elif m["type"] == "msg":
            got.append(m["data"])
    w.close()
    return got


async def poll_sub(port, since, ready):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    got = []
    ready()
    while len(got) < N_MSGS:
        w.write(("GET /sub/%s?mode=poll&since=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                 % (CH, since)).encode())
        head = await r.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status == 204:
            continue
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        body = json.loads(await r.readexactly(length))
        got += [m["data"] for m in body["messages"]]
        since = body["next"]
    w.close()
    return got


def test_thousand_subscribers_on_every_transport_see_everything_once_in_order(make_server):
    server = make_server({"frames.listen": "127.0.0.1:0", "push.history_len": "2000"},
                         io_threads=2)
    frames_port = int(tidegate.wait_for(
        lambda: re.search(r"TCP frames listening on 127\.0\.0\.1:(\d+)", server.log_text()),
        5, what="frames listener").group(1))
    # Long-polls resume from a position taken before anything is published.
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request("POST", "/pub/" + CH, body="\"start\"")
    start = json.loads(c.getresponse().read())["pos"]

    async def scenario():
        count = {"ready": 0}
        all_ready = asyncio.Event()
        plan = [("ws", 300), ("sse", 250), ("stream", 200), ("frames", 200), ("poll", 50)]
        total = sum(n for _, n in plan)

        def ready():
            count["ready"] += 1
            if count["ready"] == total:
                all_ready.set()

        tasks = []
        for kind, n in plan:
            for _ in range(n):
                if kind == "ws":
                    coro = ws_sub(server.port, ready)
                elif kind == "sse":
                    coro = sse_sub(server.port, ready)
                elif kind == "stream":
                    coro = stream_sub(server.port, ready)
                elif kind == "frames":
                    coro = frames_sub(frames_port, ready)
                else:
                    coro = poll_sub(server.port, start, ready)
                tasks.append(asyncio.ensure_future(coro))
        await asyncio.wait_for(all_ready.wait(), 60)

        def publisher():
            for i in range(N_MSGS):
                c.request("POST", "/pub/" + CH, body=str(i))
                r = c.getresponse()
                assert r.status == 202
                r.read()
        await asyncio.get_running_loop().run_in_executor(None, publisher)
        return await asyncio.wait_for(asyncio.gather(*tasks), 120)

    results = asyncio.run(scenario())
    assert len(results) == 1000
    for got in results:
        assert got == list(range(N_MSGS))
    loops = server.stats()["loops"]
    assert all(lp["accepted"] >= 100 for lp in loops), loops
