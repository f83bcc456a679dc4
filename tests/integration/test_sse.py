"""Server-Sent Events: positions as event ids, Last-Event-ID resume, gaps,
payload kinds, heartbeats. Read with aiohttp (a client nobody here wrote) and
with a plain socket where the exact bytes matter."""

import asyncio
import base64
import json
import socket

import aiohttp
from tidegate import publish


class Stream:
    """An event stream over a plain socket, parsed per the SSE rules."""

    def __init__(self, server, ch, headers=None, query=""):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET /sub/%s%s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n"
                           "%s\r\n" % (ch, query, extra)).encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])
        self.head = head.decode()

    def _until(self, marker):
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buf += chunk
        out, self.buf = self.buf.split(marker, 1)
        return out

    def event(self):
        """The next event as a dict (id, event, data), or {"comment": ...}."""
        block = self._until(b"\n\n").decode()
        ev, data = {}, []
        for line in block.split("\n"):
            if line.startswith(":"):
                return {"comment": line[1:].strip()}
            field, _, value = line.partition(": ")
            if field == "data":
                data.append(value)
            else:
                ev[field] = value
        ev["data"] = "\n".join(data)
        return ev

    def message(self):
        while True:
            ev = self.event()
            if ev.get("event", "").startswith("message"):
                return ev

    def close(self):
        self.sock.close()


def test_events_carry_positions_and_every_payload_kind(server):
    s = Stream(server, "news")
    assert s.status == 200 and "text/event-stream" in s.head
    sub = s.event()
    assert sub["event"] == "sub" and json.loads(sub["data"])["ch"] == "news"
    p1 = publish(server, "news", {"a": 1})
    p2 = publish(server, "news", b"line one\r\nline two\nline three")
    p3 = publish(server, "news", b"\x00\x01\xfe")
    e1, e2, e3 = s.message(), s.message(), s.message()
    assert (e1["id"], e1["event"], json.loads(e1["data"])) == (p1, "message", {"a": 1})
    assert (e2["id"], e2["data"]) == (p2, "line one\nline two\nline three")
    assert (e3["id"], e3["event"]) == (p3, "message-base64")
    assert base64.b64decode(e3["data"]) == b"\x00\x01\xfe"
    s.close()


def test_last_event_id_resumes_exactly_after_it(make_server):
    server = make_server(io_threads=2)
    s = Stream(server, "feed")
    s.event()
    first = [publish(server, "feed", i) for i in range(3)]
    seen = [s.message()["id"] for _ in range(3)]
    assert seen == first
    s.close()
    missed = [publish(server, "feed", {"i": i}) for i in range(25)]
    s = Stream(server, "feed", headers={"Last-Event-ID": seen[-1]})
    got = [s.message() for _ in range(25)]
    assert [e["id"] for e in got] == missed
    assert [json.loads(e["data"])["i"] for e in got] == list(range(25))
    s.close()


def test_from_beyond_history_is_a_gap_event(make_server):
    server = make_server({"push.history_len": "3"})
    positions = [publish(server, "g", i) for i in range(10)]
    epoch = positions[0].split(":")[0]
    s = Stream(server, "g", query="?from=%s:2" % epoch)
    assert s.event()["event"] == "sub"
    gap = s.event()
    assert gap["event"] == "gap" and gap["id"] == positions[-1]
    assert json.loads(gap["data"]) == {"type": "gap", "ch": "g", "from": "%s:2" % epoch,
                                       "pos": positions[-1]}
    nxt = publish(server, "g", "after")
    assert s.message()["id"] == nxt
    s.close()


def test_heartbeat_comments_on_an_idle_stream(make_server):
    server = make_server({"sse.heartbeat": "200ms"})
    s = Stream(server, "quiet")
    assert s.event()["event"] == "sub"
    assert s.event() == {"comment": "heartbeat"}
    assert s.event() == {"comment": "heartbeat"}
    s.close()


def test_bad_position_gets_400(server):
    s = Stream(server, "x", headers={"Last-Event-ID": "not-a-position"})
    assert s.status == 400


def test_aiohttp_event_source_reads_messages(make_server):
    server = make_server(io_threads=2)

    async def scenario():
        async with aiohttp.ClientSession() as http:
            async with http.get("http://127.0.0.1:%d/sub/live" % server.port,
                                headers={"Accept": "text/event-stream"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/event-stream"
                assert (await resp.content.readline()).startswith(b"id: ")  # the sub notice
                loop = asyncio.get_running_loop()
                sent = await loop.run_in_executor(
                    None, lambda: [publish(server, "live", {"n": i}) for i in range(50)])
                got, last_id = [], None
                while len(got) < 50:
                    line = (await asyncio.wait_for(resp.content.readline(), 10)).decode()
                    if line.startswith("id: "):
                        last_id = line[4:].strip()
                    if line.startswith("data: {\"n\""):
                        got.append((last_id, json.loads(line[6:])["n"]))
                assert got == list(zip(sent, range(50)))

    asyncio.run(asyncio.wait_for(scenario(), 60))
    server.wait_live(1)
