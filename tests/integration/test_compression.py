"""Compression on every transport (docs/protocol.md): gzip on whole HTTP
responses, permessage-deflate on WebSocket, LZ4 frames after a hello on TCP
frames, LZ4 on the backend link; and none on streams. Payloads of 1 byte,
about 100 bytes, 64 KiB and 1 MiB arrive byte-identical with and without
compression, through real clients (curl, aiohttp, websockets) and a frames
client written here from the document; /stats counts the bytes saved."""

import asyncio
import gzip
import json
import random
import re
import socket
import struct
import subprocess

import aiohttp
import pytest
import websockets

import tidegate
from backends import Backend, CBackend
from tidegate import publish, wait_for

lz4_block = pytest.importorskip("lz4.block")  # Debian: python3-lz4 (scripts/deps.sh test)

SIZES = (1, 100, 64 * 1024, 1024 * 1024)
# Room for the 1 MiB payloads: a request body, a subscriber's queue, a frame.
BIG = {"http.max_body": "2m", "push.max_output": "16m", "frames.max_frame": "4m",
       "ws.max_message": "4m"}
JSON_T, BINARY_T, PING_T, PONG_T, LZ4_T = 1, 2, 3, 4, 5


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def payload(n):
    """n bytes of text that compresses like real messages do; starts with a
    letter, so it is carried as a JSON string, never parsed as JSON."""
    rnd = random.Random(n)
    words = [b"price", b"tide", b"gate", b"quote", b"alpha", b"omega", b"bid", b"ask", b"x7"]
    out = bytearray(b"t")
    while len(out) < n:
        out += rnd.choice(words) + b" " + str(rnd.randrange(1000)).encode() + b" "
    return bytes(out[:n])


def before(pos):
    """The position just before <pos>: polling from it returns <pos>'s message."""
    epoch, seq = pos.split(":")
    return "%s:%d" % (epoch, int(seq) - 1)


def data_of(body):
    """The payload of the one message in a long-poll or pull answer."""
    msgs = json.loads(body)["messages"]
    assert len(msgs) == 1
    return msgs[0]["data"].encode()


def compression(srv, transport):
    z = srv.stats()["compression"][transport]
    return z["before"], z["after"]


def http_paths(srv, size):
    ch = "h%d" % size
    since = before(publish(srv, ch, payload(size)))
    return ["/sub/%s?mode=poll&since=%s" % (ch, since),
            "/channels/%s/messages?since=%s" % (ch, since)]


def curl(srv, path, tmp_path, *flags):
    """(headers as a lower-cased dict, body) as curl saw them."""
    head, body = tmp_path / "head", tmp_path / "body"
    subprocess.run(["curl", "-sS", "--max-time", "30", "-D", str(head), "-o", str(body)]
                   + list(flags) + ["http://127.0.0.1:%d%s" % (srv.port, path)], check=True)
    headers = {}
    for line in head.read_bytes().decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, body.read_bytes()


# ---- HTTP ----

