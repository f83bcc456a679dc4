"""Push over WebSocket with a client nobody here wrote (python websockets):
subscribe, receive in order, resume without loss or duplicates, gaps, client
commands, and every protocol violation closed with its code."""

import asyncio
import base64
import json
import os
import socket
import struct

import pytest
import websockets
from tidegate import publish


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def seq(pos):
    return int(pos.split(":")[1])


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws, ch, frm=None, id=None):
    cmd = {"op": "sub", "ch": ch}
    if frm is not None:
        cmd["from"] = frm
    if id is not None:
        cmd["id"] = id
    await ws.send(json.dumps(cmd))
    reply = await recv_json(ws)
    assert reply["type"] == "sub" and reply["ch"] == ch, reply
    if id is not None:
        assert reply["id"] == id
    return reply


def url(server, path="/ws"):
    return "ws://127.0.0.1:%d%s" % (server.port, path)


def test_subscribe_receive_in_order_then_unsubscribe(make_server):
    server = make_server(io_threads=2)

    async def scenario():
        async with websockets.connect(url(server)) as ws:
            sub = await subscribe(ws, "news", id=1)
            positions = [publish(server, "news", {"n": i}) for i in range(20)]
            for i, pos in enumerate(positions):
                m = await recv_json(ws)
                assert m == {"type": "msg", "ch": "news", "pos": pos, "data": {"n": i}}
            assert seq(positions[0]) == seq(sub["pos"]) + 1
            await ws.send(json.dumps({"op": "unsub", "ch": "news", "id": "u"}))
            assert await recv_json(ws) == {"type": "unsub", "ch": "news", "id": "u"}
            after = publish(server, "news", {"n": "missed"})
            # Resuming from the last position seen returns only what came after;
            # had the unsubscribed message been delivered, it would come first.
            await subscribe(ws, "news", frm=positions[-1])
            m = await recv_json(ws)
            assert m["pos"] == after and m["data"] == {"n": "missed"}

    run(scenario())


def test_several_channels_on_one_connection(server):
    async def scenario():
        async with websockets.connect(url(server)) as ws:
            for ch in ("a", "b", "c"):
                await subscribe(ws, ch)
            sent = {ch: publish(server, ch, ch.upper()) for ch in ("a", "b", "c")}
            got = {}
            for _ in range(3):
                m = await recv_json(ws)
                got[m["ch"]] = (m["pos"], m["data"])
            assert got == {ch: (sent[ch], ch.upper()) for ch in sent}

    run(scenario())


def test_payload_kinds_json_text_and_binary(server):
    async def scenario():
        async with websockets.connect(url(server)) as ws:
            await subscribe(ws, "kinds")
            publish(server, "kinds", b'{"price": 10.5}')
            publish(server, "kinds", "plain \"text\" \u00e9".encode())
            publish(server, "kinds", b"\x00\xff\xfe")
            assert (await recv_json(ws))["data"] == {"price": 10.5}
            assert (await recv_json(ws))["data"] == "plain \"text\" \u00e9"
            frame = await asyncio.wait_for(ws.recv(), 10)        # binary: a binary frame
            assert isinstance(frame, bytes)
            hl = struct.unpack("!H", frame[:2])[0]
            head = json.loads(frame[2:2 + hl])
            assert head["type"] == "msg" and head["ch"] == "kinds"
            assert frame[2 + hl:] == b"\x00\xff\xfe"

    run(scenario())


def test_resume_after_disconnect_gets_exactly_the_missed(make_server):
    server = make_server(io_threads=2)

    async def scenario():
        async with websockets.connect(url(server)) as ws:
            await subscribe(ws, "feed")
            last = [publish(server, "feed", i) for i in range(5)][-1]
            for _ in range(5):
                await recv_json(ws)
        missed = [publish(server, "feed", {"i": i}) for i in range(50)]
        async with websockets.connect(url(server, "/sub/feed?from=" + last)) as ws:
            sub = await recv_json(ws)
            assert sub["type"] == "sub" and sub["pos"] == missed[-1]
            for i, pos in enumerate(missed):
                assert await recv_json(ws) == {"type": "msg", "ch": "feed", "pos": pos,
                                               "data": {"i": i}}
            live = publish(server, "feed", "live")
            assert (await recv_json(ws))["pos"] == live

    run(scenario())


def test_resume_past_history_is_a_gap(make_server):
    server = make_server({"push.history_len": "5"})

    async def scenario():
        positions = [publish(server, "short", i) for i in range(20)]
        epoch = positions[0].split(":")[0]
        async with websockets.connect(url(server)) as ws:
            await subscribe(ws, "short", frm="%s:3" % epoch)
            gap = await recv_json(ws)
            assert gap == {"type": "gap", "ch": "short", "from": "%s:3" % epoch,
                           "pos": positions[-1]}
            await subscribe(ws, "other", frm="12345:1")   # an epoch the channel never had
            assert (await recv_json(ws))["type"] == "gap"
            nxt = publish(server, "short", "next")
            assert (await recv_json(ws))["pos"] == nxt

    run(scenario())


