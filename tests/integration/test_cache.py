"""The gate's reply cache (docs/configuration.md, route.NAME.cache): hits,
single flights, TTLs from the route and the reply, private routes, bypass,
the byte cap, and the admin purge.

Backends are tests/lib/testbackend.py processes in "cache" mode (each reply
names the job that made it, and its exec log lists every job run) or the C
echo example where speed matters. Expiry is awaited by re-asking until the
gate says "X-Cache: miss", never by a fixed sleep."""

import asyncio
import json
import os
import socket
import time

import aiohttp
import websockets

from backends import Backend, CBackend, wait_links
from tidegate import wait_for


def run(coro, timeout=180):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def get(srv, path, headers=None, method="GET", body=b""):
    """One request on a fresh keep-alive connection."""
    hdrs = dict(headers or {})
    if body:
        hdrs["Content-Length"] = str(len(body))
    return srv.connect().request(method, path, timeout=10.0 * srv.slow, headers=hdrs, body=body)


def job_of(resp):
    assert resp.status < 500 or resp.header("x-job"), resp
    return int(resp.header("x-job"))


def runs(backend, n):
    """Jobs the backend ran, once it has logged at least <n> (a job is logged
    just after its reply is written, so a reply can come first)."""
    wait_for(lambda: len(backend.executed()) >= n, 10 * backend.srv.slow,
             what="%d jobs in %s's log" % (n, backend.name))
    return len(backend.executed())


def cache_stats(srv):
    return srv.stats()["gate"]["cache"]


def url(srv, path):
    return "http://127.0.0.1:%d%s" % (srv.port, path)


async def get_many(srv, path, n, concurrency, headers=None):
    """n concurrent GETs of path: [(status, headers, body)]."""
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        async def one(_):
            async with s.get(url(srv, path), headers=headers) as r:
                return r.status, dict(r.headers), await r.read()
        return await asyncio.gather(*(one(i) for i in range(n)))


def cache_server(make_server, **routes):
    """A server with route c (HTTP /c/, call c) and a cache-mode backend."""
    cfg = {"route.c.http": "/c/", "route.c.cache": "10s"}
    cfg.update({k.replace("__", "."): v for k, v in routes.items()})
    srv = make_server(cfg)
    return srv


def test_a_thousand_identical_requests_make_one_job(make_server):
    srv = cache_server(make_server)
    b = Backend(srv, "c", "c1", mode="cache").start()
    res = run(get_many(srv, "/c/item?x=1&y=2", 1000, concurrency=50))
    assert all(st == 200 for st, _, _ in res), [r[:2] for r in res if r[0] != 200][:3]
    jobs = {json.loads(body)["job"] for _, _, body in res}
    assert len(jobs) == 1
    assert runs(b, 1) == 1                                  # the backend's own log
    assert sum(1 for _, h, _ in res if h["X-Cache"] == "miss") == 1
    st = srv.stats()["gate"]
    assert st["replies"] == 1
    c = st["cache"]
    assert c["misses"] == 1 and c["hits"] + c["coalesced"] == 999
    assert c["stored"] == 1 and c["entries"] == 1 and 0 < c["bytes"] < 4096
    # The same parameters in another order are the same request.
    r = get(srv, "/c/item?y=2&x=1")
    assert r.header("x-cache") == "hit" and job_of(r) in jobs and r.header("age") is not None
    m = srv.metrics()
    assert m[("tidegate_gate_cache_hits_total", ())] == c["hits"] + 1
    assert m[("tidegate_gate_cache_entries", ())] == 1
    assert runs(b, 1) == 1


def test_after_the_ttl_a_second_job(make_server):
    srv = cache_server(make_server, route__c__cache="300ms")
    b = Backend(srv, "c", "c1", mode="cache").start()
    t0 = time.monotonic()
    first = get(srv, "/c/t")
    assert first.header("x-cache") == "miss"
    again = get(srv, "/c/t")
    assert again.header("x-cache") == "hit" and job_of(again) == job_of(first)
    fresh = wait_for(lambda: (lambda r: r if r.header("x-cache") == "miss" else None)(
        get(srv, "/c/t")), 10 * srv.slow, interval=0.05, what="the entry to expire")
    assert time.monotonic() - t0 >= 0.3
    assert job_of(fresh) != job_of(first)
    assert runs(b, 2) == 2
    assert cache_stats(srv)["expirations"] >= 1