def test_http_gzip_round_trips_with_curl_aiohttp_and_without(make_server, tmp_path):
    srv = make_server(BIG)
    cases = []
    for size in SIZES:
        for path in http_paths(srv, size):
            plain = srv.get(path)  # no Accept-Encoding at all: never gzip
            assert plain.status == 200 and plain.header("content-encoding") is None
            assert data_of(plain.body) == payload(size)
            eligible = len(plain.body) >= 128
            assert plain.header_all("vary") == (["Accept-Encoding"] if eligible else [])
            cases.append((path, plain.body, eligible))

            headers, body = curl(srv, path, tmp_path, "--compressed")
            assert headers.get("content-encoding") == ("gzip" if eligible else None), headers
            assert body == plain.body

            headers, body = curl(srv, path, tmp_path)  # curl without Accept-Encoding
            assert "content-encoding" not in headers and body == plain.body

            no = srv.get(path, headers={"Accept-Encoding": "gzip;q=0"})
            assert no.header("content-encoding") is None and no.body == plain.body

            raw = srv.get(path, headers={"Accept-Encoding": "gzip"})
            if eligible:
                assert raw.header("content-encoding") == "gzip"
                assert raw.header_all("vary") == ["Accept-Encoding"]
                assert int(raw.header("content-length")) == len(raw.body) < len(plain.body)
                assert gzip.decompress(raw.body) == plain.body
            else:
                assert raw.header("content-encoding") is None and raw.body == plain.body

    async def with_aiohttp():
        async with aiohttp.ClientSession() as session:  # asks for gzip, inflates itself
            for path, expected, eligible in cases:
                async with session.get("http://127.0.0.1:%d%s" % (srv.port, path)) as r:
                    assert r.status == 200
                    assert r.headers.get("Content-Encoding") == ("gzip" if eligible else None)
                    assert await r.read() == expected

    run(with_aiohttp())
    gz_before, gz_after = compression(srv, "http_gzip")
    assert gz_before > 2 * 1024 * 1024 and 0 < gz_after < gz_before // 2


