"""/stats and /metrics report what the test did: connections, requests, bytes,
errors; the per-loop numbers add up to the totals and /metrics agrees with /stats."""

import re
import time

from tidegate import ERROR_KINDS, metric_sum, request, run_binary, wait_for

LOOP_FIELDS = ("live", "accepted", "closed", "bytes_in", "bytes_out", "requests")


def check_loops_add_up(st):
    assert len(st["loops"]) == st["io_threads"], st["loops"]
    assert sorted(l["id"] for l in st["loops"]) == list(range(st["io_threads"]))
    for field, total in (("live", st["connections"]["live"]),
                         ("accepted", st["connections"]["accepted"]),
                         ("closed", st["connections"]["closed"]),
                         ("bytes_in", st["bytes_in"]), ("bytes_out", st["bytes_out"]),
                         ("requests", st["requests"])):
        assert sum(l[field] for l in st["loops"]) == total, (field, st)
    c = st["connections"]
    assert c["live"] == c["accepted"] - c["closed"], c


def test_fresh_server_stats(make_server):
    srv = make_server(io_threads=2, workers=3)
    st = srv.stats()
    assert isinstance(st["version"], str) and st["version"]
    assert isinstance(st["uptime_ms"], int) and st["uptime_ms"] >= 0
    assert (st["io_threads"], st["workers"]) == (2, 3)
    assert st["connections"] == {"live": 1, "accepted": 1, "closed": 0}
    assert st["requests"] == 1
    assert st["bytes_out"] == 0
    assert st["bytes_in"] == srv.sent_bytes
    assert st["errors"] == {k: 0 for k in ERROR_KINDS}
    assert st["log_dropped"] == 0
    check_loops_add_up(st)


def test_counters_match_what_the_client_did(make_server):
    srv = make_server(io_threads=2)
    c1 = srv.connect()
    c1.sendall(request("GET", "/healthz") * 3 + request("GET", "/nope")
               + request("POST", "/healthz", headers={"Content-Length": 4}, body=b"abcd")
               + request("HEAD", "/healthz"))
    assert [c1.recv_response(head=(i == 5)).status for i in range(6)] == [200, 200, 200, 404, 405, 200]
    c2 = srv.connect()
    assert c2.request("GET", "/healthz").status == 200

    # Loops count on their own threads: a count may trail the bytes the client
    # already has by a moment, so poll until /stats agrees with the client.
    calls = srv.stats_calls
    seen = []

    def agrees():
        received_before = srv.received_bytes
        st = srv.stats(conn=c1)
        seen.append((st["bytes_out"], received_before, st["bytes_in"], srv.sent_bytes))
        polls = srv.stats_calls - calls
        ok = (st["bytes_out"] == received_before and st["bytes_in"] == srv.sent_bytes
              and st["requests"] == 6 + 1 + polls)         # c1's six, c2's one, the polls
        return st if ok else None
    try:
        st = wait_for(agrees, 2 * srv.slow, interval=0.02, what="/stats matching the client")
    except AssertionError:
        raise AssertionError("(bytes_out, client received, bytes_in, client sent) per poll: %s"
                             % seen[-5:]) from None
    assert st["connections"] == {"live": 2, "accepted": 2, "closed": 0}
    assert all(v == 0 for v in st["errors"].values()), st["errors"]
    check_loops_add_up(st)

    c2.close()
    st = srv.wait_stats(lambda s: s["connections"]["closed"] == 1, conn=c1, what="closed == 1")
    assert st["connections"] == {"live": 1, "accepted": 2, "closed": 1}
    assert st["requests"] == 6 + 1 + (srv.stats_calls - calls)
    check_loops_add_up(st)


def test_accepted_and_closed_after_many_connections(make_server):
    srv = make_server(io_threads=2)
    watcher = srv.connect()
    calls = srv.stats_calls
    for i in range(50):
        with srv.connect() as c:
            if i % 2:
                assert c.request("GET", "/healthz").status == 200
    st = srv.wait_stats(lambda s: s["connections"]["live"] == 1, conn=watcher, what="live == 1")
    assert st["connections"]["accepted"] == 51
    assert st["connections"]["closed"] == 50
    check_loops_add_up(st)
    # The requests counter counts only the 25 requests and the /stats polls.
    assert st["requests"] == 25 + (srv.stats_calls - calls)


def test_bytes_in_counts_request_bodies(server):
    c = server.connect()
    body = b"x" * 1000000
    c.sendall(request("GET", "/healthz", headers={"Content-Length": len(body)}, body=body))
    assert c.recv_response().status == 200
    st = server.stats(conn=c)
    assert st["bytes_in"] >= len(body)
    assert st["bytes_in"] == server.sent_bytes


