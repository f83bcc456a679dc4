"""The gate: backends behind tidegate (docs/backend-protocol.md).

Backends are separate processes built from the reference libraries
(tests/lib/testbackend.py on clients/python, the C examples); clients are
aiohttp, websockets and raw sockets. Every backend writes an exec log line per
job once its reply is written, which is how "never executed twice" is
checked."""

import asyncio
import collections
import json
import os
import socket
import struct
import time

import aiohttp
import pytest
import websockets

from backends import Backend, CBackend, wait_links
from tidegate import wait_for


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def req(srv, method, path, timeout=10.0, **kw):
    """One request on a fresh keep-alive connection."""
    headers = dict(kw.pop("headers", None) or {})
    body = kw.get("body", b"")
    if body:
        headers["Content-Length"] = str(len(body))
    return srv.connect().request(method, path, timeout=timeout * srv.slow, headers=headers,
                                 **kw)


def url(srv, path):
    return "http://127.0.0.1:%d%s" % (srv.port, path)


async def post_many(srv, path, n, concurrency=1000, on_done=None):
    """POSTs n distinct bodies concurrently; returns [(body, status, text, headers)]."""
    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    results = [None] * n
    done = 0

    async def one(session, i):
        nonlocal done
        body = ("job-%d" % i).encode()
        async with session.post(url(srv, path), data=body) as r:
            results[i] = (body, r.status, await r.read(), dict(r.headers))
        done += 1
        if on_done:
            on_done(done)

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        await asyncio.gather(*(one(s, i) for i in range(n)))
    return results


def exec_ids(backends):
    ids = collections.Counter()
    for b in backends:
        for e in b.executed():
            ids[e["id"]] += 1
    return ids


def check_replies(results, backends, killed=None, killed_capacity=0):
    """Every request got its own body back; no job ran twice; every answered
    job is in its backend's exec log, except possibly the last ones of a
    backend killed between writing a reply and logging it."""
    assert all(r[1] == 200 for r in results), [r[:3] for r in results if r[1] != 200][:5]
    assert all(r[2] == r[0] for r in results)
    ids = exec_ids(backends)
    twice = [i for i, n in ids.items() if n > 1]
    assert twice == [], "jobs executed twice: %s" % twice[:10]
    answered = {int(r[3]["x-job"]): r[3]["x-backend"] for r in results}
    assert len(answered) == len(results)            # one job per request
    unlogged = [i for i in answered if i not in ids]
    assert all(answered[i] == killed for i in unlogged), unlogged[:10]
    assert len(unlogged) <= killed_capacity


def test_http_request_becomes_a_job_and_the_reply_the_response(make_server):
    srv = make_server()
    b = Backend(srv, "echo", "e1").start()
    r = req(srv, "POST", "/api/echo/some/path?q=1", body=b"hello",
                    headers={"Content-Type": "text/plain"})
    assert r.status == 200
    assert r.body == b"hello"
    assert r.header("x-backend") == "e1"
    assert r.header("content-type") == "application/octet-stream"   # the backend set none
    (e,) = b.executed()
    assert e["route"] == "echo" and e["attempt"] == 1
    st = srv.stats()["gate"]
    assert st["jobs"] == 1 and st["replies"] == 1 and st["links"] == 1
    b.stop()


def test_unknown_route_is_404_and_a_route_without_backend_503_after_its_window(make_server):
    srv = make_server({"route.orders.http": "/orders/", "route.orders.window": "300ms"})
    r = req(srv, "GET", "/api/nobody/x")
    assert r.status == 404
    assert json.loads(r.body)["error"] == "no_such_route"
    t0 = time.monotonic()
    r = req(srv, "GET", "/orders/1")
    assert r.status == 503
    assert r.header("retry-after") == "1"
    assert json.loads(r.body)["error"] == "no_backend"
    assert time.monotonic() - t0 >= 0.25
    assert srv.stats()["gate"]["no_backend"] == 1


