"""TCP frames (docs/protocol.md): a small client written here from the
document alone: commands and messages as JSON frames, binary payloads raw,
ping/pong, and bad frames refused with an error frame and a close."""

import json
import re
import socket
import struct

import pytest

import tidegate
from tidegate import publish

JSON, BINARY, PING, PONG = 1, 2, 3, 4


class FrameClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, ftype, body=b""):
        self.sock.sendall(struct.pack("!IB", len(body) + 1, ftype) + body)

    def command(self, **cmd):
        self.send(JSON, json.dumps(cmd).encode())

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk

    def frame(self):
        self._need(5)
        length, ftype = struct.unpack("!IB", self.buf[:5])
        self._need(4 + length)
        body, self.buf = self.buf[5:4 + length], self.buf[4 + length:]
        return ftype, body

    def json(self):
        ftype, body = self.frame()
        assert ftype == JSON, (ftype, body)
        return json.loads(body)

    def closed(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def frames_server(make_server, **cfg):
    config = {"frames.listen": "127.0.0.1:0"}
    config.update(cfg)
    server = make_server(config, io_threads=2)
    port = tidegate.wait_for(
        lambda: re.search(r"TCP frames listening on 127\.0\.0\.1:(\d+)", server.log_text()),
        5, what="frames listener").group(1)
    return server, int(port)


def test_subscribe_and_receive_json_and_binary(make_server):
    server, port = frames_server(make_server)
    c = FrameClient(port)
    c.command(op="sub", ch="dev", id=1)
    sub = c.json()
    assert sub["type"] == "sub" and sub["id"] == 1
    p1 = publish(server, "dev", b'{"t":21.5}')
    p2 = publish(server, "dev", b"\x00\x01\x02\xff")
    assert c.json() == {"type": "msg", "ch": "dev", "pos": p1, "data": {"t": 21.5}}
    ftype, body = c.frame()
    assert ftype == BINARY
    hl = struct.unpack("!H", body[:2])[0]
    assert json.loads(body[2:2 + hl]) == {"type": "msg", "ch": "dev", "pos": p2}
    assert body[2 + hl:] == b"\x00\x01\x02\xff"


def test_ping_pong_and_commands(make_server):
    server, port = frames_server(make_server)
    c = FrameClient(port)
    c.send(PING)
    assert c.frame() == (PONG, b"")
    c.command(op="ping", id="x")
    assert c.json() == {"type": "pong", "id": "x"}
    c.command(op="sub", ch="a")
    c.json()
    c.command(op="pub", ch="a", data=[1, 2], id=2)
    got = [c.json(), c.json()]
    assert {m["type"] for m in got} == {"msg", "pub"}
    c.send(JSON, b"{oops")
    assert c.json()["code"] == "bad_command"


def test_resume_over_frames(make_server):
    server, port = frames_server(make_server)
    positions = [publish(server, "r", b'{"i":%d}' % i) for i in range(5)]
    c = FrameClient(port)
    c.command(op="sub", ch="r", **{"from": positions[1]})
    assert c.json()["type"] == "sub"
    assert [c.json()["pos"] for _ in range(3)] == positions[2:]


@pytest.mark.parametrize("frame,why", [
    (struct.pack("!IB", 1, 9), "unknown frame type"),
    (struct.pack("!I", 0) + b"x", "empty frame"),
    (struct.pack("!IB", 2048 + 2, JSON), "frame too big"),
    (struct.pack("!IB", 3, PING) + b"ab", "ping and pong frames are empty"),
    (struct.pack("!IB", 5, BINARY) + b"abcd", "unknown frame type"),
])
def test_bad_frames_get_an_error_frame_then_close(make_server, frame, why):
    server, port = frames_server(make_server, **{"frames.max_frame": "2k"})
    c = FrameClient(port)
    c.sock.sendall(frame)
    err = c.json()
    assert err["type"] == "error" and why in err["message"]
    assert c.closed()
    # Other clients are unaffected.
    d = FrameClient(port)
    d.send(PING)
    assert d.frame() == (PONG, b"")
