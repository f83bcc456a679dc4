"""The Python reference backend library's codec (clients/python/tidegate_backend.py):
frames and pairs as docs/backend-protocol.md and include/tidegate/backend.h
define them. No server needed.

    /usr/bin/python3 -m pytest -q tests/integration/test_backend_codec.py
"""

import json
import os
import struct
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))

import tidegate_backend as tb  # noqa: E402


def header(ftype, length, fid=0, magic=0x54, version=1, flags=0):
    return struct.pack(">BBBBIQ", magic, version, ftype, flags, length, fid)


def pair(key, value):
    return struct.pack(">H", len(key)) + key + struct.pack(">I", len(value)) + value


# -- encoding -----------------------------------------------------------------

def test_hello_bytes_exactly():
    frame = tb.encode_frame(tb.HELLO, 0, [("version", 1), ("name", "b1"), ("routes", "a,b"),
                                         ("capacity", 64)])
    body = (pair(b"version", b"1") + pair(b"name", b"b1") + pair(b"routes", b"a,b")
            + pair(b"capacity", b"64"))
    assert frame == header(1, len(body)) + body
    assert frame[:4] == b"T\x01\x01\x00"


def test_header_fields_big_endian():
    frame = tb.encode_frame(tb.REPLY, 0x0102030405060708, [("status", 200)])
    assert frame[0] == 0x54 and frame[1] == 1 and frame[2] == tb.REPLY and frame[3] == 0
    assert frame[4:8] == struct.pack(">I", len(frame) - 16)
    assert frame[8:16] == bytes([1, 2, 3, 4, 5, 6, 7, 8])


def test_empty_body():
    frame = tb.encode_frame(tb.DRAIN)
    assert frame == header(tb.DRAIN, 0)
    frames, rest = tb.decode_frames(frame)
    assert frames == [(tb.DRAIN, 0, [])] and rest == b""


def test_value_types():
    frame = tb.encode_frame(tb.PUSH, 0, [("conn", 17), ("data", "héllo"), ("raw", b"\x00\xff"),
                                        ("ba", bytearray(b"x")), ("t", True)])
    (f,), _ = tb.decode_frames(frame)
    assert f.pairs == [("conn", b"17"), ("data", "héllo".encode()), ("raw", b"\x00\xff"),
                       ("ba", b"x"), ("t", b"1")]


def test_dict_pairs():
    frame = tb.encode_frame(tb.SUBSCRIBE, 0, {"conn": "5", "channel": "room.x"})
    (f,), _ = tb.decode_frames(frame)
    assert f.pairs == [("conn", b"5"), ("channel", b"room.x")]


@pytest.mark.parametrize("ftype", [0, 13, -1, 255, "1", None])
def test_encode_rejects_bad_type(ftype):
    with pytest.raises(ValueError):
        tb.encode_frame(ftype, 0, [])


@pytest.mark.parametrize("fid", [-1, 1 << 64])
def test_encode_rejects_bad_id(fid):
    with pytest.raises(ValueError):
        tb.encode_frame(tb.JOB, fid, [])


def test_encode_rejects_bad_keys():
    with pytest.raises(ValueError):
        tb.encode_frame(tb.PING, 0, [("", "x")])
    with pytest.raises(ValueError):
        tb.encode_frame(tb.PING, 0, [("k" * 256, "x")])
    with pytest.raises(ValueError):
        tb.encode_frame(tb.PING, 0, [("\u20ac", "x")])
    tb.encode_frame(tb.PING, 0, [("k" * 255, "x")])
    tb.encode_frame(tb.PING, 0, [(b"bytes-key", "x")])


def test_encode_rejects_bad_values():
    for value in (None, 1.5, ["x"], {"a": 1}):
        with pytest.raises(TypeError):
            tb.encode_frame(tb.PING, 0, [("k", value)])


def test_encode_pair_count_limit():
    tb.encode_frame(tb.PING, 0, [("k", "")] * tb.MAX_PAIRS)
    with pytest.raises(ValueError):
        tb.encode_frame(tb.PING, 0, [("k", "")] * (tb.MAX_PAIRS + 1))


# -- round trips ----------------------------------------------------------------

