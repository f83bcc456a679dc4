"""Chunked streaming (?mode=stream): one JSON message per chunk and line, read
with aiohttp and with http.client, which both decode chunked bodies."""

import asyncio
import http.client
import json

import aiohttp
from tidegate import publish


def test_stream_delivers_json_lines_in_order(make_server):
    server = make_server(io_threads=2)

    async def scenario():
        async with aiohttp.ClientSession() as client:
            async with client.get("http://127.0.0.1:%d/sub/ticks?mode=stream" % server.port) as r:
                assert r.status == 200
                assert r.headers["Transfer-Encoding"] == "chunked"
                first = json.loads(await r.content.readline())
                assert first["type"] == "sub" and first["ch"] == "ticks"
                loop = asyncio.get_running_loop()
                sent = await loop.run_in_executor(
                    None, lambda: [publish(server, "ticks", {"i": i}) for i in range(100)])
                got = []
                while len(got) < 100:
                    line = await asyncio.wait_for(r.content.readline(), 10)
                    if line.strip():
                        got.append(json.loads(line))
                assert [m["pos"] for m in got] == sent
                assert [m["data"] for m in got] == [{"i": i} for i in range(100)]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_stream_resumes_from_a_position_and_ends_cleanly_on_shutdown(make_server):
    server = make_server()
    positions = [publish(server, "r", i) for i in range(10)]
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request("GET", "/sub/r?mode=stream&from=" + positions[4])
    resp = c.getresponse()
    assert resp.status == 200
    assert json.loads(resp.readline())["type"] == "sub"
    got = [json.loads(resp.readline()) for _ in range(5)]
    assert [m["pos"] for m in got] == positions[5:]
    # A graceful stop ends the body with its last chunk: the client sees a clean
    # end (http.client raises IncompleteRead on a body cut short).
    assert server.stop() == 0
    assert resp.read() == b""


def test_http10_cannot_stream_chunked(server):
    conn = server.connect()
    r = conn.request("GET", "/sub/x?mode=stream", version="HTTP/1.0")
    assert r.status == 501