def test_concurrent_identical_misses_share_one_slow_job(make_server):
    srv = cache_server(make_server)
    b = Backend(srv, "c", "c1", mode="cache", delay_ms=500).start()
    res = run(get_many(srv, "/c/slow?q=1", 200, concurrency=200))
    assert all(st == 200 for st, _, _ in res)
    bodies = {body for _, _, body in res}
    assert len(bodies) == 1 and json.loads(bodies.pop())["path"] == "/slow"
    assert runs(b, 1) == 1
    c = cache_stats(srv)
    assert c["misses"] == 1 and c["hits"] + c["coalesced"] == 199
    assert c["coalesced"] > 0


def test_a_failed_flight_fails_its_waiters_too(make_server):
    """The leader's deadline passes: every waiter gets the same 504 (the
    backend ran the job once, and it is not cached afterwards)."""
    srv = cache_server(make_server, route__c__deadline="400ms")
    b = Backend(srv, "c", "c1", mode="cache", delay_ms=1500).start()
    res = run(get_many(srv, "/c/late", 20, concurrency=20))
    assert [st for st, _, _ in res] == [504] * 20
    assert all(json.loads(body)["error"] == "deadline" for _, _, body in res)
    st = srv.stats()["gate"]
    assert st["cache"]["misses"] == 1 and st["cache"]["coalesced"] + st["cache"]["hits"] == 19
    assert runs(b, 1) == 1
    srv.wait_stats(lambda s: s["gate"]["late"] == 1, what="the late reply")
    assert srv.stats()["gate"]["cache"]["entries"] == 0


def test_calls_use_the_cache_and_a_hit_is_just_the_reply(make_server):
    srv = cache_server(make_server, frames__listen="127.0.0.1:0")
    b = Backend(srv, "c", "c1", mode="cache").start()

    async def calls():
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            out = []
            for i, data in enumerate(({"q": 1}, {"q": 1}, {"q": 2}, {"q": 1})):
                await ws.send(json.dumps({"op": "call", "route": "c", "id": i, "data": data}))
                out.append(json.loads(await ws.recv()))
            return out

    a, b2, c, d = run(calls())
    assert a["type"] == "reply" and a["id"] == 0 and a["status"] == 200
    assert b2 == dict(a, id=1)                     # the same reply, the caller's own id
    assert d == dict(a, id=3)
    assert c["data"]["job"] != a["data"]["job"]
    assert runs(b, 2) == 2
    # The HTTP side of the route has its own entries: a call is no GET.
    assert get(srv, "/c/").header("x-cache") == "miss"


def test_private_routes_never_share_entries_between_users(make_server):
    srv = make_server({"route.p.http": "/p/", "route.p.cache": "10s", "route.p.private": True,
                       "route.login.call": "login"})
    b = Backend(srv, "p,login", "b", mode="cache").start()

    async def session(user):
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port) as ws:
            if user:
                await ws.send(json.dumps({"op": "call", "route": "login", "id": "in",
                                          "data": {"login": user}}))
                assert json.loads(await ws.recv())["status"] == 200
            jobs = []
            for i in range(2):
                await ws.send(json.dumps({"op": "call", "route": "p", "id": i,
                                          "data": {"what": "mine"}}))
                m = json.loads(await ws.recv())
                assert m["type"] == "reply" and m["data"]["user"] == user, m
                jobs.append(m["data"]["job"])
            return jobs

    async def all_users():
        return await asyncio.gather(session("ann"), session("bob"), session("ann"),
                                    session(None))

    ann, bob, ann2, anon = run(all_users())
    assert ann[0] == ann[1] and ann2 == ann        # ann's entry, on any of her connections
    assert bob[0] == bob[1] and bob[0] != ann[0]
    assert anon[0] != anon[1]                      # no user: not cached at all
    assert len({ann[0], bob[0], anon[0], anon[1]}) == 4
    # HTTP carries no user here: a private route's HTTP replies are never shared.
    r1, r2 = get(srv, "/p/x"), get(srv, "/p/x")
    assert job_of(r1) != job_of(r2) and r2.header("x-cache") == "miss"