ROUND_TRIP = [
    (tb.HELLO, 0, [("version", b"1"), ("epoch", b"1234567"), ("max_frame", b"16777216"),
                   ("ping_ms", b"5000"), ("features", b"")]),
    (tb.JOB, 1, [("route", b"orders"), ("kind", b"http"), ("method", b"POST"), ("path", b"/x"),
                 ("h:cookie", b"a=1"), ("h:cookie", b"b=2"), ("body", bytes(range(256)))]),
    (tb.JOB, (1 << 64) - 1, [("route", b"r"), ("kind", b"call"), ("data", b'{"a":[1,2]}')]),
    (tb.REPLY, 42, [("status", b"200"), ("body", b"")]),
    (tb.ERROR, 0, [("code", b"protocol"), ("message", b"bye")]),
    (tb.PING, 9, []),
    (tb.DONE_BELOW, 77, []),
    (tb.PUSH, 0, [("channel", b"c"), ("data", b"x" * 100000)]),
    (tb.PING, 1, [("\xff" * 255, b"latin-1 keys survive")]),
]


@pytest.mark.parametrize("ftype,fid,pairs", ROUND_TRIP)
def test_round_trip(ftype, fid, pairs):
    data = tb.encode_frame(ftype, fid, pairs)
    frames, rest = tb.decode_frames(data)
    assert rest == b""
    assert frames == [(ftype, fid, pairs)]
    f = frames[0]
    assert (f.type, f.id, f.pairs) == (ftype, fid, pairs)


def test_many_frames_in_one_buffer():
    stream = b"".join(tb.encode_frame(t, i, p) for t, i, p in ROUND_TRIP)
    frames, rest = tb.decode_frames(stream)
    assert rest == b""
    assert frames == [(t, i, p) for t, i, p in ROUND_TRIP]


def test_max_pairs_round_trip():
    pairs = [("h:x", b"%d" % i) for i in range(tb.MAX_PAIRS)]
    (f,), rest = tb.decode_frames(tb.encode_frame(tb.JOB, 3, pairs))
    assert f.pairs == pairs and rest == b""


def test_decode_accepts_bytearray_and_memoryview():
    data = tb.encode_frame(tb.PING, 5, [("a", "b")])
    for buf in (bytearray(data), memoryview(data)):
        frames, rest = tb.decode_frames(buf)
        assert frames == [(tb.PING, 5, [("a", b"b")])] and rest == b""


# -- partial buffers --------------------------------------------------------------

def test_every_split_point():
    stream = b"".join(tb.encode_frame(t, i, p) for t, i, p in ROUND_TRIP[:7])
    want = [(t, i, p) for t, i, p in ROUND_TRIP[:7]]
    for cut in range(len(stream) + 1):
        first, rest = tb.decode_frames(stream[:cut])
        second, rest = tb.decode_frames(rest + stream[cut:])
        assert rest == b""
        assert first + second == want, cut


def test_byte_by_byte():
    stream = b"".join(tb.encode_frame(t, i, p) for t, i, p in ROUND_TRIP[:4])
    got, rest = [], b""
    for i in range(len(stream)):
        frames, rest = tb.decode_frames(rest + stream[i:i + 1])
        got += frames
    assert rest == b""
    assert got == [(t, i, p) for t, i, p in ROUND_TRIP[:4]]


def test_incomplete_is_kept_whole():
    frame = tb.encode_frame(tb.REPLY, 8, [("status", 200), ("body", b"abc")])
    for n in (0, 1, 15, 16, len(frame) - 1):
        frames, rest = tb.decode_frames(frame[:n])
        assert frames == [] and rest == frame[:n]
    frames, rest = tb.decode_frames(frame + frame[:5])
    assert frames == [(tb.REPLY, 8, [("status", b"200"), ("body", b"abc")])]
    assert rest == frame[:5]


def test_decode_header():
    assert tb.decode_header(b"") is None
    assert tb.decode_header(b"T\x01") is None
    assert tb.decode_header(header(tb.JOB, 10, 99)) == (tb.JOB, 0, 10, 99)


# -- malformed frames ---------------------------------------------------------------

GOOD = tb.encode_frame(tb.REPLY, 1, [("status", 200)])


