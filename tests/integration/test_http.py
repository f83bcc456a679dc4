"""HTTP/1.1 behaviour of the built-in endpoints: keep-alive, pipelining, HTTP/1.0,
HEAD, Connection: close, Expect: 100-continue, request bodies, 404 and 405."""

import email.utils
import json
import time

from tidegate import chunked, request


def assert_common_headers(resp, body_len=None):
    """Every response has Content-Length, Server: tidegate and a current Date."""
    cl = resp.header("content-length")
    assert cl is not None, resp.raw
    assert int(cl) == (len(resp.body) if body_len is None else body_len), resp.raw
    assert resp.header("server") == "tidegate", resp.raw
    date = resp.header("date")
    assert date, resp.raw
    when = email.utils.parsedate_to_datetime(date)
    assert date.endswith(" GMT"), date
    assert abs(when.timestamp() - time.time()) < 60, date


def test_healthz(server):
    c = server.connect()
    r = c.request("GET", "/healthz")
    assert r.status == 200
    assert r.body == b"ok\n"
    assert_common_headers(r)


def test_query_string_is_ignored_for_routing(server):
    c = server.connect()
    assert c.request("GET", "/healthz?x=1&y=%20").body == b"ok\n"
    assert c.request("GET", "/stats?pretty").status == 200


def test_keep_alive_serves_many_requests_on_one_connection(server):
    c = server.connect()
    for _ in range(20):
        r = c.request("GET", "/healthz")
        assert (r.status, r.body) == (200, b"ok\n")
        assert not r.closes
    st = server.stats(conn=c)
    assert st["connections"]["accepted"] == 1          # one connection did it all
    assert st["requests"] == 21
    assert not c.readable(0.05)                         # and it is still open


def test_100_pipelined_requests_answered_in_order(server):
    c = server.connect()
    paths = ["/healthz" if i % 2 == 0 else "/nope%d" % i for i in range(100)]
    c.sendall(b"".join(request("GET", p) for p in paths))
    statuses = [c.recv_response().status for _ in paths]
    assert statuses == [200 if i % 2 == 0 else 404 for i in range(100)]
    # The connection is still usable afterwards.
    assert c.request("GET", "/healthz").status == 200


def test_pipelined_requests_mixing_methods_and_bodies(server):
    c = server.connect()
    reqs = [
        (request("HEAD", "/healthz"), "HEAD", 200),
        (request("GET", "/healthz", headers={"Content-Length": 5}, body=b"hello"), "GET", 200),
        (request("POST", "/healthz", headers={"Content-Length": 3}, body=b"abc"), "POST", 405),
        (request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"},
                 body=chunked(b"x" * 10, b"y" * 300)), "GET", 200),
        (request("GET", "/missing"), "GET", 404),
        (request("GET", "/stats"), "GET", 200),
    ]
    c.sendall(b"".join(r[0] for r in reqs))
    got = [c.recv_response(head=(m == "HEAD")).status for _, m, _ in reqs]
    assert got == [s for _, _, s in reqs]


def test_request_split_into_single_bytes(server):
    c = server.connect()
    data = request("GET", "/healthz", headers={"X-Long": "v" * 50}) * 3
    for i in range(len(data)):
        c.sendall(data[i:i + 1])
    for _ in range(3):
        assert c.recv_response().body == b"ok\n"


def test_http10_closes_after_response(server):
    c = server.connect()
    c.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    r = c.recv_response()
    assert (r.status, r.body) == (200, b"ok\n")
    assert_common_headers(r)
    rest, _, closed = c.wait_closed(timeout=2 * server.slow)
    assert closed, "HTTP/1.0 connection without keep-alive stayed open"
    assert rest == b""


def test_http10_keep_alive(server):
    c = server.connect()
    req = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    c.sendall(req)
    r = c.recv_response()
    assert (r.status, r.body) == (200, b"ok\n")
    assert not r.closes
    c.sendall(req)
    assert c.recv_response().body == b"ok\n"
    assert not c.readable(0.1), "server closed a keep-alive HTTP/1.0 connection"


def test_head_has_content_length_and_no_body(server):
    c = server.connect()
    for path in ("/healthz", "/stats", "/metrics", "/nope"):
        c.sendall(request("GET", path))
        g = c.recv_response()
        # HEAD then GET pipelined: any body after the HEAD headers would be
        # parsed as the start of the GET response and break it.
        c.sendall(request("HEAD", path) + request("GET", "/healthz"))
        h = c.recv_response(head=True)
        assert h.status == g.status
        assert h.body == b""
        assert h.header("content-length") is not None
        if path in ("/healthz", "/nope"):
            assert int(h.header("content-length")) == len(g.body)
        assert_common_headers(h, body_len=int(h.header("content-length")))
        nxt = c.recv_response()
        assert (nxt.status, nxt.body) == (200, b"ok\n"), nxt.raw