def test_gzip_threshold_level_zero_and_head(make_server):
    srv = make_server(BIG, http_gzip_min="2k")
    small, large = http_paths(srv, 100)[1], http_paths(srv, 64 * 1024)[1]
    r = srv.get(small, headers={"Accept-Encoding": "gzip"})
    assert 128 < len(r.body) < 2048
    assert r.header("content-encoding") is None and r.header("vary") is None
    r = srv.get(large, headers={"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") == "gzip" and r.header("vary") == "Accept-Encoding"
    # HEAD: not compressed (its length would cost the compression), but
    # says Vary like its GET.
    r = srv.get(large, method="HEAD", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.header("content-encoding") is None
    assert r.header("vary") == "Accept-Encoding"
    assert int(r.header("content-length")) > 64 * 1024

    off = make_server(BIG, http_gzip_level="0")
    path = http_paths(off, 64 * 1024)[1]
    r = off.get(path, headers={"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") is None and r.header("vary") is None
    assert data_of(r.body) == payload(64 * 1024)
    assert compression(off, "http_gzip") == (0, 0)


def test_204_from_a_poll_timeout_is_never_gzipped(make_server):
    srv = make_server({"poll.timeout": "100ms"})
    r = srv.get("/sub/quiet?mode=poll", headers={"Accept-Encoding": "gzip"})
    assert r.status == 204
    assert r.header("content-encoding") is None and r.header("vary") is None


@pytest.mark.parametrize("ctype,gzipped", [
    ("text/plain", True),
    ("application/json; charset=utf-8", True),
    ("image/svg+xml", True),
    ("image/png", False),
    ("video/mp4", False),
    ("audio/ogg", False),
    ("application/zip", False),
    ("application/gzip", False),
    ("font/woff2", False),
    ("application/octet-stream", False),
])
def test_gate_replies_gzipped_by_content_type(make_server, ctype, gzipped):
    srv = make_server()
    Backend(srv, "mirror", "m1", mode="mirror").start()
    wait_for(lambda: srv.stats()["gate"]["links"] == 1, 10 * srv.slow, what="the backend")
    body = payload(4096)
    with srv.connect() as c:
        r = c.request("POST", "/api/mirror/x", body=body,
                      headers={"Accept-Encoding": "gzip", "X-Reply-Content-Type": ctype,
                               "Content-Length": str(len(body))})
    assert r.status == 200 and r.header("content-type") == ctype
    if gzipped:
        assert r.header("content-encoding") == "gzip" and gzip.decompress(r.body) == body
        assert r.header("vary") == "Accept-Encoding"
    else:
        assert r.header("content-encoding") is None and r.body == body
        assert r.header("vary") is None


@pytest.mark.parametrize("extra,encoding", [
    ({"X-Reply-Content-Encoding": "br"}, "br"),
    ({"X-Reply-Cache-Control": "public, no-transform"}, None),
])
def test_backend_encoding_and_no_transform_are_left_alone(make_server, extra, encoding):
    srv = make_server()
    Backend(srv, "mirror", "m1", mode="mirror").start()
    wait_for(lambda: srv.stats()["gate"]["links"] == 1, 10 * srv.slow, what="the backend")
    body = payload(4096)
    headers = {"Accept-Encoding": "gzip, br", "X-Reply-Content-Type": "text/plain",
               "Content-Length": str(len(body))}
    headers.update(extra)
    with srv.connect() as c:
        r = c.request("POST", "/api/mirror/x", body=body, headers=headers)
    assert r.status == 200
    assert r.header_all("content-encoding") == ([encoding] if encoding else [])
    assert r.body == body and r.header("vary") is None
    assert compression(srv, "http_gzip") == (0, 0)


def test_gate_reply_over_lz4_link_then_gzip_to_the_client(make_server):
    """The C backend takes LZ4: the job and its reply travel compressed on
    the link, and the reply reaches the client in gzip."""
    srv = make_server()
    c = CBackend(srv, "echo", ["--routes", "big", "--quiet"]).start()
    wait_for(lambda: srv.stats()["gate"]["links"] == 1, 10 * srv.slow, what="the C backend")
    body = payload(100000)
    with srv.connect() as conn:
        r = conn.request("POST", "/api/big/x", body=body,
                         headers={"Content-Type": "text/plain", "Accept-Encoding": "gzip",
                                  "Content-Length": str(len(body))})
    assert r.status == 200 and r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == body
    lz_before, lz_after = compression(srv, "backend_lz4")
    assert lz_before > 2 * len(body) and 0 < lz_after < lz_before // 2
    metrics = srv.metrics()
    for transport, (b, a) in (("backend_lz4", (lz_before, lz_after)),):
        assert tidegate.metric_sum(metrics, "tidegate_compression_before_bytes_total",
                                   transport=transport) == b
        assert tidegate.metric_sum(metrics, "tidegate_compression_after_bytes_total",
                                   transport=transport) == a
    assert tidegate.metric_sum(metrics, "tidegate_compression_after_bytes_total",
                               transport="http_gzip") > 0
    assert c.stop() == 0


@pytest.mark.parametrize("mode,accept", [("sse", "text/event-stream"),
                                         ("stream", "application/x-ndjson")])
def test_streams_stay_uncompressed_when_gzip_is_accepted(make_server, mode, accept):
    srv = make_server()
    path = "/sub/live" + ("?mode=stream" if mode == "stream" else "")
    with srv.connect() as c:
        c.sendall(tidegate.request("GET", path, headers={"Accept": accept,
                                                         "Accept-Encoding": "gzip"}))
        head = b""
        while b"\r\n\r\n" not in head:
            got = c.recv_some(timeout=5 * srv.slow)
            assert got, "no response head"
            head += got
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-encoding" not in head.lower() and b"vary" not in head.lower()
        body = payload(64 * 1024)
        wait_for(lambda: srv.stats()["push"]["subscribers"] == 1, 5 * srv.slow,
                 what="the subscription")
        publish(srv, "live", body)
        seen = rest
        while body not in seen:
            got = c.recv_some(timeout=10 * srv.slow)
            assert got, "stream ended before the payload"
            seen += got
    assert compression(srv, "http_gzip") == (0, 0)


# ---- WebSocket ----

@pytest.mark.parametrize("deflate", [True, False])
def test_websocket_round_trips_with_and_without_permessage_deflate(make_server, deflate):
    srv = make_server(BIG)

    async def scenario():
        url = "ws://127.0.0.1:%d/ws" % srv.port
        async with websockets.connect(url, compression="deflate" if deflate else None,
                                      max_size=None) as ws:
            offered = ws.response_headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in offered) == deflate
            await ws.send(json.dumps({"op": "hello", "compress": "lz4", "id": 0}))
            assert json.loads(await ws.recv()) == {"type": "hello", "id": 0}  # nothing to offer
            for size in SIZES:
                ch = "w%d" % size
                await ws.send(json.dumps({"op": "sub", "ch": ch, "id": 1}))
                assert json.loads(await ws.recv())["type"] == "sub"
                body = payload(size)
                # server to client: published over HTTP
                await asyncio.to_thread(publish, srv, ch, body)
                m = json.loads(await ws.recv())
                assert m["type"] == "msg" and m["data"].encode() == body
                # client to server (compressed by the client when deflate is on) and back
                await ws.send(json.dumps({"op": "pub", "ch": ch, "data": body.decode(),
                                          "id": 2}))
                got = [json.loads(await ws.recv()), json.loads(await ws.recv())]
                msg = [g for g in got if g["type"] == "msg"]
                assert len(msg) == 1 and msg[0]["data"].encode() == body
                assert {g["type"] for g in got} == {"msg", "pub"}

    run(scenario())
    z_before, z_after = compression(srv, "ws_deflate")
    if deflate:
        assert z_before > 3 * 1024 * 1024 and 0 < z_after < z_before // 2
    else:
        assert (z_before, z_after) == (0, 0)


# ---- TCP frames ----

class FrameClient:
    """docs/protocol.md "TCP frames", with the LZ4 extension when asked."""

    def __init__(self, port, lz4=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.lz4 = False
        self.types = []  # of every frame received
        if lz4:
            self.command(op="hello", compress="lz4", id="h")
            assert self.json() == {"type": "hello", "compress": "lz4", "id": "h"}
            self.lz4 = True

    def send(self, ftype, body=b""):
        self.sock.sendall(struct.pack("!IB", len(body) + 1, ftype) + body)

    def send_lz4(self, inner, declared=None):
        block = lz4_block.compress(inner, store_size=False)
        self.send(LZ4_T, struct.pack("!I", len(inner) if declared is None else declared) + block)

    def command(self, **cmd):
        body = json.dumps(cmd).encode()
        if self.lz4 and len(body) + 1 >= 128:
            self.send_lz4(bytes([JSON_T]) + body)
        else:
            self.send(JSON_T, body)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk

    def frame(self):
        self._need(5)
        length, ftype = struct.unpack("!IB", self.buf[:5])
        self._need(4 + length)
        body, self.buf = self.buf[5:4 + length], self.buf[4 + length:]
        self.types.append(ftype)
        if ftype == LZ4_T:
            assert self.lz4, "an LZ4 frame without the hello"
            n = struct.unpack("!I", body[:4])[0]
            inner = lz4_block.decompress(body[4:], uncompressed_size=n)
            assert len(inner) == n
            return inner[0], inner[1:]
        return ftype, body

    def json(self):
        ftype, body = self.frame()
        assert ftype == JSON_T, (ftype, body[:100])
        return json.loads(body)

    def closed(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def frames_server(make_server, **cfg):
    config = dict(BIG)
    config["frames.listen"] = "127.0.0.1:0"
    config.update(cfg)
    srv = make_server(config)
    port = wait_for(lambda: re.search(r"TCP frames listening on 127\.0\.0\.1:(\d+)",
                                      srv.log_text()), 5 * srv.slow, what="frames listener")
    return srv, int(port.group(1))


@pytest.mark.parametrize("lz4", [True, False])
def test_frames_round_trip_with_and_without_lz4(make_server, lz4):
    srv, port = frames_server(make_server)
    c = FrameClient(port, lz4=lz4)
    for size in SIZES:
        ch = "f%d" % size
        c.command(op="sub", ch=ch, id=1)
        assert c.json()["type"] == "sub"
        body = payload(size)
        publish(srv, ch, body)
        n = len(c.types)
        m = c.json()
        assert m["type"] == "msg" and m["data"].encode() == body
        if lz4 and size >= 64 * 1024:
            assert c.types[n] == LZ4_T
        if size == 1:
            assert c.types[n] == JSON_T  # under 128 bytes: as it is
        c.command(op="pub", ch=ch, data=body.decode(), id=2)  # LZ4 when on and long enough
        got = [c.json(), c.json()]
        msg = [g for g in got if g["type"] == "msg"]
        assert len(msg) == 1 and msg[0]["data"].encode() == body
        assert {g["type"] for g in got} == {"msg", "pub"}
    # A binary payload: raw in a BINARY frame, inside LZ4 when that is shorter.
    blob = bytes(range(256)) * 64
    c.command(op="sub", ch="bin", id=3)
    c.json()
    publish(srv, "bin", blob)
    ftype, frame = c.frame()
    assert ftype == BINARY_T
    hl = struct.unpack("!H", frame[:2])[0]
    assert json.loads(frame[2:2 + hl])["ch"] == "bin" and frame[2 + hl:] == blob
    z_before, z_after = compression(srv, "frames_lz4")
    if lz4:
        assert LZ4_T in c.types
        assert z_before > 3 * 1024 * 1024 and 0 < z_after < z_before // 2
    else:
        assert LZ4_T not in c.types and (z_before, z_after) == (0, 0)


def test_hello_without_lz4_turns_it_off(make_server):
    srv, port = frames_server(make_server)
    c = FrameClient(port, lz4=True)
    c.command(op="hello", id=7)
    assert c.json() == {"type": "hello", "id": 7}
    c.lz4 = False
    c.command(op="sub", ch="off", id=1)
    c.json()
    publish(srv, "off", payload(64 * 1024))
    assert c.json()["data"].encode() == payload(64 * 1024)
    assert c.types[-1] == JSON_T
    c.command(op="hello", compress="zstd")
    assert c.json() == {"type": "hello"}  # not served: no compress in the answer


def good_inner():
    return bytes([JSON_T]) + json.dumps({"op": "ping", "pad": "x" * 200}).encode()


@pytest.mark.parametrize("hello,frame,code,why", [
    (False, lambda c: c.send_lz4(good_inner()), "protocol_error", "need a hello"),
    (True, lambda c: c.send(LZ4_T, struct.pack("!I", 300) + b"\xff" * 40), "protocol_error",
     "does not decompress"),
    (True, lambda c: c.send_lz4(good_inner(), declared=len(good_inner()) + 1), "protocol_error",
     "does not decompress"),
    (True, lambda c: c.send_lz4(good_inner(), declared=1 << 30), "message_too_big",
     "frame too big"),
    (True, lambda c: c.send(LZ4_T, struct.pack("!I", 3)), "protocol_error", "malformed"),
    (True, lambda c: c.send_lz4(bytes([BINARY_T]) + b"y" * 300), "protocol_error",
     "server to client"),
    (True, lambda c: c.send_lz4(bytes([PING_T]) + b"y" * 300), "protocol_error",
     "only a JSON or BINARY"),
    (True, lambda c: c.send_lz4(bytes([LZ4_T]) + b"y" * 300), "protocol_error",
     "only a JSON or BINARY"),
])
def test_bad_lz4_frames_get_an_error_frame_then_close(make_server, hello, frame, code, why):
    srv, port = frames_server(make_server, **{"frames.max_frame": "2k"})
    c = FrameClient(port, lz4=hello)
    frame(c)
    c.lz4 = False  # the error frame comes plain
    err = c.json()
    assert err["type"] == "error" and err["code"] == code and why in err["message"], err
    assert c.closed()
    d = FrameClient(port, lz4=True)  # others unaffected
    d.send(PING_T)
    assert d.frame() == (PONG_T, b"")