@pytest.mark.parametrize("bad", [
    header(tb.PING, 0, magic=0x55),
    header(tb.PING, 0, magic=0x00),
    header(tb.PING, 0, version=0),
    header(tb.PING, 0, version=2),
    header(0, 0),
    header(tb.TYPE_MAX + 1, 0),
    header(255, 0),
    header(tb.PING, 0, flags=0x02),
    header(tb.PING, 0, flags=0x80),
    header(tb.PING, 0, flags=tb.F_LZ4),                 # this library does not do lz4
    header(tb.PING, 9, flags=tb.F_LZ4) + b"\x00\x00\x00\x05abcde",
], ids=["magic-U", "magic-0", "version-0", "version-2", "type-0", "type-13", "type-255",
        "flag-2", "flag-80", "lz4-empty", "lz4"])
def test_bad_header_rejected(bad):
    with pytest.raises(tb.ProtocolError):
        tb.decode_frames(bad)
    with pytest.raises(tb.ProtocolError):         # also after a good frame
        tb.decode_frames(GOOD + bad)


def test_bad_header_rejected_before_it_is_complete():
    # Garbage is refused on its first byte; a bad version on the second, and so on:
    # no need to wait for 16 bytes that may never come.
    for prefix in (b"G", b"T\x02", b"T\x01\x00", b"T\x01\x0d", b"T\x01\x09\x04"):
        with pytest.raises(tb.ProtocolError):
            tb.decode_frames(prefix)


def test_oversized_body_rejected_from_the_length_alone():
    big = struct.pack(">BBBBI", 0x54, 1, tb.PUSH, 0, 1 << 30)   # 8 bytes: the length is known
    with pytest.raises(tb.ProtocolError):
        tb.decode_frames(big)
    with pytest.raises(tb.ProtocolError):
        tb.decode_frames(header(tb.PUSH, tb.MAX_BODY_DEFAULT + 1))
    # at the limit: accepted as incomplete
    frames, rest = tb.decode_frames(header(tb.PUSH, tb.MAX_BODY_DEFAULT))
    assert frames == [] and len(rest) == 16


def test_max_body_parameter():
    frame = tb.encode_frame(tb.PUSH, 0, [("data", b"x" * 100)])
    n = len(frame) - 16
    assert tb.decode_frames(frame, max_body=n)[0]
    with pytest.raises(tb.ProtocolError):
        tb.decode_frames(frame, max_body=n - 1)


def body_frame(body, ftype=tb.JOB):
    return header(ftype, len(body), 1) + body


@pytest.mark.parametrize("body", [
    b"\x00",                                              # one byte: no room for a key length
    struct.pack(">H", 0) + struct.pack(">I", 0),          # empty key
    struct.pack(">H", 256) + b"k" * 256 + struct.pack(">I", 0),   # key of 256 bytes
    struct.pack(">H", 5) + b"abc",                        # key runs past the body
    struct.pack(">H", 3) + b"abc" + b"\x00\x00",          # value length cut short
    struct.pack(">H", 3) + b"abc" + struct.pack(">I", 10) + b"short",   # value past the body
    pair(b"ok", b"1") + b"\x00",                          # trailing byte after a good pair
    pair(b"ok", b"1") + struct.pack(">H", 2) + b"ab",     # trailing half pair
    pair(b"k", b"") * (tb.MAX_PAIRS + 1),                 # too many pairs
], ids=["one-byte", "empty-key", "key-256", "key-past-end", "vlen-short", "value-past-end",
        "trailing-byte", "half-pair", "1025-pairs"])
def test_malformed_pairs_rejected(body):
    with pytest.raises(tb.ProtocolError):
        tb.decode_frames(body_frame(body))
    with pytest.raises(tb.ProtocolError):
        tb.decode_pairs(body)


def test_body_length_covering_the_next_frame_is_not_trusted():
    # The announced length takes in part of the following frame: the pairs do not
    # end where the body does.
    second = tb.encode_frame(tb.PING, 0, [("a", "b")])
    first_body = pair(b"k", b"v")
    bad = header(tb.PING, len(first_body) + 3, 1) + first_body + second
    with pytest.raises(tb.ProtocolError):
        tb.decode_frames(bad)


# -- frames, jobs and replies ---------------------------------------------------------

