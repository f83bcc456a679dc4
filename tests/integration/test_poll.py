"""Long-poll: GET /sub/{ch}?mode=poll&since=POS waits for what comes after POS,
answers with the batch and the next position, 204 with X-Position on timeout,
a gap when history no longer reaches back."""

import threading
from tidegate import publish


def poll(server, ch, since=None, conn=None, timeout=10):
    path = "/sub/%s?mode=poll" % ch + ("&since=" + since if since else "")
    c = conn or server.connect()
    r = c.request("GET", path, timeout=timeout)
    return r


def test_poll_returns_the_batch_after_since_at_once(server):
    positions = [publish(server, "p", {"i": i}) for i in range(5)]
    r = poll(server, "p", since=positions[1])
    assert r.status == 200
    body = r.json()
    assert [m["pos"] for m in body["messages"]] == positions[2:]
    assert [m["data"] for m in body["messages"]] == [{"i": 2}, {"i": 3}, {"i": 4}]
    assert body["next"] == positions[-1]


def test_poll_parks_until_a_message_comes(make_server):
    server = make_server(io_threads=2)
    p0 = publish(server, "wait", {"hello": 0})
    conn = server.connect()
    result = {}

    def waiter():
        result["r"] = poll(server, "wait", since=p0, conn=conn)

    t = threading.Thread(target=waiter)
    t.start()
    server.wait_stats(lambda s: s["push"]["subscribers"] == 1, what="the poll parked")
    assert t.is_alive()                                  # nothing after p0 yet
    p1 = publish(server, "wait", {"hello": 1})
    t.join(10)
    r = result["r"]
    assert r.status == 200
    assert [(m["pos"], m["data"]) for m in r.json()["messages"]] == [(p1, {"hello": 1})]
    # The same keep-alive connection polls on from "next": no loss, no repeat.
    later = publish(server, "wait", {"hello": 2})
    r2 = poll(server, "wait", since=r.json()["next"], conn=conn)
    assert [m["pos"] for m in r2.json()["messages"]] == [later]


def test_poll_times_out_with_204_and_the_position(make_server):
    server = make_server({"poll.timeout": "300ms"})
    last = publish(server, "quiet", 1)
    r = poll(server, "quiet", since=last)
    assert r.status == 204
    assert r.header("X-Position") == last
    assert r.header("Content-Length") is None and r.body == b""


def test_poll_past_history_is_a_gap(make_server):
    server = make_server({"push.history_len": "2"})
    positions = [publish(server, "h", i) for i in range(6)]
    epoch = positions[0].split(":")[0]
    r = poll(server, "h", since="%s:1" % epoch)
    body = r.json()
    assert body["messages"] == []
    assert body["gap"] == {"from": "%s:1" % epoch, "pos": positions[-1]}
    assert body["next"] == positions[-1]


def test_client_leaving_a_parked_poll_leaks_nothing(server):
    base = server.fd_count()
    c = server.connect()
    c.sendall(b"GET /sub/gone?mode=poll HTTP/1.1\r\nHost: t\r\n\r\n")
    server.wait_stats(lambda s: s["push"]["subscribers"] == 1, what="the poll parked")
    c.abort()
    server.wait_live(1)
    server.wait_fds(base)
    assert server.stats()["push"]["subscribers"] == 0


def test_bad_since_gets_400(server):
    assert poll(server, "x", since="nope").status == 400


def test_waiting_polls_keep_no_request_head(make_server):
    """A parked long-poll gives its request's head block back: 2,000 of them
    cost well under the 2 KiB block each would hold. The answer still comes
    gzipped to a client that asked for it."""
    import gzip
    import json
    import socket
    import tidegate
    server = make_server(io_threads=1)
    p0 = publish(server, "parked", {"i": 0})
    req = ("GET /sub/parked?mode=poll&since=%s HTTP/1.1\r\nHost: t\r\n"
           "Accept-Encoding: gzip\r\nX-Padding: %s\r\n\r\n" % (p0, "x" * 600)).encode()
    first = server.connect()
    first.sendall(req)
    server.wait_stats(lambda s: s["push"]["subscribers"] == 1, what="the first poll parked")
    rss0 = server.rss()
    socks = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(req)
        socks.append(s)
    server.wait_stats(lambda s: s["push"]["subscribers"] == 2001, what="2,001 polls parked")
    grown = server.rss() - rss0
    if not tidegate.is_asan(tidegate.binary_path()):
        assert grown / 2000 < 1500, "%d bytes per waiting poll" % (grown / 2000)
    publish(server, "parked", {"i": 1, "pad": "y" * 300})
    r = first.recv_response(timeout=10)
    assert r.status == 200 and r.header("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(r.body))["messages"][0]["data"]["i"] == 1
    for s in socks:
        s.close()