def fan_out_checks_every_message(server, ch, n_subs, done, most=20000):
    """n_subs WebSocket subscribers of ch; a thread publishes 0, 1, 2, ... over
    keep-alive HTTP while they read, until done(sent) says enough (asked every
    100 messages) or most were sent, then an end mark. Every subscriber must
    get every message once, in order."""

    async def scenario():
        conns = [await websockets.connect(url(server)) for _ in range(n_subs)]
        try:
            for ws in conns:
                await subscribe(ws, ch)

            def publisher():
                import http.client
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                sent = 0
                while sent < most and not (sent % 100 == 0 and sent and done(sent)):
                    c.request("POST", "/pub/" + ch, body=str(sent))
                    r = c.getresponse()
                    assert r.status == 202
                    r.read()
                    sent += 1
                c.request("POST", "/pub/" + ch, body='"end"')
                c.getresponse().read()
                c.close()
                return sent
            pub = asyncio.get_running_loop().run_in_executor(None, publisher)

            async def reader(ws):
                got = []
                while (data := (await recv_json(ws, timeout=30))["data"]) != "end":
                    got.append(data)
                return got
            results = await asyncio.gather(*(reader(ws) for ws in conns))
            sent = await pub
            for got in results:
                assert got == list(range(sent))
        finally:
            for ws in conns:
                await ws.close()

    run(scenario(), timeout=120)


@pytest.mark.parametrize("io_uring,coalesce", [("true", "0ms"), ("false", "0ms"), ("true", "50ms")])
def test_every_subscriber_on_every_loop_sees_every_message_once_in_order(make_server, io_uring,
                                                                           coalesce):
    """With io_uring a loop sends a broadcast's frames in batches (one system
    call for many connections); without, one send() each; with push.coalesce,
    a subscriber's messages that follow closely share one write. Same result."""
    server = make_server({"io_uring": io_uring, "push.coalesce": coalesce,
                          "push.coalesce_busy": "0ms"}, io_threads=2)
    fan_out_checks_every_message(server, "fan", 200, lambda sent: sent >= 300)
    loops = server.stats()["loops"]
    assert all(lp["accepted"] > 0 for lp in loops), loops   # subscribers on every loop
    if io_uring == "true":
        assert all(lp["batched"] > lp["batches"] > 0 for lp in loops), loops
    else:
        assert all(lp["batches"] == 0 for lp in loops), loops
    if coalesce != "0ms":
        assert all(lp["coalesced"] > 0 for lp in loops), loops
    else:
        assert all(lp["coalesced"] == 0 for lp in loops), loops


def test_a_busy_loop_holds_messages_and_still_delivers_each_once_in_order(make_server):
    """Past push.coalesce_above broadcast writes a second, a loop holds each
    subscriber's messages for a moment so that several share one write.
    Nothing is lost, repeated or reordered by it."""
    server = make_server({"push.coalesce_above": "200", "push.coalesce_busy": "20ms"},
                         io_threads=2)
    # Published until every loop has held some: it takes a 100 ms window of
    # load for a loop to count as busy.
    fan_out_checks_every_message(
        server, "busy", 20,
        lambda sent: all(lp["coalesced"] > 0 for lp in server.stats()["loops"]))
    loops = server.stats()["loops"]
    assert all(lp["coalesced"] > 0 for lp in loops), loops


def test_client_commands_publish_ping_and_errors(server):
    async def scenario():
        async with websockets.connect(url(server)) as ws:
            await subscribe(ws, "chat")
            await ws.send(json.dumps({"op": "pub", "ch": "chat", "data": {"t": "hi"}, "id": 7}))
            a, b = await recv_json(ws), await recv_json(ws)
            msg, ack = (a, b) if a["type"] == "msg" else (b, a)
            assert msg["data"] == {"t": "hi"}
            assert ack == {"type": "pub", "ch": "chat", "pos": msg["pos"], "id": 7}
            await ws.send(json.dumps({"op": "ping", "id": "p1"}))
            assert await recv_json(ws) == {"type": "pong", "id": "p1"}
            await ws.send("not json")
            err = await recv_json(ws)
            assert err["type"] == "error" and err["code"] == "bad_command"
            await ws.send(json.dumps({"op": "sub", "ch": "bad name!"}))
            assert (await recv_json(ws))["message"] == "bad channel name"
            await ws.send(json.dumps({"op": "sub", "ch": "chat", "id": 3}))
            assert (await recv_json(ws))["message"] == "already subscribed"
            await ws.send(json.dumps({"op": "unsub", "ch": "nope"}))
            assert (await recv_json(ws))["message"] == "not subscribed"

    run(scenario())