def test_error_counters_count_each_error(server):
    def send(data):
        c = server.connect()
        c.send_until_response(data)
        r = c.recv_response(timeout=5 * server.slow)
        c.wait_closed(timeout=3 * server.slow)
        c.close()
        return r.status

    statuses = [
        send(b"NOT HTTP AT ALL\r\n\r\n"),
        send(b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"),
        send(request("GET", "/" + "u" * 9000)),
        send(request("GET", "/healthz", headers=[("X-Big", "b" * 20000)])),
        send(request("GET", "/healthz", headers={"Content-Length": 2 * 1024 * 1024})),
        send(request("GET", "/healthz", headers={"Transfer-Encoding": "identity"})),
        send(request("GET", "/healthz", headers={"Expect": "teapot"})),
    ]
    assert statuses == [400, 400, 414, 431, 413, 501, 417]
    expected = dict.fromkeys(ERROR_KINDS, 0)
    expected.update(bad_request=2, uri_too_long=1, header_too_large=1, body_too_large=1,
                    unsupported_te=1, expectation_failed=1)
    st = server.wait_stats(lambda s: s["errors"] == expected, timeout=3, what="errors == %r" % expected)
    m = server.metrics()
    for kind in ERROR_KINDS:
        assert m[("tidegate_errors_total", (("kind", kind),))] == expected[kind], kind
    st = server.wait_live(1)
    assert st["connections"]["accepted"] == st["connections"]["closed"] + 1


def test_metrics_agree_with_stats(make_server):
    srv = make_server(io_threads=3)
    conns = [srv.connect() for _ in range(7)]
    for i, c in enumerate(conns):
        for _ in range(i + 1):
            assert c.request("GET", "/healthz" if i % 2 else "/nope").status in (200, 404)
    conns[0].close()
    conns[1].close()
    c = conns[-1]
    srv.wait_stats(lambda s: s["connections"]["closed"] == 2, conn=c, what="closed == 2")

    st_resp = c.request("GET", "/stats")
    st = st_resp.json()
    metrics_req = request("GET", "/metrics")
    m = srv.metrics(conn=c)

    loops = {str(i) for i in range(3)}
    for name in ("tidegate_connections", "tidegate_connections_accepted_total",
                 "tidegate_connections_closed_total", "tidegate_bytes_received_total",
                 "tidegate_bytes_sent_total", "tidegate_http_requests_total"):
        labels = {dict(l).get("loop") for (n, l) in m if n == name}
        assert labels == loops, (name, labels)

    assert metric_sum(m, "tidegate_connections") == st["connections"]["live"] == 5
    assert metric_sum(m, "tidegate_connections_accepted_total") == st["connections"]["accepted"] == 7
    assert metric_sum(m, "tidegate_connections_closed_total") == st["connections"]["closed"] == 2
    # /metrics was answered one request after /stats, on the same connection.
    assert metric_sum(m, "tidegate_http_requests_total") == st["requests"] + 1
    assert metric_sum(m, "tidegate_bytes_received_total") == st["bytes_in"] + len(metrics_req)
    assert metric_sum(m, "tidegate_bytes_sent_total") == st["bytes_out"] + len(st_resp.raw)
    for kind in ERROR_KINDS:
        assert m[("tidegate_errors_total", (("kind", kind),))] == st["errors"][kind]
    # Per loop as well.
    for loop in st["loops"]:
        lab = (("loop", str(loop["id"])),)
        assert m[("tidegate_connections", lab)] == loop["live"]
        assert m[("tidegate_connections_accepted_total", lab)] == loop["accepted"]
        assert m[("tidegate_connections_closed_total", lab)] == loop["closed"]
    up = m[("tidegate_uptime_seconds", ())]
    assert st["uptime_ms"] / 1000.0 - 0.01 <= up <= st["uptime_ms"] / 1000.0 + 5


def test_metrics_have_help_and_type(server):
    r = server.get("/metrics")
    text = r.body.decode()
    for family in ("tidegate_connections", "tidegate_connections_accepted_total",
                   "tidegate_connections_closed_total", "tidegate_bytes_received_total",
                   "tidegate_bytes_sent_total", "tidegate_http_requests_total",
                   "tidegate_errors_total", "tidegate_uptime_seconds"):
        assert re.search(r"^# HELP %s \S" % family, text, re.M), family
        assert re.search(r"^# TYPE %s (counter|gauge)$" % family, text, re.M), family
    assert re.search(r"^# TYPE tidegate_connections gauge$", text, re.M)
    assert re.search(r"^# TYPE tidegate_http_requests_total counter$", text, re.M)


def test_uptime_grows(server):
    c = server.connect()
    a = server.stats(conn=c)["uptime_ms"]
    time.sleep(0.3)                     # a measurement window, not synchronisation
    b = server.stats(conn=c)["uptime_ms"]
    assert 250 <= b - a <= 3000, (a, b)


def test_version_matches_command_line(server):
    code, out, err = run_binary(["--version"])
    assert code == 0
    assert server.stats()["version"] in out + err


def test_requests_counts_pipelined_requests(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz") * 100)
    for _ in range(100):
        assert c.recv_response().status == 200
    st = server.stats(conn=c)
    assert st["requests"] == 101
    assert st["connections"]["accepted"] == 1


def test_live_counts_open_connections(server):
    conns = [server.connect() for _ in range(20)]
    for c in conns:
        assert c.request("GET", "/healthz").status == 200
    st = server.stats(conn=conns[0])
    assert st["connections"]["live"] == 20
    for c in conns[10:]:
        c.close()
    st = server.wait_stats(lambda s: s["connections"]["live"] == 10, conn=conns[0],
                           what="live == 10")
    assert st["connections"]["closed"] == 10