def test_frame_accessors():
    f = tb.Frame(tb.JOB, 3, [("attempt", b"2"), ("h:a", b"1"), ("h:a", b"2"), ("x", b"no")])
    assert f == (tb.JOB, 3, [("attempt", b"2"), ("h:a", b"1"), ("h:a", b"2"), ("x", b"no")])
    assert f.get("h:a") == b"1" and f.get_all("h:a") == [b"1", b"2"]
    assert f.get("nope") is None and f.get("nope", b"d") == b"d"
    assert f.number("attempt") == 2 and f.number("x") is None and f.number("nope", 7) == 7
    assert f.text("x") == "no"


def test_job_from_http_frame():
    data = tb.encode_frame(tb.JOB, 12, [
        ("route", "orders"), ("kind", "http"), ("attempt", 2), ("deadline_ms", 1500),
        ("conn", 99), ("user", "u1"), ("key", "cart-7"), ("method", "POST"), ("path", "/a/b"),
        ("query", "x=1"), ("h:content-type", "text/plain"), ("h:cookie", "a"), ("h:cookie", "b"),
        ("body", b"\x00payload")])
    (f,), _ = tb.decode_frames(data)
    job = tb.Job.from_frame(f)
    assert (job.id, job.route, job.kind, job.attempt) == (12, "orders", "http", 2)
    assert (job.conn, job.user, job.key) == (99, "u1", "cart-7")
    assert (job.method, job.path, job.query, job.body) == ("POST", "/a/b", "x=1", b"\x00payload")
    assert job.deadline_ms == 1500 and 0 < job.remaining() <= 1.5
    assert job.headers == [("content-type", "text/plain"), ("cookie", "a"), ("cookie", "b")]
    assert job.headers["Content-Type"] == "text/plain"
    assert job.headers.get_all("cookie") == ["a", "b"]
    assert "cookie" in job.headers and "nope" not in job.headers
    assert job.header("nope", "d") == "d"
    with pytest.raises(KeyError):
        job.headers["nope"]
    assert job.data is None and job.pairs == f.pairs


def test_job_from_call_frame():
    (f,), _ = tb.decode_frames(tb.encode_frame(tb.JOB, 5, [
        ("route", "chat"), ("kind", "call"), ("conn", 3), ("data", '{"op":"say","n":[1]}')]))
    job = tb.Job.from_frame(f)
    assert job.kind == "call" and job.data == {"op": "say", "n": [1]}
    assert job.query is None and job.body == b"" and job.attempt == 1 and job.user is None
    (f,), _ = tb.decode_frames(tb.encode_frame(tb.JOB, 6, [("route", "chat"), ("kind", "call"),
                                                         ("data", "{nope")]))
    with pytest.raises(tb.JobError) as e:
        tb.Job.from_frame(f).data
    assert e.value.code == "bad_data" and e.value.status == 400


def decoded(data):
    (f,), rest = tb.decode_frames(data)
    assert rest == b""
    return f


def test_reply_encoding():
    f = decoded(tb.Reply(status=201, headers=[("Content-Type", "text/plain"), ("x-a", "1")],
                         body=b"ok", set_user="u7", cache_ttl=30).encode(9))
    assert f == (tb.REPLY, 9, [("status", b"201"), ("h:content-type", b"text/plain"),
                               ("h:x-a", b"1"), ("body", b"ok"), ("cache_ttl", b"30"),
                               ("set_user", b"u7")])
    f = decoded(tb.Reply(data={"a": [1, "é"]}).encode(10))
    assert f.pairs[0] == ("status", b"200")
    assert json.loads(f.get("data")) == {"a": [1, "é"]} and f.get("body") is None


def test_handler_results():
    assert decoded(tb.reply_frame(1, {"x": 1})).get("data") == b'{"x":1}'
    assert decoded(tb.reply_frame(1, [1, 2])).get("data") == b"[1,2]"
    assert decoded(tb.reply_frame(1, b"raw")).get("body") == b"raw"
    assert decoded(tb.reply_frame(1, "text")).get("body") == b"text"
    assert decoded(tb.reply_frame(1, None)).pairs == [("status", b"200")]
    assert tb.reply_frame(1, tb.NO_REPLY) is None
    f = decoded(tb.reply_frame(4, tb.JobError("bad_input", "no", status=400)))
    assert f == (tb.ERROR, 4, [("code", b"bad_input"), ("message", b"no"), ("status", b"400")])
    assert decoded(tb.JobError("x").encode(1)).get("status") == b"502"