def test_no_cache_bypasses_and_the_fresh_reply_replaces_the_entry(make_server):
    srv = cache_server(make_server)
    b = Backend(srv, "c", "c1", mode="cache").start()
    j1 = job_of(get(srv, "/c/n"))
    assert job_of(get(srv, "/c/n")) == j1
    fresh = get(srv, "/c/n", headers={"Cache-Control": "max-age=0, no-cache"})
    assert fresh.header("x-cache") == "miss" and job_of(fresh) != j1
    after = get(srv, "/c/n")
    assert after.header("x-cache") == "hit" and job_of(after) == job_of(fresh)
    assert runs(b, 2) == 2


def test_reply_cache_ttl_zero_is_not_cached_and_the_pair_overrides_the_route(make_server):
    srv = cache_server(make_server, route__c__cache="1h")
    b = Backend(srv, "c", "c1", mode="cache").start()
    r1, r2 = get(srv, "/c/z?ttl=0"), get(srv, "/c/z?ttl=0")
    assert job_of(r1) != job_of(r2) and r2.header("x-cache") == "miss"
    assert cache_stats(srv)["stored"] == 0
    # cache_ttl=300 (ms) on a 1 h route: it is gone well before the hour.
    first = job_of(get(srv, "/c/z?ttl=300"))
    assert job_of(get(srv, "/c/z?ttl=300")) == first
    wait_for(lambda: get(srv, "/c/z?ttl=300").header("x-cache") == "miss", 10 * srv.slow,
             interval=0.05, what="the reply's own TTL to pass")
    assert runs(b, 4) == 4


def test_errors_are_not_cached_unless_the_route_says_so(make_server):
    srv = make_server({"route.c.http": "/c/", "route.c.cache": "10s",
                       "route.e.http": "/e/", "route.e.cache": "10s", "route.e.cache_errors": True})
    b = Backend(srv, "c,e", "b", mode="cache").start()
    for path in ("/c/x?status=404", "/c/x?fail=1", "/c/x?status=500"):
        r1, r2 = get(srv, path), get(srv, path)
        assert r1.status == r2.status and r1.status >= 400
        assert r2.header("x-cache") == "miss"
    assert runs(b, 6) == 6
    for path in ("/e/x?status=404", "/e/x?fail=1"):
        r1, r2 = get(srv, path), get(srv, path)
        assert r1.status == r2.status and r2.header("x-cache") == "hit"
        assert r1.body == r2.body
    assert runs(b, 8) == 8
    # Other methods always reach a backend.
    p1, p2 = get(srv, "/c/x", method="POST", body=b"a"), get(srv, "/c/x", method="POST", body=b"a")
    assert job_of(p1) != job_of(p2) and p2.header("x-cache") == "miss"