def test_kill_9_one_of_three_backends_mid_way(make_server):
    """1,000 requests in flight across 3 backends; one is kill -9'ed: every
    request gets exactly one correct reply, no job runs twice."""
    srv = make_server({"route.work.http": "/work/"})
    bs = [Backend(srv, "work", "w%d" % i, capacity=16, workers=16, delay_ms=20).start()
          for i in range(3)]
    killed = []

    def on_done(n):
        if n == 300 and not killed:
            bs[1].kill()
            killed.append(bs[1].name)

    results = run(post_many(srv, "/work/x", 1000, on_done=on_done))
    assert killed
    check_replies(results, bs, killed="w1", killed_capacity=16)
    assert not any(r[3]["x-backend"] == "w1" and int(r[3]["x-attempt"]) > 1 for r in results)
    st = srv.stats()["gate"]
    assert st["resubmitted"] > 0                        # w1 held jobs when it died
    assert st["replies"] == 1000 and st["deadline"] == 0
    for b in bs:
        b.stop()


def test_only_backend_killed_and_back_2_s_later(make_server):
    srv = make_server({"route.work.http": "/work/"})
    b = Backend(srv, "work", "only", capacity=8, workers=8, delay_ms=10).start()
    first = []

    async def scenario():
        task = asyncio.ensure_future(post_many(srv, "/work/x", 200, on_done=on_done))
        await task
        return task.result()

    def on_done(n):
        if n == 50 and not first:
            first.append(1)
            b.kill()
            # The scenario: the backend is gone for 2 s, then a new process
            # (its memory lost) takes its place.
            loop = asyncio.get_event_loop()
            loop.call_later(2.0, lambda: b2.start(wait=False))

    b2 = Backend(srv, "work", "only-again", capacity=8, workers=8, delay_ms=10)
    results = run(scenario())
    check_replies(results, [b, b2], killed="only", killed_capacity=8)
    assert srv.stats()["gate"]["resubmitted"] > 0
    b2.stop()


def test_rolling_restart_with_drain_loses_nothing(make_server):
    """3 backends restarted one by one with DRAIN while a client sends 100
    requests/s for 30 s: no error, no job twice."""
    srv = make_server({"route.roll.http": "/roll/"})
    names = iter("r%d" % i for i in range(100))
    live = [Backend(srv, "roll", next(names), capacity=16, workers=8, delay_ms=5,
                    drain_on_term=True).start() for _ in range(3)]
    every = list(live)
    results = []
    restarts = []

    async def client():
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def one(i):
                body = ("roll-%d" % i).encode()
                async with s.post(url(srv, "/roll/x"), data=body) as r:
                    results.append((body, r.status, await r.read(), dict(r.headers)))
            tasks = []
            t0 = time.monotonic()
            for i in range(3000):                     # 100/s for 30 s
                tasks.append(asyncio.ensure_future(one(i)))
                await asyncio.sleep(max(0, t0 + (i + 1) / 100 - time.monotonic()))
            await asyncio.gather(*tasks)

    async def restarter():
        await asyncio.sleep(3)
        for k in range(3):
            old = live[k]
            code = await asyncio.get_event_loop().run_in_executor(None, old.term)
            assert code == 0, old.stderr()
            new = Backend(srv, "roll", next(names), capacity=16, workers=8, delay_ms=5,
                          drain_on_term=True)
            await asyncio.get_event_loop().run_in_executor(None, new.start)
            live[k] = new
            every.append(new)
            restarts.append(time.monotonic())
            await asyncio.sleep(6)

    async def both():
        await asyncio.gather(client(), restarter())

    run(both(), timeout=120)
    assert len(restarts) == 3
    assert len(results) == 3000
    check_replies(results, every)
    assert srv.stats()["gate"]["no_backend"] == 0
    for b in live:
        b.stop()


def test_by_key_jobs_run_one_after_another_in_arrival_order(make_server):
    """200 calls with the same key over 4 backends never overlap and run in the
    order they arrived; calls with other keys run alongside."""
    srv = make_server({"route.seq.policy": "by-key", "route.seq.key": "field:k"})
    bs = [Backend(srv, "seq", "k%d" % i, capacity=32, workers=32, delay_ms=3).start()
          for i in range(4)]

    async def calls(key_of, n):
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port,
                                      max_queue=None) as ws:
            for i in range(n):
                await ws.send(json.dumps({"op": "call", "route": "seq", "id": i,
                                          "data": {"k": key_of(i), "n": i}}))
            got = {}
            while len(got) < n:
                m = json.loads(await ws.recv())
                assert m["type"] == "reply", m
                got[m["id"]] = m
            return got

    async def both():
        return await asyncio.gather(calls(lambda i: "A", 200),
                                    calls(lambda i: "B%d" % (i % 10), 200))

    a, others = run(both())
    assert all(a[i]["data"] == {"k": "A", "n": i} for i in range(200))
    runs = [e for b in bs for e in b.executed()]
    key_a = sorted((e for e in runs if e["key"] == '"A"'), key=lambda e: e["start"])
    assert len(key_a) == 200
    for x, y in zip(key_a, key_a[1:]):
        assert x["end"] <= y["start"], "two jobs of key A overlapped"
        assert x["id"] < y["id"], "key A's jobs ran out of arrival order"
    assert len({e["name"] for e in runs}) > 1            # the group shared the work
    key_b = [e for e in runs if e["key"].startswith('"B')]
    overlapping = sum(1 for e in key_b for x in key_a if e["start"] < x["end"] and x["start"] < e["end"])
    assert overlapping > 0                             # other keys ran alongside
    for b in bs:
        b.stop()


