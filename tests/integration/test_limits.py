"""Every request limit: the status it answers, Connection: close, the close that
follows and the /stats error counter; then the timeouts (slowloris, slow body,
idle keep-alive, silent connection, a client that never reads)."""

import socket
import threading
import time

import pytest

from tidegate import ERROR_KINDS, ConnectionClosed, chunked, request


def expect_error(server, conn, status, kind=None, count=1):
    """The connection gets one `status` response with Connection: close, then the
    server closes it; /stats counts it under errors[kind] (others stay 0)."""
    r = conn.recv_response(timeout=5 * server.slow)
    assert r.status == status, r.raw[:300]
    assert r.closes, "error response without Connection: close: %r" % r.raw[:300]
    assert int(r.header("content-length")) == len(r.body)
    assert r.header("server") == "tidegate"
    rest, _, closed = conn.wait_closed(timeout=3 * server.slow)
    assert closed, "server kept the connection open after %d" % status
    assert rest == b"", "bytes after the error response: %r" % rest[:200]
    conn.close()                   # as a client does on EOF
    if kind is not None:
        st = server.wait_stats(lambda s: s["errors"][kind] >= count, timeout=5,
                               what="errors.%s == %d" % (kind, count))
        others = {k: v for k, v in st["errors"].items() if k != kind and v}
        assert st["errors"][kind] == count, st["errors"]
        assert others == {}, others
    return r


def send_and_expect(server, data, status, kind=None, count=1):
    c = server.connect()
    c.send_until_response(data)
    return expect_error(server, c, status, kind, count)


def healthz_with_target_len(n):
    target = "/healthz?"
    return target + "a" * (n - len(target))


# ---- 400 ----