def pipelined_gets(port, paths, conns=8, batch=200):
    """GETs of every path over <conns> keep-alive connections, <batch> in
    flight per connection; returns the count of 200 responses."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    ok = 0
    try:
        for start in range(0, len(paths), batch * conns):
            chunk = paths[start:start + batch * conns]
            parts = [chunk[i::conns] for i in range(conns)]
            for s, ps in zip(socks, parts):
                s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p.encode() for p in ps))
            for s, ps in zip(socks, parts):
                buf, got = b"", 0
                while got < len(ps):
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        data = s.recv(1 << 20)
                        assert data, "connection closed"
                        buf += data
                        continue
                    head = buf[:i].decode("latin-1")
                    n = int(head.lower().split("content-length:")[1].split("\r\n")[0])
                    if len(buf) < i + 4 + n:
                        buf += s.recv(1 << 20)
                        continue
                    ok += head.startswith("HTTP/1.1 200")
                    buf = buf[i + 4 + n:]
                    got += 1
    finally:
        for s in socks:
            s.close()
    return ok


def test_memory_stays_under_the_cap_with_100000_distinct_keys(make_server):
    cap = 1 << 20
    srv = make_server({"route.m.http": "/m/", "route.m.cache": "1h", "gate.cache_size": "1m"})
    CBackend(srv, "echo", ["--routes", "m", "--quiet"]).start()
    wait_links(srv, 1)
    assert pipelined_gets(srv.port, ["/m/k%d" % i for i in range(20000)]) == 20000
    rss_warm = srv.rss()
    assert pipelined_gets(srv.port, ["/m/k%d?more=%d" % (i, i) for i in range(80000)]) == 80000
    rss_end = srv.rss()
    c = cache_stats(srv)
    assert c["misses"] == 100000 and c["stored"] == 100000
    assert 0 < c["bytes"] <= cap
    assert c["evictions"] >= 100000 - c["entries"] - 1
    assert c["entries"] < 100000 // 10
    # Four times as many keys again cost no more memory than the cap and slack
    # (under ASan freed memory sits in its quarantine, up to 256 MiB: not ours).
    if not srv.asan:
        assert rss_end - rss_warm < 8 * cap, (rss_warm, rss_end)


def purge(srv, query, headers=None, source=None):
    hdrs = dict(headers or {})
    c = srv.connect(source=source)
    return c.request("POST", "/admin/cache/purge" + query, timeout=10.0 * srv.slow,
                     headers=hdrs)


def test_purge_by_prefix_and_by_route(make_server):
    srv = make_server({"route.c.http": "/api/orders/", "route.c.cache": "1h",
                       "route.d.http": "/api/carts/", "route.d.cache": "1h"})
    b = Backend(srv, "c,d", "b", mode="cache").start()
    paths = ["/api/orders/1", "/api/orders/12", "/api/orders/2", "/api/carts/1"]
    jobs = {p: job_of(get(srv, p)) for p in paths}
    assert all(get(srv, p).header("x-cache") == "hit" for p in paths)
    r = purge(srv, "?prefix=/api/orders/1")
    assert r.status == 200 and r.json() == {"purged": 2}
    assert get(srv, "/api/orders/12").header("x-cache") == "miss"
    assert get(srv, "/api/orders/2").header("x-cache") == "hit"
    r = purge(srv, "?prefix=%2Fapi%2F&route=d")          # percent-encoded, and one route
    assert r.json() == {"purged": 1}
    assert get(srv, "/api/carts/1").header("x-cache") == "miss"
    r = purge(srv, "?route=nobody")
    assert r.status == 404 and r.json()["error"] == "no_such_route"
    r = purge(srv, "")                                    # everything
    assert r.json() == {"purged": 3}
    assert srv.stats()["gate"]["cache"]["entries"] == 0
    assert srv.stats()["gate"]["cache"]["purged"] == 6
    assert srv.connect().request("GET", "/admin/cache/purge").status == 405
    assert runs(b, 6) == 6
    assert jobs


def test_admin_guard_wants_the_key_or_a_local_peer(make_server):
    open_srv = make_server()
    assert purge(open_srv, "").status == 200                    # from 127.0.0.1
    r = purge(open_srv, "", source="127.0.0.2")                 # loopback, but not 127.0.0.1
    assert r.status == 403 and r.json()["error"] == "forbidden"
    assert open_srv.connect(source="127.0.0.2").request("GET", "/admin/other").status == 403

    srv = make_server({"admin.key": "s3cret"})
    r = purge(srv, "")
    assert r.status == 401 and r.header("www-authenticate").startswith("Bearer")
    assert purge(srv, "", headers={"Authorization": "Bearer wrong!"}).status == 401
    assert purge(srv, "", headers={"Authorization": "Bearer s3cre"}).status == 401
    r = purge(srv, "", headers={"Authorization": "Bearer s3cret"}, source="127.0.0.2")
    assert r.status == 200 and r.json() == {"purged": 0}  # the key is enough from anywhere
    r = srv.connect().request("GET", "/admin/nothing", headers={"Authorization": "Bearer s3cret"})
    assert r.status == 404


def test_a_waiter_whose_client_leaves_costs_nothing_afterwards(make_server):
    srv = cache_server(make_server)
    b = Backend(srv, "c", "c1", mode="cache", delay_ms=1000).start()
    from tidegate import request
    leader = srv.connect()
    leader.sendall(request("GET", "/c/w"))
    srv.wait_stats(lambda s: s["gate"]["inflight"] == 1, what="the leader in flight")
    waiters = [srv.connect() for _ in range(10)]
    for w in waiters:
        w.sendall(request("GET", "/c/w"))
    srv.wait_stats(lambda s: s["gate"]["cache"]["coalesced"] == 10, what="10 waiters")
    for w in waiters[:6]:
        w.abort()
    r = leader.recv_response(timeout=10 * srv.slow)
    assert r.status == 200 and r.header("x-cache") == "miss"
    for w in waiters[6:]:
        got = w.recv_response(timeout=10 * srv.slow)
        assert got.status == 200 and got.body == r.body and got.header("x-cache") == "hit"
    st = srv.stats()["gate"]
    assert st["answers_dropped"] == 0               # the six gone waiters got no answer made
    assert st["replies"] == 1
    assert runs(b, 1) == 1