def test_deadline_gives_504_and_a_late_reply_is_counted(make_server):
    srv = make_server({"route.slow.http": "/slow/", "route.slow.deadline": "300ms"})
    b = Backend(srv, "slow", "late", delay_ms=1000).start()
    t0 = time.monotonic()
    r = req(srv, "GET", "/slow/x")
    took = time.monotonic() - t0
    assert r.status == 504
    assert json.loads(r.body)["error"] == "deadline"
    assert took < 1.0                                  # at the deadline, not the reply
    wait_for(lambda: srv.stats()["gate"]["late"] == 1, 10 * srv.slow, what="a late reply")
    st = srv.stats()["gate"]
    assert st["deadline"] == 1 and st["replies"] == 0 and st["inflight"] == 0
    b.stop()


def test_silent_backend_never_answers_504(make_server):
    srv = make_server({"route.mute.http": "/mute/", "route.mute.deadline": "200ms"})
    b = Backend(srv, "mute", "mute", mode="silent").start()
    r = req(srv, "GET", "/mute/x")
    assert r.status == 504
    b.stop()


@pytest.mark.parametrize("mode", ["garbage", "oversize", "unknown-id"])
def test_misbehaving_backend_is_cut_and_its_jobs_go_elsewhere(make_server, mode):
    srv = make_server({"route.mix.http": "/mix/"})
    good = Backend(srv, "mix", "good", capacity=64, workers=8).start()
    bad = Backend(srv, "mix", "bad-" + mode, mode=mode, capacity=64)
    # garbage and oversize break the link right after HELLO, and exit then
    bad.start(wait=(mode == "unknown-id"))
    results = run(post_many(srv, "/mix/x", 40))
    assert all(r[1] == 200 and r[2] == r[0] for r in results)
    assert all(r[3]["x-backend"] == "good" for r in results)
    wait_for(lambda: srv.stats()["gate"]["violations"] >= 1, 10 * srv.slow,
             what="the violation to be counted")
    if mode != "unknown-id":
        assert bad.wait_exit() == 0                    # its link was closed
    assert "broke the protocol" in srv.log_text()
    r = req(srv, "POST", "/mix/after", body=b"still")
    assert r.status == 200 and r.body == b"still"
    good.stop()
    bad.stop()


def test_done_below_keeps_the_python_backends_memory_bounded(make_server):
    """100,000 jobs through the Python backend: its table of remembered
    replies stays bounded (DONE_BELOW), instead of growing to 100,000."""
    srv = make_server({"gate.ping_interval": "1h"})   # only DONE_BELOW steps, no ping
    b = Backend(srv, "bulk", "bulk", capacity=256, workers=4).start()
    n_conns, per_conn = 8, 12500

    async def caller():
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port,
                                      max_queue=None) as ws:
            window = asyncio.Semaphore(256)          # calls in flight per connection

            async def sender():
                for i in range(per_conn):
                    await window.acquire()
                    await ws.send('{"op":"call","route":"bulk","id":%d,"data":%d}' % (i, i))
            t = asyncio.ensure_future(sender())
            got = 0
            while got < per_conn:
                m = json.loads(await ws.recv())
                assert m["type"] == "reply", m
                got += 1
                window.release()
            await t
            return got

    async def all_callers():
        return await asyncio.gather(*(caller() for _ in range(n_conns)))

    assert sum(run(all_callers(), timeout=600)) == 100000
    st = b.stats()
    assert st["runs"] == 100000 and st["repeats"] == 0
    assert st["remembered"] <= 1024 + 256 + 64, st
    b.stop()