BAD_REQUESTS = {
    "not-http": b"GARBAGE\r\n\r\n",
    "binary": b"\x00\x01\x02\x03\r\n\r\n",
    "header-without-colon": b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n",
    "bad-content-length": b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    "two-content-lengths":
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "bad-chunk-size":
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-data-without-crlf":
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "no-target": b"GET  HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_request_gets_400(server, name):
    send_and_expect(server, BAD_REQUESTS[name], 400, "bad_request")


def test_malformed_requests_are_each_counted(server):
    names = ["not-http", "header-without-colon", "bad-content-length"]
    for i, name in enumerate(names, 1):
        send_and_expect(server, BAD_REQUESTS[name], 400, "bad_request", count=i)


def test_bad_request_after_good_ones_on_the_same_connection(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz") + request("GET", "/nope") + b"BROKEN REQUEST\r\n\r\n")
    assert c.recv_response().status == 200
    assert c.recv_response().status == 404
    expect_error(server, c, 400, "bad_request")


# ---- 414 ----

def test_uri_at_default_limit_is_served_one_more_byte_is_414(server):
    c = server.connect()
    r = c.request("GET", healthz_with_target_len(8192))
    assert (r.status, r.body) == (200, b"ok\n")
    send_and_expect(server, request("GET", healthz_with_target_len(8193)), 414, "uri_too_long")


def test_uri_limit_from_config(make_server):
    srv = make_server(http_max_uri="1k")
    c = srv.connect()
    assert c.request("GET", healthz_with_target_len(1024)).status == 200
    assert c.request("GET", "/x" + "y" * 1022).status == 404
    send_and_expect(srv, request("GET", healthz_with_target_len(1025)), 414, "uri_too_long")
    send_and_expect(srv, request("GET", "/" + "z" * 100000), 414, "uri_too_long", count=2)


# ---- 431 ----

def pad_headers(count, size):
    """count header lines with values of size bytes."""
    return [("X-Pad-%d" % i, "v" * size) for i in range(count)]


def test_header_section_over_default_size_is_431(server):
    c = server.connect()
    assert c.request("GET", "/healthz", headers=pad_headers(12, 1000)).status == 200
    assert c.request("GET", "/healthz", headers=[("X-Big", "b" * 14000)]).status == 200
    send_and_expect(server, request("GET", "/healthz", headers=[("X-Big", "b" * 20000)]),
                    431, "header_too_large")
    send_and_expect(server, request("GET", "/healthz", headers=pad_headers(20, 1000)),
                    431, "header_too_large", count=2)


def test_header_size_limit_from_config(make_server):
    srv = make_server(http_max_header_size="2k")
    c = srv.connect()
    assert c.request("GET", "/healthz", headers=[("X-Big", "b" * 1500)]).status == 200
    send_and_expect(srv, request("GET", "/healthz", headers=[("X-Big", "b" * 2500)]),
                    431, "header_too_large")
    # The request line counts too.
    send_and_expect(srv, request("GET", healthz_with_target_len(1500),
                                 headers=[("X-Big", "b" * 1000)]),
                    431, "header_too_large", count=2)


def count_headers(n):
    """n header lines in all (Host included)."""
    return [("X-H%d" % i, "v") for i in range(n - 1)]


def test_header_count_default_limit(server):
    c = server.connect()
    r = c.request("GET", "/healthz", headers=count_headers(100))
    assert r.status == 200, "100 headers (the default limit) refused: %r" % r
    send_and_expect(server, request("GET", "/healthz", headers=count_headers(101)),
                    431, "header_too_large")


def test_header_count_limit_from_config(make_server):
    srv = make_server(http_max_headers=10)
    c = srv.connect()
    assert c.request("GET", "/healthz", headers=count_headers(10)).status == 200
    send_and_expect(srv, request("GET", "/healthz", headers=count_headers(11)),
                    431, "header_too_large")


# ---- 413 ----

def test_content_length_over_default_max_body_is_413_without_the_body(server):
    c = server.connect()
    c.sendall(request("GET", "/healthz", headers={"Content-Length": 1024 * 1024 + 1}))
    expect_error(server, c, 413, "body_too_large")


def test_body_at_max_body_is_served(make_server):
    srv = make_server(http_max_body="64k")
    c = srv.connect()
    body = b"b" * 65536
    c.sendall(request("GET", "/healthz", headers={"Content-Length": len(body)}, body=body))
    assert c.recv_response().status == 200
    c.sendall(request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"},
                      body=chunked(body[:40000], body[40000:])))
    assert c.recv_response().status == 200
    c.sendall(request("GET", "/healthz", headers={"Content-Length": len(body) + 1}))
    expect_error(srv, c, 413, "body_too_large")


def test_chunked_total_over_max_body_is_413(make_server):
    srv = make_server(http_max_body="64k")
    c = srv.connect()
    # 40000 + 25536 = 65536 is fine; one more chunk of 1 byte is over.
    data = request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"}) + \
        b"9c40\r\n" + b"a" * 40000 + b"\r\n" + b"63c0\r\n" + b"b" * 25536 + b"\r\n" + \
        b"1\r\nc\r\n0\r\n\r\n"
    sent = c.send_until_response(data)
    assert sent >= len(data) - len(b"c\r\n0\r\n\r\n"), \
        "413 before the total went over the limit (after %d bytes)" % sent
    expect_error(srv, c, 413, "body_too_large")


def test_single_huge_chunk_is_413(make_server):
    srv = make_server(http_max_body="64k")
    c = srv.connect()
    c.send_until_response(request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"})
                          + b"100000\r\n" + b"x" * 200000)
    expect_error(srv, c, 413, "body_too_large")


# ---- 501 ----

def test_transfer_encoding_other_than_chunked_is_501(server):
    for i, te in enumerate(("gzip, chunked", "identity", "gzip"), 1):
        body = chunked(b"hello") if te.endswith("chunked") else b""
        send_and_expect(server, request("GET", "/healthz", headers={"Transfer-Encoding": te},
                                        body=body), 501, "unsupported_te", count=i)


# ---- 417 ----

def test_unknown_expectation_is_417(server):
    send_and_expect(server, request("GET", "/healthz", headers={"Expect": "something-else",
                                                                "Content-Length": 3}),
                    417, "expectation_failed")


# ---- timeouts ----

def test_slowloris_is_cut_at_header_timeout(make_server):
    srv = make_server(http_header_timeout="1s")
    c = srv.connect()
    start = time.monotonic()
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    i = 0
    # Keep trickling header lines, never the blank line.
    while not c.readable(0.2):
        c.sendall(b"X-Drip-%d: x\r\n" % i)
        i += 1
        assert time.monotonic() - start < 5 * srv.slow, "never cut off"
    elapsed = time.monotonic() - start
    r = expect_error(srv, c, 408, "header_timeout")
    assert 0.9 <= elapsed <= 1.0 + 0.8 * srv.slow, "408 after %.2fs, header_timeout 1s" % elapsed
    assert r.status == 408


def test_unfinished_headers_get_408(make_server):
    srv = make_server(http_header_timeout="1s")
    c = srv.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")          # never sends the blank line
    assert c.readable(1 + 2 * srv.slow), "no answer to unfinished headers"
    expect_error(srv, c, 408, "header_timeout")


def fresh_client_status(srv):
    """Status a brand-new client gets for GET /healthz, or what happened instead."""
    c = srv.connect()
    try:
        c.sendall(request("GET", "/healthz"))
        return c.recv_response(timeout=2 * srv.slow).status
    except (ConnectionClosed, OSError) as e:
        return "%s (%s)" % (type(e).__name__, e)
    finally:
        c.close()


@pytest.mark.parametrize("io_threads", [1, 2])
def test_client_served_after_the_server_sat_idle_longer_than_header_timeout(make_server, io_threads):
    srv = make_server(http_header_timeout="1s", io_threads=io_threads)
    assert fresh_client_status(srv) == 200
    time.sleep(1.5)                # the scenario: nothing happens for 1.5 s
    assert [fresh_client_status(srv) for _ in range(3)] == [200] * 3


@pytest.mark.parametrize("io_threads", [1, 2])
def test_next_client_served_right_after_a_slowloris_is_cut(make_server, io_threads):
    srv = make_server(http_header_timeout="500ms", io_threads=io_threads)
    got = []
    for _ in range(5):
        a = srv.connect()
        a.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")      # never finished
        assert a.recv_response(timeout=3 * srv.slow).status == 408
        _, _, closed = a.wait_closed(timeout=2 * srv.slow)
        assert closed                  # by the server; the attacker keeps its end open
        got.append(fresh_client_status(srv))
    assert got == [200] * 5, got
    srv.wait_stats(lambda s: s["errors"]["header_timeout"] == 5, what="5 header timeouts")


@pytest.mark.parametrize("io_threads", [1, 2])
def test_client_served_after_a_keepalive_connection_idles_past_header_timeout(make_server, io_threads):
    srv = make_server(http_header_timeout="1s", http_keepalive_timeout="75s", io_threads=io_threads)
    idler = srv.connect()
    assert idler.request("GET", "/healthz").status == 200
    assert not idler.readable(1.5), "idle keep-alive connection closed before keepalive_timeout"
    assert [fresh_client_status(srv) for _ in range(3)] == [200] * 3
    assert idler.request("GET", "/healthz").status == 200


def test_silent_connection_closed_quietly_after_header_timeout(make_server):
    srv = make_server(http_header_timeout="1s")
    c = srv.connect()
    data, elapsed, closed = c.wait_closed(timeout=1 + 3 * srv.slow)
    assert closed, "silent connection still open"
    assert data == b"", "silent connection got %r" % data[:200]
    assert 0.9 <= elapsed <= 1.0 + 0.8 * srv.slow, elapsed
    srv.wait_live(1)


def test_slow_body_is_cut_at_body_timeout(make_server):
    srv = make_server(http_body_timeout="1s")
    c = srv.connect()
    c.sendall(request("GET", "/healthz", headers={"Content-Length": 100}))
    start = time.monotonic()
    sent = 0
    while not c.readable(0.2):
        c.sendall(b"x")                       # 5 bytes a second: never completes in time
        sent += 1
        assert sent < 100 and time.monotonic() - start < 5 * srv.slow, "never cut off"
    elapsed = time.monotonic() - start
    expect_error(srv, c, 408, "body_timeout")
    assert 0.9 <= elapsed <= 1.0 + 0.8 * srv.slow, "408 after %.2fs, body_timeout 1s" % elapsed


def test_slow_chunked_body_is_cut_at_body_timeout(make_server):
    srv = make_server(http_body_timeout="1s")
    c = srv.connect()
    c.sendall(request("GET", "/healthz", headers={"Transfer-Encoding": "chunked"}))
    start = time.monotonic()
    i = 0
    while not c.readable(0.2):
        c.sendall(b"1\r\n%c\r\n" % (97 + i % 26))
        i += 1
        assert time.monotonic() - start < 5 * srv.slow, "never cut off"
    expect_error(srv, c, 408, "body_timeout")


def test_idle_keepalive_connection_closed_quietly(make_server):
    srv = make_server(http_keepalive_timeout="1s")
    c = srv.connect()
    assert c.request("GET", "/healthz").status == 200
    data, elapsed, closed = c.wait_closed(timeout=1 + 3 * srv.slow)
    assert closed, "idle keep-alive connection still open"
    assert data == b"", "idle close sent bytes: %r" % data[:200]
    assert 0.9 <= elapsed <= 1.0 + 0.8 * srv.slow, elapsed
    st = srv.wait_live(1)
    assert all(v == 0 for v in st["errors"].values()), st["errors"]


def test_keepalive_timer_restarts_with_each_request(make_server):
    srv = make_server(http_keepalive_timeout="1s")
    c = srv.connect()
    start = time.monotonic()
    while time.monotonic() - start < 2.5:
        assert c.request("GET", "/healthz").status == 200
        assert not c.readable(0.4), "closed although active"
    data, _, closed = c.wait_closed(timeout=1 + 3 * srv.slow)
    assert closed and data == b""


def test_keepalive_timeout_is_not_the_header_timeout(make_server):
    # A connection between requests waits for keepalive_timeout, not header_timeout.
    srv = make_server(http_header_timeout="500ms", http_keepalive_timeout="2s")
    c = srv.connect()
    assert c.request("GET", "/healthz").status == 200
    assert not c.readable(1.2), "idle keep-alive connection closed at the header timeout"
    assert c.request("GET", "/healthz").status == 200


def test_client_that_never_reads_is_dropped_at_send_timeout(make_server):
    srv = make_server(http_send_timeout="1s")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    blob = request("GET", "/metrics") * 20000

    def pump():
        try:
            s.sendall(blob)
        except OSError:
            pass
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        srv.wait_stats(lambda st: st["errors"]["send_timeout"] == 1, timeout=8,
                       what="errors.send_timeout == 1")
        st = srv.wait_live(1)
        assert {k: v for k, v in st["errors"].items() if v} == {"send_timeout": 1}
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        t.join(5)
        s.close()


def test_error_counters_all_present_and_zero_on_a_fresh_server(server):
    st = server.stats()
    assert set(ERROR_KINDS) <= set(st["errors"]), st["errors"]
    assert all(v == 0 for v in st["errors"].values()), st["errors"]