def test_too_many_bad_commands_close_with_1008(server):
    async def scenario():
        async with websockets.connect(url(server)) as ws:
            for _ in range(10):
                await ws.send("{")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await recv_json(ws)
            assert closed.value.code == 1008

    run(scenario())


def test_oversize_message_closes_with_1009(make_server):
    server = make_server({"ws.max_message": "1k"})

    async def scenario():
        async with websockets.connect(url(server), compression=None) as ws:
            await ws.send(json.dumps({"op": "ping", "pad": "x" * 2000}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.code == 1009

    run(scenario())
    assert server.stats()["errors"]["message_too_big"] == 1


def test_binary_command_closes_with_1003(server):
    async def scenario():
        async with websockets.connect(url(server)) as ws:
            await ws.send(b"\x01\x02")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.code == 1003

    run(scenario())


# ---- raw frames, for what a well-behaved client library will not send ----

def raw_ws(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 ")
    return s, head.split(b"\r\n\r\n", 1)[1]


def frame(opcode, payload, mask=True, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    hdr = bytes([b0, (0x80 if mask else 0) | (n if n < 126 else 126)])
    if n >= 126:
        hdr += struct.pack("!H", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def close_code(s, rest=b""):
    data = rest
    while len(data) < 4:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data[0] == 0x88, data
    return struct.unpack("!H", data[2:4])[0]


def test_invalid_utf8_text_closes_with_1007(server):
    s, rest = raw_ws(server)
    s.sendall(frame(0x1, b'{"op":"ping","x":"\xc3\x28"}'))
    assert close_code(s, rest) == 1007


def test_unmasked_frame_closes_with_1002(server):
    s, rest = raw_ws(server)
    s.sendall(frame(0x1, b'{"op":"ping"}', mask=False))
    assert close_code(s, rest) == 1002


def test_fragmented_command_and_ping_between_fragments(server):
    s, rest = raw_ws(server)
    s.sendall(frame(0x1, b'{"op":"pi', fin=False) + frame(0x9, b"hb") +
              frame(0x0, b'ng","id":5}'))
    data = rest
    while data.count(b"pong") < 1 or len(data) < 4:
        data += s.recv(4096)
    assert data.startswith(b"\x8a\x02hb")                 # the pong to our ping, first
    assert b'{"type":"pong","id":5}' in data


def test_bad_upgrades_are_refused(server):
    conn = server.connect()
    r = conn.request("GET", "/ws")
    assert r.status == 426
    conn = server.connect()
    r = conn.request("GET", "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                           "Sec-WebSocket-Version": "13",
                                           "Sec-WebSocket-Key": "short"})
    assert r.status == 400


def test_connections_and_subscriptions_leave_nothing_behind(make_server):
    server = make_server(io_threads=2)
    base_fds = server.fd_count()

    async def scenario():
        conns = [await websockets.connect(url(server)) for _ in range(50)]
        for i, ws in enumerate(conns):
            await subscribe(ws, "ch%d" % (i % 5))
        for ws in conns[:25]:
            await ws.close()
        for ws in conns[25:]:
            ws.transport.abort()                             # vanish without a close frame

    run(scenario())
    server.wait_live(1)                                      # the /stats connection itself
    server.wait_fds(base_fds)


def test_permessage_deflate_on_and_off(server):
    big = {"text": "tidegate " * 1000}

    async def session(compression):
        async with websockets.connect(url(server), compression=compression) as ws:
            ext = ws.response_headers.get("Sec-WebSocket-Extensions")
            await subscribe(ws, "z")
            await ws.send(json.dumps({"op": "ping", "id": 1, "pad": "p" * 3000}))  # compressed in
            assert await recv_json(ws) == {"type": "pong", "id": 1}
            before = server.stats()["bytes_out"]
            publish(server, "z", big)
            publish(server, "z", {"small": 1})
            assert (await recv_json(ws))["data"] == big
            assert (await recv_json(ws))["data"] == {"small": 1}
            return ext, server.stats()["bytes_out"] - before

    ext, compressed = run(session("deflate"))
    assert "permessage-deflate" in ext
    assert "server_no_context_takeover" in ext and "client_no_context_takeover" in ext
    ext_off, plain = run(session(None))
    assert ext_off is None
    # The 9 KB message goes out in well under a tenth of its size when compressed
    # (the difference also includes one /stats response of similar size either way).
    assert plain - compressed > 8000, (plain, compressed)


def test_server_pings_idle_websockets_at_the_interval(make_server):
    server = make_server({"ws.ping_interval": "200ms"})
    s, rest = raw_ws(server)
    data = rest
    while len(data) < 2:
        data += s.recv(4096)
    assert data[0] == 0x89 and data[1] == 0x00               # a ping, from the server, unmasked
    s.sendall(frame(0xA, b""))                                # pong
    data = data[2:]
    while len(data) < 2:
        data += s.recv(4096)
    assert data[0] == 0x89                                   # and again at the next interval