def test_websocket_and_tcp_frame_clients_call_and_get_replies_by_id(make_server):
    srv = make_server({"frames.listen": "127.0.0.1:0"})
    b = Backend(srv, "echo", "e").start()

    async def ws_call():
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            await ws.send(json.dumps({"op": "call", "route": "echo", "id": "a1",
                                      "data": {"x": [1, 2]}}))
            await ws.send(json.dumps({"op": "call", "route": "nobody", "id": 2, "data": 1}))
            got = {}
            while len(got) < 2:
                m = json.loads(await ws.recv())
                got[m["id"]] = m
            return got

    got = run(ws_call())
    assert got["a1"] == {"type": "reply", "id": "a1", "status": 200, "data": {"x": [1, 2]}}
    assert got[2]["type"] == "error" and got[2]["code"] == "no_such_route"

    port = int(__import__("re").search(rb"TCP frames listening on 127\.0\.0\.1:(\d+)",
                                       srv.log_bytes()).group(1))
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"op": "call", "route": "echo", "id": 9, "data": "hi"}).encode()
    s.sendall(struct.pack(">IB", len(body) + 1, 1) + body)
    head = b""
    while len(head) < 5:
        head += s.recv(5 - len(head))
    n, typ = struct.unpack(">IB", head)
    payload = b""
    while len(payload) < n - 1:
        payload += s.recv(n - 1 - len(payload))
    assert typ == 1
    assert json.loads(payload) == {"type": "reply", "id": 9, "status": 200, "data": "hi"}
    s.close()
    b.stop()


def test_chat_backend_pushes_to_a_connection_and_a_channel(make_server):
    """examples/chat.py: join subscribes the caller to a room (SUBSCRIBE), say
    publishes to it (PUSH to a channel), whisper reaches one connection
    (PUSH to a conn)."""
    srv = make_server()
    chat = Backend(srv, "chat", "chat")
    chat.command = lambda: ["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..", "..",
                                                              "examples", "chat.py"),
                            "--connect", "127.0.0.1:%d" % srv.backend_port]
    chat.start(wait=False)
    wait_for(lambda: srv.stats()["gate"]["links"] == 1, 10 * srv.slow, what="chat backend")

    async def scenario():
        u = "ws://127.0.0.1:%d/ws" % srv.port
        async with websockets.connect(u) as alice, websockets.connect(u) as bob:
            stash = {alice: [], bob: []}                # messages read while awaiting others

            async def take(ws, match):
                for m in stash[ws]:
                    if match(m):
                        stash[ws].remove(m)
                        return m
                while True:
                    m = json.loads(await ws.recv())
                    if match(m):
                        return m
                    stash[ws].append(m)

            async def call(ws, i, data):
                await ws.send(json.dumps({"op": "call", "route": "chat", "id": i, "data": data}))
                return await take(ws, lambda m: m.get("id") == i and m["type"] in ("reply", "error"))

            async def next_of(ws, kind):
                return await take(ws, lambda m: m["type"] == kind)

            r = await call(alice, 1, {"op": "join", "room": "lobby"})
            assert r["type"] == "reply" and r["status"] == 200, r
            await next_of(alice, "sub")
            r = await call(bob, 1, {"op": "join", "room": "lobby"})
            await next_of(bob, "sub")
            r = await call(alice, 2, {"op": "say", "room": "lobby", "text": "hi all"})
            assert r["status"] == 200
            heard = []
            for ws in (alice, bob):
                m = await next_of(ws, "msg")
                assert m["ch"] == "room.lobby" and m["data"]["text"] == "hi all"
                heard.append(m["data"]["from"])
            assert heard[0] == heard[1]                 # alice's connection id
            r = await call(bob, 3, {"op": "whisper", "to": heard[0], "text": "psst"})
            assert r["status"] == 200
            m = await next_of(alice, "push")
            assert m["data"]["whisper"] == "psst"
            r = await call(bob, 4, {"op": "whisper", "to": 12345, "text": "nobody"})
            assert r["status"] == 200                    # a gone target is dropped, counted

            # Users: two connections log in as ann; a PUSH to ann reaches both.
            async with websockets.connect(u) as ann2:
                stash[ann2] = []
                for ws in (alice, ann2):
                    r = await call(ws, 5, {"op": "login", "user": "ann"})
                    assert r["data"] == {"ok": True, "user": "ann"}
                r = await call(bob, 6, {"op": "dm", "to_user": "ann", "text": "hello ann"})
                assert r["status"] == 200
                for ws in (alice, ann2):
                    m = await next_of(ws, "push")
                    assert m["data"]["dm"] == "hello ann"
                # the caller's user travels with its jobs
                r = await call(ann2, 7, {"op": "say", "room": "lobby", "text": "it's me"})
                m = await next_of(alice, "msg")
                assert m["data"]["from"] == "ann"

    run(scenario())
    chat.stop()


