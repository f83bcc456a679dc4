"""Scatter/gather routes (docs/configuration.md "Routes", docs/backend-protocol.md):
one job to every backend of a group, or one slice of the request's JSON array
to each, the replies reduced into one answer. Backends are
tests/lib/testbackend.py processes in mode "parts"."""

import asyncio
import json

import aiohttp
import websockets

from backends import Backend, wait_links
from tidegate import run_binary, wait_for


def url(srv, path):
    return "http://127.0.0.1:%d%s" % (srv.port, path)


def fetch(srv, method, path, body=None, timeout=30):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.request(method, url(srv, path), data=body,
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                return r.status, r.headers.get("content-type"), await r.read()
    return asyncio.run(go())


def start_parts(srv, routes, names, **kw):
    """Backends in mode "parts", started and linked (on top of those there)."""
    before = srv.stats()["gate"]["links"]
    bs = [Backend(srv, routes, n, mode="parts", **kw).start() for n in names]
    wait_links(srv, before + len(bs))
    return bs


SCATTER = {"route.fan.http": "/fan/", "route.fan.mode": "scatter",
           "route.fanobj.http": "/fanobj/", "route.fanobj.mode": "scatter",
           "route.fanobj.reduce": "merge"}


def test_every_backend_gets_one_part_and_the_replies_are_concatenated_or_merged(make_server):
    srv = make_server(SCATTER)
    start_parts(srv, "fan,fanobj", ["a", "b", "c"])
    status, ctype, body = fetch(srv, "GET", "/fan/array")
    assert status == 200 and ctype == "application/json"
    r = json.loads(body)
    assert r["parts"] == 3 and r["partial"] is False and "missing" not in r
    assert sorted(r["result"]) == ["a", "b", "c"]           # one part each

    status, _, body = fetch(srv, "GET", "/fanobj/object")
    r = json.loads(body)
    assert status == 200 and r["partial"] is False
    assert sorted(r["result"]) == ["a", "b", "c"]
    assert sorted(r["result"].values()) == [0, 1, 2]         # parts numbered from 0
    st = srv.stats()["gate"]
    assert st["scatters"] == 2 and st["parts"] == 6 and st["partial"] == 0


def test_a_call_over_websocket_gets_the_reduced_reply(make_server):
    srv = make_server(SCATTER)
    start_parts(srv, "fan,fanobj", ["a", "b"])

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            await ws.send(json.dumps({"op": "call", "route": "fan", "data": [1, 2], "id": 5}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if m.get("type") in ("reply", "error"):
                    return m
    m = asyncio.run(go())
    assert m["id"] == 5 and m["status"] == 200
    # No split: every backend got the whole array and doubled it.
    assert m["data"]["result"] == [2, 4, 2, 4] and m["data"]["partial"] is False


def test_split_sends_one_slice_per_part_and_keeps_the_order(make_server):
    srv = make_server({"route.dbl.http": "/dbl/", "route.dbl.mode": "scatter",
                       "route.dbl.split": "4"})
    bs = start_parts(srv, "dbl", ["a", "b"])
    status, _, body = fetch(srv, "POST", "/dbl/", json.dumps(list(range(1, 11))).encode())
    r = json.loads(body)
    assert status == 200 and r["parts"] == 4 and r["partial"] is False
    assert r["result"] == [2 * i for i in range(1, 11)]
    assert sum(len(b.executed()) for b in bs) == 4
    # Fewer elements than parts: a part per element.
    r = json.loads(fetch(srv, "POST", "/dbl/", b"[7, 8]")[2])
    assert r["parts"] == 2 and r["result"] == [14, 16]
    # Not an array: refused before any backend sees it.
    status, _, body = fetch(srv, "POST", "/dbl/", b'{"a": 1}')
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    assert sum(len(b.executed()) for b in bs) == 6


def test_a_reducer_route_receives_every_part(make_server):
    srv = make_server({"route.sum.http": "/sum/", "route.sum.mode": "scatter",
                       "route.sum.split": "3", "route.sum.reduce": "adder"})
    start_parts(srv, "sum,adder", ["a", "b"])
    status, _, body = fetch(srv, "POST", "/sum/", json.dumps(list(range(1, 101))).encode())
    assert status == 200
    assert json.loads(body) == {"parts": 3, "missing": [], "sum": 2 * 5050}


def test_a_part_past_the_deadline_makes_a_partial_reply_that_names_it(make_server):
    srv = make_server({"route.fan.http": "/fan/", "route.fan.mode": "scatter",
                       "route.fan.deadline": "1s"})
    start_parts(srv, "fan", ["a", "b"])
    start_parts(srv, "fan", ["slow"], delay_ms=4000)
    status, _, body = fetch(srv, "GET", "/fan/array")
    r = json.loads(body)
    assert status == 200 and r["parts"] == 3 and r["partial"] is True
    assert sorted(r["result"]) == ["a", "b"]
    (missing,) = r["missing"]
    assert r["errors"] == {str(missing): {"status": 504, "error": "deadline"}}
    st = srv.stats()["gate"]
    assert st["partial"] == 1 and st["deadline"] == 1


def test_a_part_whose_backend_is_killed_is_resubmitted_and_the_reply_is_whole(make_server):
    srv = make_server({"route.dbl.http": "/dbl/", "route.dbl.mode": "scatter",
                       "route.dbl.split": "3", "route.dbl.deadline": "20s"})
    start_parts(srv, "dbl", ["a", "b"])
    (victim,) = start_parts(srv, "dbl", ["victim"], delay_ms=10000)

    async def go():
        async with aiohttp.ClientSession() as s:
            pending = asyncio.ensure_future(
                s.post(url(srv, "/dbl/"), data=json.dumps(list(range(30))).encode(),
                       timeout=aiohttp.ClientTimeout(total=30)))
            # The fast parts are answered; the victim holds the third.
            await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(
                lambda: srv.stats()["gate"]["replies"] == 2
                and srv.stats()["gate"]["inflight"] == 1, 15, what="the victim's part"))
            victim.kill()
            r = await pending
            return r.status, await r.read()
    status, body = asyncio.run(go())
    r = json.loads(body)
    assert status == 200 and r["partial"] is False
    assert r["result"] == [2 * i for i in range(30)]
    st = srv.stats()["gate"]
    assert st["resubmitted"] == 1 and st["parts"] == 3 and st["replies"] == 3


def test_no_backend_is_503_and_bad_config_is_refused(make_server, tmp_path):
    srv = make_server({"route.fan.http": "/fan/", "route.fan.mode": "scatter",
                       "route.fan.window": "100ms"})
    wait_for(lambda: fetch(srv, "GET", "/fan/array")[0] == 503, 10, what="the window to close")
    for key, value in (("mode", "fanout"), ("split", "65"), ("reduce", "sum up")):
        path = tmp_path / ("bad-%s.conf" % key)
        path.write_text("route.x.%s = %s\n" % (key, value))
        code, _, err = run_binary(["--config", str(path), "--listen", "127.0.0.1:0"])
        assert code == 2 and "route.x.%s" % key in err, err