def test_connection_close_is_honoured(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz", headers={"Connection": "close"}))
    r = c.recv_response()
    assert r.status == 200
    assert r.closes
    rest, _, closed = c.wait_closed(timeout=2 * server.slow)
    assert closed and rest == b""


def test_connection_close_ignores_later_pipelined_requests(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz", headers={"Connection": "close"}) + request("GET", "/stats"))
    assert c.recv_response().status == 200
    rest, _, closed = c.wait_closed(timeout=2 * server.slow)
    assert closed
    assert rest == b"", "answered a request sent after Connection: close"


def test_expect_100_continue(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz",
                      headers={"Content-Length": 5, "Expect": "100-continue"}))
    interim = c.recv_response(timeout=3 * server.slow)
    assert interim.status == 100, interim.raw
    assert interim.raw.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert not c.readable(0.05), "final response before the body was sent"
    c.sendall(b"hello")
    r = c.recv_response()
    assert (r.status, r.body) == (200, b"ok\n")
    assert c.request("GET", "/healthz").status == 200


def test_expect_100_continue_with_chunked_body(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz",
                      headers={"Transfer-Encoding": "chunked", "Expect": "100-Continue"}))
    assert c.recv_response().status == 100
    c.sendall(chunked(b"a" * 100, b"b" * 7))
    assert c.recv_response().body == b"ok\n"


def test_content_length_body_is_read_and_discarded(server):
    c = server.connect()
    body = bytes(range(256)) * 400                     # 100 KiB, includes "\r\n\r\n"-like bytes
    body = body.replace(b"G", b"g")
    c.sendall(request("GET", "/healthz", headers={"Content-Length": len(body)}, body=body)
              + request("GET", "/nope"))
    assert c.recv_response().status == 200
    assert c.recv_response().status == 404


def test_chunked_body_is_read_and_discarded(server):
    c = server.connect()
    body = chunked(b"GET /nope HTTP/1.1\r\n\r\n", b"z" * 5000, b"q")
    c.sendall(request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"}, body=body)
              + request("GET", "/healthz"))
    assert c.recv_response().status == 200
    assert c.recv_response().status == 200


def test_chunked_body_with_extensions_and_trailers(server):
    c = server.connect()
    body = (b"5;name=value\r\nhello\r\n" b"A\r\n0123456789\r\n"
            b"0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n")
    c.sendall(request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"}, body=body)
              + request("GET", "/missing"))
    assert c.recv_response().status == 200
    assert c.recv_response().status == 404


def test_body_sent_slowly_in_pieces(server):
    c = server.connect()
    body = b"x" * 3000
    c.sendall(request("GET", "/healthz", headers={"Content-Length": len(body)}))
    for i in range(0, len(body), 500):
        assert not c.readable(0.01), "answered before the body was complete"
        c.sendall(body[i:i + 500])
    assert c.recv_response().body == b"ok\n"


def test_unknown_path_is_404(server):
    c = server.connect()
    for path in ("/nope", "/healthz/", "/healthzz", "/stats/x", "/METRICS", "//"):
        r = c.request("GET", path)
        assert r.status == 404, (path, r)
        assert_common_headers(r)
        assert not r.closes


def test_root_serves_the_demo_page(server):
    r = server.connect().request("GET", "/")
    assert r.status == 200
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert b"new EventSource(" in r.body and b"new WebSocket(" in r.body


def test_other_methods_are_405_with_allow(server):
    c = server.connect()
    for method, path in (("POST", "/healthz"), ("PUT", "/stats"), ("DELETE", "/metrics"),
                         ("OPTIONS", "/healthz"), ("PATCH", "/stats")):
        r = c.request(method, path, headers={"Content-Length": 0})
        assert r.status == 405, (method, path, r)
        assert r.header("allow") == "GET, HEAD", r.raw
        assert_common_headers(r)
        assert not r.closes


def test_post_body_of_405_is_discarded(server):
    c = server.connect()
    c.sendall(request("POST", "/healthz", headers={"Content-Length": 20}, body=b"GET / HTTP/1.1\r\n\r\nxx")
              + request("GET", "/healthz"))
    assert c.recv_response().status == 405
    assert c.recv_response().body == b"ok\n"


def test_stats_is_json(server):
    c = server.connect()
    r = c.request("GET", "/stats")
    assert r.status == 200
    assert_common_headers(r)
    st = json.loads(r.body)
    for key in ("version", "uptime_ms", "io_threads", "workers", "connections", "bytes_in",
                "bytes_out", "requests", "errors", "loops", "log_dropped"):
        assert key in st, key


def test_metrics_content_type(server):
    c = server.connect()
    r = c.request("GET", "/metrics")
    assert r.status == 200
    assert r.header("content-type") == "text/plain; version=0.0.4", r.raw
    assert_common_headers(r)
    assert b"# TYPE tidegate_" in r.body
    assert b"# HELP tidegate_" in r.body


def test_many_sequential_connections(server):
    for _ in range(200):
        with server.connect() as c:
            assert c.request("GET", "/healthz").status == 200