def test_gate_dials_configured_backends_and_redials_when_they_drop(make_server):
    """gate.backends: tidegate connects out to a backend that listens (the
    name resolved without blocking, by c-ares) and dials again, with backoff,
    after the link drops."""
    srv = make_server(start=False, backend_listen="")
    b = Backend(srv, "echo", "dialed", listen="127.0.0.1:0").start(wait=False)
    port = b.listening_port()
    srv.config["gate.backends"] = "localhost:%d" % port
    srv.start()
    assert srv.backend_port is None                     # no listener: dialing only
    b.wait_ready()
    r = req(srv, "POST", "/api/echo/x", body=b"via dial")
    assert r.status == 200 and r.body == b"via dial"
    # The backend process dies; a new one listens on the same port: tidegate
    # finds it by dialing again.
    os.unlink(b.ready_file)
    b.kill()
    b2 = Backend(srv, "echo", "dialed-again", listen="127.0.0.1:%d" % port).start()
    r = req(srv, "POST", "/api/echo/y", body=b"via dial again")
    assert r.status == 200 and r.body == b"via dial again"
    assert r.header("x-backend") == "dialed-again"
    assert srv.stats()["gate"]["links_total"] == 2


def test_full_queue_answers_503_with_retry_after(make_server):
    """A route whose backends are all busy queues up to its limit, then
    refuses at once with 503 and Retry-After."""
    srv = make_server({"route.busy.http": "/busy/", "route.busy.queue": "5"})
    b = Backend(srv, "busy", "one", capacity=1, workers=1, delay_ms=200).start()
    results = run(post_many(srv, "/busy/x", 20))
    ok = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 503]
    assert len(ok) + len(refused) == 20
    assert 6 <= len(ok) <= 7          # one in flight, five queued (and one freed meanwhile)
    assert all(r[3]["Retry-After"] == "1" and json.loads(r[2])["error"] == "overloaded"
               for r in refused)
    assert srv.stats()["gate"]["overloaded"] == len(refused)
    b.stop()


def test_backend_kicks_a_connection(make_server):
    srv = make_server()
    Backend(srv, "door", "door", mode="kick").start()

    async def scenario():
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            await ws.send(json.dumps({"op": "call", "route": "door", "id": 1, "data": {}}))
            m = json.loads(await ws.recv())
            assert m["type"] == "reply" and m["id"] == 1
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return e.value

    closed = run(scenario())
    assert closed.rcvd.code == 4000
    assert closed.rcvd.reason == "bye from door"
    assert srv.stats()["closes"]["kicked"] == 1


def test_c_backend_over_lz4_frames(make_server):
    """The C library announces lz4: large JOB and REPLY bodies travel
    compressed both ways and come out whole."""
    srv = make_server()
    c = CBackend(srv, "echo", ["--routes", "big", "--quiet"]).start()
    wait_for(lambda: srv.stats()["gate"]["links"] == 1, 10 * srv.slow, what="the C backend")
    body = (b"tidegate compresses this " * 4000)[:100000]
    r = req(srv, "POST", "/api/big/x", body=body, headers={"Content-Type": "text/plain"})
    assert r.status == 200 and r.body == body
    assert r.header("content-type") == "text/plain"

    async def call():
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            data = {"text": "x" * 5000, "n": list(range(500))}
            await ws.send(json.dumps({"op": "call", "route": "big", "id": 1, "data": data}))
            m = json.loads(await ws.recv())
            assert m == {"type": "reply", "id": 1, "status": 200, "data": data}

    run(call())
    st = srv.stats()["gate"]
    assert st["lz4_out"] == 2 and st["lz4_in"] == 2   # both JOBs, both REPLYs
    assert c.stop() == 0
