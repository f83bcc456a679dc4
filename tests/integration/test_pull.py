"""The pull API (/channels/...), presence counts, and batch publishing."""

import asyncio
import json
import urllib.error
import urllib.request

import websockets


def call(server, method, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (server.port, path), data=data,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def publish(server, ch, body):
    status, raw = call(server, "POST", "/pub/" + ch, body)
    assert status == 202
    return json.loads(raw)["pos"]


def test_channel_info_counts_subscribers_of_every_transport(make_server):
    server = make_server(io_threads=2)
    last = [publish(server, "room", i) for i in range(3)][-1]

    async def scenario():
        conns = [await websockets.connect("ws://127.0.0.1:%d/sub/room" % server.port)
                 for _ in range(4)]
        for ws in conns:
            await ws.recv()
        sse = server.connect()
        sse.sendall(b"GET /sub/room HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        server.wait_stats(lambda s: s["push"]["subscribers"] == 5, what="5 subscribers")
        status, raw = call(server, "GET", "/channels/room")
        assert status == 200
        assert json.loads(raw) == {"ch": "room", "subscribers": 5, "last": last, "history": 3}
        # Presence in /stats and /metrics: the busiest channels.
        busiest = server.stats()["push"]["busiest_channels"]
        assert busiest[0] == {"ch": "room", "subscribers": 5}
        metrics = server.metrics()
        assert metrics[("tidegate_channel_subscribers", (("channel", "room"),))] == 5
        for ws in conns:
            await ws.close()
        sse.abort()
        server.wait_stats(lambda s: s["push"]["subscribers"] == 0, what="none left")
        assert json.loads(call(server, "GET", "/channels/room")[1])["subscribers"] == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_messages_since_and_limit_page_through_history(server):
    positions = [publish(server, "log", {"i": i}) for i in range(10)]
    got, since = [], None
    while True:
        q = "/channels/log/messages?limit=3" + ("&since=" + since if since else "")
        body = json.loads(call(server, "GET", q)[1])
        if since is None:                       # without since: the newest
            assert [m["pos"] for m in body["messages"]] == positions[-3:]
            since = positions[0].split(":")[0] + ":0"
            continue
        got += body["messages"]
        if not body["messages"]:
            break
        since = body["next"]
    assert [m["pos"] for m in got] == positions
    assert [m["data"] for m in got] == [{"i": i} for i in range(10)]


def test_messages_past_history_answer_a_gap(make_server):
    server = make_server({"push.history_len": "2"})
    positions = [publish(server, "short", i) for i in range(5)]
    body = json.loads(call(server, "GET", "/channels/short/messages?since=%s:1"
                           % positions[0].split(":")[0])[1])
    assert body["messages"] == [] and body["gap"]["pos"] == positions[-1]
    assert body["next"] == positions[-1]


def test_unknown_channel_and_bad_queries(server):
    assert call(server, "GET", "/channels/nothing")[0] == 404
    assert call(server, "GET", "/channels/nothing/messages")[0] == 404
    publish(server, "x", 1)
    assert call(server, "GET", "/channels/x/messages?limit=0")[0] == 400
    assert call(server, "GET", "/channels/x/messages?limit=5000")[0] == 400
    assert call(server, "GET", "/channels/x/messages?since=bad")[0] == 400
    assert call(server, "GET", "/channels/x/other")[0] == 404
    assert call(server, "POST", "/channels/x", b"")[0] == 405


def test_batch_publish_many_messages_and_many_channels(make_server):
    server = make_server(io_threads=2)
    status, raw = call(server, "POST", "/pub", {"messages": [{"ch": "a", "data": 1},
                                                             {"ch": "b", "data": {"x": 2}},
                                                             {"ch": "a", "data": "three"}]})
    assert status == 202
    res = json.loads(raw)["results"]
    assert [r["ch"] for r in res] == ["a", "b", "a"]
    assert int(res[2]["pos"].split(":")[1]) == int(res[0]["pos"].split(":")[1]) + 1
    status, raw = call(server, "POST", "/pub", {"channels": ["c", "d", "e"], "data": {"all": 1}})
    assert status == 202
    assert [r["ch"] for r in json.loads(raw)["results"]] == ["c", "d", "e"]
    body = json.loads(call(server, "GET", "/channels/a/messages")[1])
    assert [m["data"] for m in body["messages"]] == [1, "three"]
    assert json.loads(call(server, "GET", "/channels/e/messages")[1])["messages"][0]["data"] == {"all": 1}


def test_batch_publish_refuses_malformed_batches_whole(server):
    for body in (b"not json", {"messages": []}, {"messages": [{"ch": "ok", "data": 1},
                                                              {"ch": "bad name", "data": 2}]},
                 {"channels": ["a"]}, {"messages": [{"ch": "a"}]},
                 {"messages": [{"ch": "a", "data": 1}], "channels": ["b"], "data": 2}):
        assert call(server, "POST", "/pub", body)[0] == 400, body
    assert call(server, "GET", "/channels/ok")[0] == 404          # nothing was published
