"""tidegate_backend - the Python reference backend library for tidegate.

A backend serves one or more *routes*. tidegate turns client requests (HTTP on
a routed path, or a ``call`` from a WebSocket or TCP-frame client) into *jobs*
and sends them over one TCP link; the backend answers each with a *reply*. The
protocol is described in ``docs/backend-protocol.md`` and its wire format in
``include/tidegate/backend.h``. This module is standard library only (Python
3.11) and does not do LZ4 compression, so it never advertises the ``lz4``
feature; a compressed frame from the gate closes the link.

A backend::

    from tidegate_backend import Backend, Reply, JobError

    backend = Backend(["orders"], name="orders-1", connect="127.0.0.1:7070")

    @backend.route("orders")
    def orders(job):
        if job.kind == "call":
            return {"ok": True, "you_sent": job.data}      # a JSON data reply
        if job.method != "POST":
            raise JobError("bad_method", "POST only", status=405)
        return Reply(status=201, headers=[("content-type", "text/plain")],
                     body=b"created\\n")

    backend.run()          # blocks; reconnects when the link drops

What the library guarantees (*effectively once*): every reply it sends is
remembered, by job id, until the gate says (DONE_BELOW) that the job is settled.
A job the gate sends again (after a link dropped, with the same id) is answered
from that memory without calling the handler, and a job that arrives again
while its handler still runs is answered once that handler returns. A job
counts as done, and ``on_done(job)`` is called, only once its reply has been
written to the gate's socket.

Threads: ``run()`` owns the link (connecting, HELLO, draining, reconnecting);
one reader thread per link decodes frames; ``workers`` daemon threads run the
handlers; writes to the socket are serialised by a lock, so ``push()`` and the
other control calls may be made from any thread, handlers included.
"""

import json
import logging
import os
import queue
import select
import socket
import struct
import sys
import threading
import time
import traceback

__all__ = [
    "Backend", "Job", "Reply", "JobError", "ProtocolError", "NotConnected",
    "Frame", "Headers", "NO_REPLY",
    "encode_frame", "encode_pairs", "decode_frames", "decode_pairs", "decode_header",
    "MAGIC", "VERSION", "HEADER_SIZE", "MAX_BODY_DEFAULT", "MAX_PAIRS", "MAX_KEY",
    "F_LZ4", "HELLO", "JOB", "REPLY", "ERROR", "PUSH", "SUBSCRIBE", "UNSUBSCRIBE",
    "KICK", "PING", "PONG", "DRAIN", "DONE_BELOW", "TYPE_NAMES",
]

log = logging.getLogger("tidegate_backend")

# --------------------------------------------------------------------------
# Wire format (include/tidegate/backend.h)
# --------------------------------------------------------------------------

MAGIC = 0x54                    # 'T'
VERSION = 1
HEADER_SIZE = 16
MAX_BODY_DEFAULT = 16 << 20     # body bytes, until the gate's HELLO says otherwise
MAX_PAIRS = 1024
MAX_KEY = 255
F_LZ4 = 0x01                    # body is LZ4-compressed: never sent nor accepted here
F_ALL = F_LZ4

HELLO, JOB, REPLY, ERROR, PUSH, SUBSCRIBE, UNSUBSCRIBE, KICK, PING, PONG, DRAIN, \
    DONE_BELOW = range(1, 13)
TYPE_MAX = DONE_BELOW

TYPE_NAMES = {
    HELLO: "HELLO", JOB: "JOB", REPLY: "REPLY", ERROR: "ERROR", PUSH: "PUSH",
    SUBSCRIBE: "SUBSCRIBE", UNSUBSCRIBE: "UNSUBSCRIBE", KICK: "KICK", PING: "PING",
    PONG: "PONG", DRAIN: "DRAIN", DONE_BELOW: "DONE_BELOW",
}

_HEAD = struct.Struct(">BBBBIQ")   # magic, version, type, flags, body length, id
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1


class ProtocolError(Exception):
    """A frame breaks the protocol: bad magic, version, type or flags, a body
    over the size limit, a malformed pair list, or a compressed body (which
    this library does not read). The link it came on must be closed."""


class NotConnected(ConnectionError):
    """push(), subscribe(), unsubscribe(), kick() or drain() needed the link to
    the gate, and there is none at the moment."""


class Frame(tuple):
    """A decoded frame: ``(type, id, pairs)``, a tuple so that tests can
    compare it with a plain tuple.

    ``pairs`` is a list of ``(key, value)``: keys are ``str`` (decoded as
    Latin-1, so any byte survives), values are ``bytes``. Keys may repeat, in
    order. The helpers below look up the first pair of a key.
    """

    __slots__ = ()

    def __new__(cls, type, id, pairs):
        return tuple.__new__(cls, (type, id, list(pairs)))

    type = property(lambda self: self[0], doc="frame type (HELLO, JOB, ...)")
    id = property(lambda self: self[1], doc="job id, 0 when about no job")
    pairs = property(lambda self: self[2], doc="list of (str key, bytes value)")

    def get(self, key, default=None):
        """The first value (bytes) of ``key``, or ``default``."""
        for k, v in self[2]:
            if k == key:
                return v
        return default

    def get_all(self, key):
        """Every value (bytes) of ``key``, in order."""
        return [v for k, v in self[2] if k == key]

    def text(self, key, default=None):
        """The first value of ``key`` decoded as UTF-8 (undecodable bytes are
        replaced), or ``default``."""
        v = self.get(key)
        return default if v is None else v.decode("utf-8", "replace")

    def number(self, key, default=None):
        """The first value of ``key`` as an int (numbers travel as decimal
        text), or ``default`` when absent or not a decimal number."""
        v = self.get(key)
        if v is None or not v.isdigit():
            return default
        return int(v)

    def __repr__(self):
        name = TYPE_NAMES.get(self[0], str(self[0]))
        return "Frame(%s, %d, %r)" % (name, self[1], self[2])


def _key_bytes(key):
    if isinstance(key, str):
        try:
            key = key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("key %r is not Latin-1 text" % key) from None
    elif not isinstance(key, (bytes, bytearray)):
        raise TypeError("key must be str or bytes, not %s" % type(key).__name__)
    if not 1 <= len(key) <= MAX_KEY:
        raise ValueError("key must be 1 to %d bytes, got %d" % (MAX_KEY, len(key)))
    return bytes(key)


def _value_bytes(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return str(value).encode("ascii")
    raise TypeError("value must be bytes, str or int, not %s" % type(value).__name__)


def _pair_items(pairs):
    if pairs is None:
        return ()
    if hasattr(pairs, "items"):
        return pairs.items()
    return pairs


def encode_pairs(pairs):
    """Encodes a body: ``pairs`` is a list of ``(key, value)`` (or a dict, or
    None for no pairs). A key is ``str`` (Latin-1) or ``bytes``, 1 to 255 bytes;
    a value is ``bytes``, ``str`` (UTF-8) or ``int`` (decimal text). Raises
    ValueError or TypeError for what the protocol cannot carry."""
    out = []
    n = 0
    for key, value in _pair_items(pairs):
        k = _key_bytes(key)
        v = _value_bytes(value)
        if len(v) > _U32_MAX:
            raise ValueError("value of %r too long" % key)
        n += 1
        if n > MAX_PAIRS:
            raise ValueError("more than %d pairs" % MAX_PAIRS)
        out += (_U16.pack(len(k)), k, _U32.pack(len(v)), v)
    return b"".join(out)


def encode_frame(type, id=0, pairs=None):
    """Encodes one frame (header and uncompressed body) and returns its bytes.

    ``type`` is one of HELLO ... DONE_BELOW, ``id`` the job id (0 when the
    frame is about no job), ``pairs`` as for encode_pairs()::

        encode_frame(REPLY, 42, [("status", 200), ("h:x-a", "1"), ("body", b"hi")])
    """
    if not isinstance(type, int) or not 1 <= type <= TYPE_MAX:
        raise ValueError("bad frame type %r" % (type,))
    if not isinstance(id, int) or not 0 <= id <= _U64_MAX:
        raise ValueError("bad job id %r" % (id,))
    body = encode_pairs(pairs)
    if len(body) > _U32_MAX:
        raise ValueError("body of %d bytes is too long" % len(body))
    return _HEAD.pack(MAGIC, VERSION, type, 0, len(body), id) + body


def decode_pairs(body):
    """Decodes a body into a list of ``(str key, bytes value)``. Raises
    ProtocolError unless it is exactly a sequence of at most 1024 well-formed
    pairs with keys of 1 to 255 bytes."""
    body = memoryview(body)
    pairs = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 2:
            raise ProtocolError("truncated pair: %d byte(s) left" % (end - pos))
        klen = _U16.unpack_from(body, pos)[0]
        if not 1 <= klen <= MAX_KEY:
            raise ProtocolError("key length %d" % klen)
        if end - pos - 2 < klen + 4:
            raise ProtocolError("key runs past the body")
        key = bytes(body[pos + 2:pos + 2 + klen]).decode("latin-1")
        vlen = _U32.unpack_from(body, pos + 2 + klen)[0]
        vpos = pos + 2 + klen + 4
        if end - vpos < vlen:
            raise ProtocolError("value of %r runs past the body" % key)
        if len(pairs) == MAX_PAIRS:
            raise ProtocolError("more than %d pairs" % MAX_PAIRS)
        pairs.append((key, bytes(body[vpos:vpos + vlen])))
        pos = vpos + vlen
    return pairs


def decode_header(data, max_body=MAX_BODY_DEFAULT):
    """Checks the start of a frame. ``data`` may hold fewer than 16 bytes:
    whatever is there is checked (magic, version, type, flags, then the body
    length as soon as it is complete), so garbage or an oversized announcement
    is rejected without waiting for more. Returns ``(type, flags, length, id)``
    once 16 bytes are there, None before. Raises ProtocolError."""
    n = len(data)
    if n >= 1 and data[0] != MAGIC:
        raise ProtocolError("bad magic 0x%02x" % data[0])
    if n >= 2 and data[1] != VERSION:
        raise ProtocolError("bad version %d" % data[1])
    if n >= 3 and not 1 <= data[2] <= TYPE_MAX:
        raise ProtocolError("bad frame type %d" % data[2])
    if n >= 4:
        if data[3] & ~F_ALL:
            raise ProtocolError("unknown flags 0x%02x" % data[3])
        if data[3] & F_LZ4:
            raise ProtocolError("compressed frame (this library does not do lz4)")
    if n >= 8:
        length = _U32.unpack_from(data, 4)[0]
        if length > max_body:
            raise ProtocolError("body of %d bytes over the limit of %d" % (length, max_body))
    if n < HEADER_SIZE:
        return None
    _, _, ftype, flags, length, fid = _HEAD.unpack_from(data, 0)
    return ftype, flags, length, fid


def _decode_one(buf, pos, max_body):
    """The frame starting at ``buf[pos:]``: ``(Frame, next_pos)``, or None when
    it is not complete yet. Raises ProtocolError."""
    head = decode_header(bytes(buf[pos:pos + HEADER_SIZE]), max_body)
    if head is None:
        return None
    ftype, _flags, length, fid = head
    end = pos + HEADER_SIZE + length
    if len(buf) < end:
        return None
    pairs = decode_pairs(memoryview(buf)[pos + HEADER_SIZE:end])
    return Frame(ftype, fid, pairs), end


def decode_frames(buffer, max_body=MAX_BODY_DEFAULT):
    """Decodes the complete frames at the start of ``buffer`` (bytes-like).

    Returns ``(frames, rest)``: the list of Frame, and the bytes of an
    incomplete frame left at the end (to be prefixed to what comes next).
    Raises ProtocolError on the first malformed frame, including one whose
    header alone is already wrong, a body longer than ``max_body``, and a
    compressed body::

        frames, rest = decode_frames(rest + sock.recv(65536))
    """
    frames = []
    pos = 0
    while True:
        got = _decode_one(buffer, pos, max_body)
        if got is None:
            return frames, bytes(buffer[pos:])
        frame, pos = got
        frames.append(frame)


# --------------------------------------------------------------------------
# Jobs and replies
# --------------------------------------------------------------------------

class Headers(list):
    """HTTP headers: a list of ``(name, value)`` (names lower-case, in order;
    a name may repeat) that also answers like a dict, case-insensitively::

        job.headers[0]                  # ("host", "example.com")
        job.headers["content-type"]     # first value; KeyError when absent
        job.headers.get("x-a", "")      # first value or a default
        job.headers.get_all("cookie")   # every value
        "accept" in job.headers         # a name (a tuple is looked up as a pair)
    """

    def get(self, name, default=None):
        """The first value of ``name``, or ``default``."""
        name = name.lower()
        for k, v in self:
            if k == name:
                return v
        return default

    def get_all(self, name):
        """Every value of ``name``, in order."""
        name = name.lower()
        return [v for k, v in self if k == name]

    def __getitem__(self, index):
        if isinstance(index, str):
            value = self.get(index)
            if value is None:
                raise KeyError(index)
            return value
        return list.__getitem__(self, index)

    def __contains__(self, item):
        if isinstance(item, str):
            return self.get(item) is not None
        return list.__contains__(self, item)

    def names(self):
        """The distinct names, in order of first appearance."""
        seen = []
        for k, _ in self:
            if k not in seen:
                seen.append(k)
        return seen


_NOT_PARSED = object()


class Job:
    """One job, as a handler receives it.

    Attributes (None when the gate did not send the pair):

    - ``id`` (int): unique within the gate's epoch, the same on every
      resubmission. Make outside effects idempotent by it.
    - ``route`` (str), ``kind`` (``"http"`` or ``"call"``), ``attempt`` (int,
      1 then 2... when resubmitted), ``deadline_ms`` (int: milliseconds the
      client still waits, when it came), ``deadline`` (``time.monotonic()``
      value past which nobody waits, or None).
    - ``conn`` (int): the client connection, target of push()/subscribe()/kick().
    - ``user`` (str): the user the connection is bound to, if any.
    - ``key`` (str): the dispatch key on a by-key route.
    - http: ``method``, ``path`` (after the route's prefix, starting with
      ``/``), ``query`` (after ``?``, None when there is none), ``headers``
      (a Headers: list of (name, value) str, also dict-like; values decoded as
      Latin-1), ``body`` (bytes, ``b""`` when empty).
    - call: ``data`` (the call's JSON parsed with json.loads; evaluated on
      first use, and invalid JSON raises JobError ``bad_data`` / 400 which
      becomes the job's ERROR), ``data_text`` (the JSON text itself).
    - scatter routes: ``part`` and ``parts`` (int: this part, from 0, of
      how many); a reducer's job: ``parts``, ``part_replies`` (dict: part
      number -> the bytes that part replied) and ``missing`` (list of the
      part numbers that did not answer).
    - ``pairs``: the raw (key, bytes value) pairs of the JOB frame.
    - Filled in by the library: ``started_ns`` and ``ended_ns``
      (``time.monotonic_ns()`` when the handler was called and returned) and
      ``written_ns`` (when the reply's write returned), ``backend`` (the Backend).
    """

    def __init__(self, id, pairs, received=None):
        f = Frame(JOB, id, pairs)
        self.id = id
        self.pairs = f.pairs
        self.route = f.text("route", "")
        self.kind = f.text("kind", "call" if f.get("data") is not None else "http")
        self.attempt = f.number("attempt", 1)
        self.deadline_ms = f.number("deadline_ms")
        now = time.monotonic() if received is None else received
        self.deadline = None if self.deadline_ms is None else now + self.deadline_ms / 1000.0
        self.conn = f.number("conn")
        self.user = f.text("user")
        self.key = f.text("key")
        self.method = f.text("method")
        self.path = f.text("path")
        self.query = f.text("query")
        self.headers = Headers((k[2:], v.decode("latin-1")) for k, v in f.pairs
                               if k.startswith("h:"))
        self.body = f.get("body", b"")
        self.data_text = f.text("data")
        self._data = _NOT_PARSED
        self.part = f.number("part")
        self.parts = f.number("parts")
        self.part_replies = {int(k[5:]): v for k, v in f.pairs
                             if k.startswith("part:") and k[5:].isdigit()}
        missing = f.text("missing")
        self.missing = [int(x) for x in missing.split(",") if x.isdigit()] if missing else []
        self.started_ns = self.ended_ns = self.written_ns = None
        self.backend = None
        self._epoch = None
        self._written = False
        self._silent = False

    @classmethod
    def from_frame(cls, frame):
        """A Job from a decoded JOB Frame."""
        if frame.type != JOB:
            raise ValueError("not a JOB frame: %r" % (frame,))
        return cls(frame.id, frame.pairs)

    @property
    def data(self):
        """The call's data, parsed (None for an http job or when absent)."""
        if self._data is _NOT_PARSED:
            if self.data_text is None:
                self._data = None
            else:
                try:
                    self._data = json.loads(self.data_text)
                except ValueError as e:
                    raise JobError("bad_data", "the call's data is not JSON: %s" % e,
                                   status=400) from None
        return self._data

    def header(self, name, default=None):
        """The first value of request header ``name`` (case-insensitive)."""
        return self.headers.get(name, default)

    def remaining(self):
        """Seconds until the client stops waiting (may be negative), or None."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def __repr__(self):
        return "<Job %d %s/%s attempt %d>" % (self.id, self.route, self.kind, self.attempt)


class Reply:
    """A handler's answer.

    - ``status``: HTTP status (200).
    - ``headers``: list of (name, value) or a dict; names are lower-cased.
      For http, ``content-type`` defaults to ``application/octet-stream`` at
      the gate (``application/json`` when only ``data`` is given).
    - ``body``: bytes (or str, sent as UTF-8). For a call without ``data``,
      the client gets the body as a JSON string.
    - ``data``: any JSON-serialisable value, sent as JSON text: a call's
      reply ``data``; for http, the body when there is no ``body``.
    - ``set_user``: bind the calling connection to this user id (a login).
    - ``cache_ttl``: milliseconds the gate may keep the reply in its cache, on
      a route with ``cache`` set (overrides the route's TTL; 0: do not keep it).

    A handler may also return a dict or list (a data reply), bytes or str (a
    body), None (an empty 200), or raise JobError.
    """

    __slots__ = ("status", "headers", "body", "data", "set_user", "cache_ttl")

    def __init__(self, status=200, headers=None, body=b"", data=None, set_user=None,
                 cache_ttl=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.data = data
        self.set_user = set_user
        self.cache_ttl = cache_ttl

    def pairs(self):
        """The REPLY frame's pairs."""
        pairs = [("status", int(self.status))]
        headers = _pair_items(self.headers)
        for name, value in headers:
            if isinstance(value, str):
                try:
                    value = value.encode("latin-1")
                except UnicodeEncodeError:
                    value = value.encode("utf-8")
            pairs.append(("h:" + name.lower(), value))
        body = self.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        if body:
            pairs.append(("body", body))
        if self.data is not None:
            pairs.append(("data", json.dumps(self.data, ensure_ascii=False,
                                             separators=(",", ":"))))
        if self.cache_ttl is not None:
            pairs.append(("cache_ttl", int(self.cache_ttl)))
        if self.set_user is not None:
            pairs.append(("set_user", str(self.set_user)))
        return pairs

    def encode(self, job_id):
        """The REPLY frame for job ``job_id``, as bytes."""
        return encode_frame(REPLY, job_id, self.pairs())

    def __repr__(self):
        return "Reply(status=%r, body=%d bytes, data=%r)" % (
            self.status, len(self.body or b""), self.data)


class JobError(Exception):
    """Raised by a handler: the job failed in a way the client should see. The
    gate answers the client with ``status`` and ``{"error": code, "message":
    message}``; the job is settled and not resubmitted."""

    def __init__(self, code, message="", status=502):
        super().__init__(code, message, status)
        self.code = code
        self.message = message
        self.status = status

    def encode(self, job_id):
        """The ERROR frame for job ``job_id``, as bytes."""
        return encode_frame(ERROR, job_id, [("code", str(self.code)),
                                            ("message", str(self.message)),
                                            ("status", int(self.status))])

    def __str__(self):
        return "%s (%s): %s" % (self.code, self.status, self.message)


class _NoReply:
    def __repr__(self):
        return "NO_REPLY"


NO_REPLY = _NoReply()
NO_REPLY.__doc__ = """Returned by a handler that takes charge of the job itself and
wants the library to send nothing (tests use it for a backend that never
answers). The job stays 'running' for the library: a repeat of it is not run."""


def reply_frame(job_id, result):
    """The frame (bytes) answering job ``job_id`` with a handler's ``result``
    (Reply, dict/list, bytes/str, None, other JSON value, or a JobError
    instance); None for NO_REPLY."""
    if result is NO_REPLY:
        return None
    if isinstance(result, JobError):
        return result.encode(job_id)
    if isinstance(result, Reply):
        return result.encode(job_id)
    if result is None:
        return Reply().encode(job_id)
    if isinstance(result, (bytes, bytearray, memoryview, str)):
        return Reply(body=bytes(result) if not isinstance(result, str) else result).encode(job_id)
    return Reply(data=result).encode(job_id)


# --------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------

def _parse_addr(addr):
    """ "host:port" or "[v6]:port" -> (host, port)."""
    if isinstance(addr, tuple):
        return addr
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("connect must be HOST:PORT, got %r" % addr)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def _number_or_text(value):
    if value is None:
        return None
    return int(value) if value.isdigit() else value.decode("utf-8", "replace")


class _Link:
    """One connection to the gate."""

    def __init__(self, sock, serial):
        self.sock = sock
        self.serial = serial
        self.wlock = threading.Lock()   # one frame at a time on the socket
        self.closed = False             # the reader stopped or a write failed
        self.ready = False              # the gate's HELLO arrived
        self.held = set()               # job ids received here and not answered yet
        self.writing = 0                # replies claimed for this link, being written
        self.drain_sent = False
        self.reader = None

    def __repr__(self):
        return "<link %d>" % self.serial


class Backend:
    """A tidegate backend.

    ``Backend(routes, name=None, capacity=64, connect="127.0.0.1:7070",
    workers=None, on_done=None, reconnect=True, on_connect=None)``

    - ``routes``: the routes served, announced in HELLO: a list of names, a
      comma-separated string, or a dict ``{route: handler}``. Routes given to
      route()/handle() are added.
    - ``name``: this instance, for the gate's logs and /stats (default
      ``HOST-PID``).
    - ``capacity``: the most jobs the gate sends at once (1 to 65536).
    - ``connect``: the gate's backend listener, ``HOST:PORT``.
    - ``listen``: instead of connecting, listen on ``HOST:PORT`` and serve
      the gate that dials in (tidegate's ``gate.backends``); one link at a
      time, and the next dial after it drops. Port 0 picks a free port
      (``listening_port``).
    - ``workers``: handler threads (default ``min(capacity, 32)``).
    - ``on_done(job)``: called once per handler execution, right after its
      reply (or job ERROR) was written to the gate's socket: the job is done.
      Never called for a job whose reply was not written (the process died,
      or the link dropped and the job was forgotten, e.g. settled at its
      deadline). If the link dropped before the write, it is called when the
      remembered reply is written on a later link.
      A drain ends only after the ``on_done`` of every reply it wrote.
    - ``reconnect``: when the link drops, connect again (backoff 0.1 s doubling
      to 5 s). With False, run() returns when the link closes.
    - ``on_connect(info)``: called (in the reader thread) when the gate's
      HELLO arrives: ``info`` is a dict with ``version``, ``epoch``,
      ``max_frame``, ``ping_ms``, ``features`` (a list).
    """

    def __init__(self, routes=(), name=None, capacity=64, connect="127.0.0.1:7070",
                 workers=None, on_done=None, reconnect=True, on_connect=None, listen=None):
        if isinstance(routes, str):
            routes = [r for r in routes.split(",") if r]
        self._handlers = {}
        self._routes = []
        if hasattr(routes, "items"):
            for r, fn in routes.items():
                self.handle(r, fn)
        else:
            for r in routes:
                self._add_route(r)
        self.name = name or "%s-%d" % (socket.gethostname(), os.getpid())
        capacity = int(capacity)
        if not 1 <= capacity <= 65536:
            raise ValueError("capacity must be 1 to 65536")
        self.capacity = capacity
        self.address = _parse_addr(connect)
        self._listener = None
        if listen:
            self._listener = socket.create_server(_parse_addr(listen), backlog=8)
            self._listener.settimeout(0.2)          # to notice stop() while waiting
        self.workers = int(workers) if workers else min(capacity, 32)
        self.on_done = on_done
        self.on_connect = on_connect
        self.reconnect = reconnect

        # Everything below is guarded by _cv (a Condition over an RLock, so a
        # signal handler calling drain() or stop() cannot deadlock the thread
        # it interrupted).
        self._cv = threading.Condition(threading.RLock())
        self._link = None
        self._serial = 0
        self._epoch = None            # the gate's epoch; memory is kept while it holds
        self._max_frame = MAX_BODY_DEFAULT
        self._ping_ms = None
        self._gate = {}
        self._replies = {}            # job id -> [frame bytes, Job until first written]
        self._running = {}            # job id -> Job whose handler runs (or NO_REPLY)
        self._done_below = 0
        self._runs = 0
        self._repeats = 0
        self._stopping = False
        self._draining = False
        self._drained = False
        self._running_loop = False
        self._jobs = queue.SimpleQueue()
        self._threads = []
        self.connected = threading.Event()   # set while a link is up and past HELLO

    # -- registration ------------------------------------------------------

    def _add_route(self, route):
        if not route or "," in route:
            raise ValueError("bad route name %r" % (route,))
        if route not in self._routes:
            self._routes.append(route)

    def handle(self, route, fn):
        """Registers ``fn(job)`` as the handler of ``route`` (and serves it)."""
        self._add_route(route)
        self._handlers[route] = fn
        return fn

    def route(self, route):
        """Decorator: ``@backend.route("orders")`` registers the function."""
        def register(fn):
            return self.handle(route, fn)
        return register

    @property
    def routes(self):
        """The routes announced in HELLO."""
        return list(self._routes)

    # -- state -------------------------------------------------------------

    @property
    def runs(self):
        """Handler executions so far."""
        return self._runs

    @property
    def repeats(self):
        """Jobs answered without running the handler (from memory, or a
        duplicate that arrived while its first copy ran)."""
        return self._repeats

    @property
    def epoch(self):
        """The gate's epoch from its last HELLO (None before)."""
        return self._epoch

    @property
    def gate(self):
        """The gate's last HELLO as a dict (see on_connect)."""
        return dict(self._gate)

    def remembered(self):
        """How many replies are remembered (by job id) right now."""
        with self._cv:
            return len(self._replies)

    def stats(self):
        """A dict: runs, repeats, remembered, running, epoch, connected."""
        with self._cv:
            return {"runs": self._runs, "repeats": self._repeats,
                    "remembered": len(self._replies), "running": len(self._running),
                    "epoch": self._epoch, "connected": self.connected.is_set()}

    # -- control frames ----------------------------------------------------

    def _ready_link(self):
        link = self._link
        if link is None or link.closed or not link.ready:
            raise NotConnected("no link to the gate")
        return link

    def _send(self, ftype, pairs):
        frame = encode_frame(ftype, 0, pairs)
        if len(frame) - HEADER_SIZE > self._max_frame:
            raise ValueError("frame of %d bytes over the gate's max_frame %d"
                             % (len(frame) - HEADER_SIZE, self._max_frame))
        link = self._ready_link()
        if not self._write(link, frame):
            raise NotConnected("the link to the gate closed")

    @staticmethod
    def _conn_text(conn):
        if conn is None:
            raise ValueError("conn is required")
        return str(conn)

    def push(self, conn=None, user=None, channel=None, data=None):
        """Sends a message: to one client connection (``conn``, from a Job),
        every connection of a ``user``, or a ``channel`` (published like any
        publish). Exactly one target. ``data``: a dict or list (sent as JSON
        text), str or bytes (as is; the gate takes it as JSON when it parses),
        or another JSON value. Raises NotConnected when there is no link."""
        targets = [(k, v) for k, v in (("conn", conn), ("user", user), ("channel", channel))
                   if v is not None]
        if len(targets) != 1:
            raise ValueError("push needs exactly one of conn, user, channel")
        if not isinstance(data, (str, bytes, bytearray, memoryview)):
            data = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        key, target = targets[0]
        self._send(PUSH, [(key, str(target)), ("data", data)])

    def subscribe(self, conn, channel):
        """Subscribes client connection ``conn`` to ``channel``, as if it had
        sent ``{"op":"sub"}`` itself."""
        self._send(SUBSCRIBE, [("conn", self._conn_text(conn)), ("channel", channel)])

    def unsubscribe(self, conn, channel):
        """Unsubscribes client connection ``conn`` from ``channel``."""
        self._send(UNSUBSCRIBE, [("conn", self._conn_text(conn)), ("channel", channel)])

    def kick(self, conn, message=""):
        """Closes client connection ``conn`` (close reason ``kicked``)."""
        self._send(KICK, [("conn", self._conn_text(conn)), ("message", message)])

    def ping(self, **pairs):
        """Sends a PING to the gate (its PONG is ignored)."""
        self._send(PING, list(pairs.items()))

    def send_raw(self, data):
        """Writes ``data`` to the link as it is (for tests that must break
        the protocol). Raises NotConnected when there is no link."""
        link = self._link
        if link is None or link.closed:
            raise NotConnected("no link to the gate")
        if not self._write(link, bytes(data)):
            raise NotConnected("the link to the gate closed")

    def drain(self):
        """Asks the gate for no new jobs (DRAIN); run() returns once the jobs
        in flight on the link are answered, closing the link (jobs a handler
        kept with NO_REPLY do not hold it up). Safe to call from a signal
        handler and from any thread."""
        with self._cv:
            self._draining = True
            self._cv.notify_all()

    def stop(self):
        """Stops now: closes the link and makes run() return. Handlers still
        running are abandoned (their replies are not sent). Safe to call from a
        signal handler and from any thread."""
        with self._cv:
            self._stopping = True
            link = self._link
            self._cv.notify_all()
        if link is not None:
            self._shutdown(link)

    # -- run loop ----------------------------------------------------------

    def run(self):
        """Connects and serves until stop(), the end of a drain, or (with
        reconnect=False) the end of the link. Blocking. With reconnect=False a
        failed connect raises OSError."""
        with self._cv:
            if self._running_loop:
                raise RuntimeError("run() is already running")
            self._running_loop = True
            self._stopping = False
            self._drained = False
        self._start_workers()
        backoff = 0.1
        try:
            while True:
                with self._cv:
                    if self._stopping or self._draining:
                        return
                try:
                    link = self._open()
                except OSError as e:
                    if not self.reconnect:
                        raise
                    log.info("%s: connect to %s:%d failed: %s", self.name,
                             self.address[0], self.address[1], e)
                else:
                    self._serve(link)
                    if link.ready:
                        backoff = 0.1
                    with self._cv:
                        if self._stopping or self._drained or self._draining:
                            return
                    if not self.reconnect:
                        return
                    log.info("%s: link closed, reconnecting in %.1f s", self.name, backoff)
                with self._cv:
                    if not self._stopping:
                        self._cv.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            with self._cv:
                self._running_loop = False

    def _start_workers(self):
        while len(self._threads) < self.workers:
            t = threading.Thread(target=self._worker, name="tidegate-worker-%d"
                                 % len(self._threads), daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def listening_port(self):
        """The port listened on (listen mode), else None."""
        return self._listener.getsockname()[1] if self._listener else None

    def _dialed(self):
        """Listen mode: waits for the gate to dial in."""
        while True:
            with self._cv:
                if self._stopping or self._draining:
                    raise OSError("stopping")
            try:
                sock, _ = self._listener.accept()
                return sock
            except socket.timeout:
                continue

    def _open(self):
        """Connects (or takes the gate's dial), sends HELLO and starts the
        reader thread."""
        if self._listener:
            sock = self._dialed()
        else:
            sock = socket.create_connection(self.address, timeout=10)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = encode_frame(HELLO, 0, [("version", VERSION), ("name", self.name),
                                        ("routes", ",".join(self._routes)),
                                        ("capacity", self.capacity)])
        try:
            sock.sendall(hello)
        except OSError:
            sock.close()
            raise
        with self._cv:
            self._serial += 1
            link = _Link(sock, self._serial)
            self._link = link
        link.reader = threading.Thread(target=self._read_loop, args=(link,),
                                       name="tidegate-reader-%d" % link.serial, daemon=True)
        link.reader.start()
        return link

    def _serve(self, link):
        """Waits while the link lives; sends DRAIN and ends it when asked."""
        with self._cv:
            while True:
                if link.closed or self._stopping:
                    break
                if self._draining and link.ready:
                    if not link.drain_sent:
                        link.drain_sent = True
                        self._cv.release()   # the write happens outside the state lock
                        try:
                            self._write(link, encode_frame(DRAIN, 0))
                        finally:
                            self._cv.acquire()
                        continue
                    if not link.writing and not self._in_flight(link):
                        self._drained = True
                        break
                self._cv.wait(0.5)
            drained = self._drained
        if drained and not link.closed:
            # Replies are written; say we are done and wait (briefly) for the gate
            # to close its side, so that nothing of ours is lost to a reset.
            try:
                link.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            link.reader.join(2.0)
        self._shutdown(link)
        link.reader.join(5.0)
        with self._cv:
            if self._link is link:
                self._link = None
        try:
            link.sock.close()
        except OSError:
            pass

    def _in_flight(self, link):
        """Jobs the link holds that will be answered (not those a handler kept
        with NO_REPLY). Under _cv."""
        n = 0
        for jid in link.held:
            job = self._running.get(jid)
            if job is None or not job._silent:
                n += 1
        return n

    def _shutdown(self, link):
        with self._cv:
            link.closed = True
            if self._link is link:
                self.connected.clear()
            self._cv.notify_all()
        try:
            link.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write(self, link, data):
        """Writes a frame; True when it was written whole. A failed write ends
        the link."""
        with link.wlock:
            if link.closed:
                return False
            try:
                link.sock.sendall(data)
                return True
            except OSError as e:
                log.info("%s: write failed: %s", self.name, e)
        self._shutdown(link)
        return False

    # -- reader ------------------------------------------------------------

    def _violation(self, link, message):
        log.warning("%s: protocol error from the gate: %s", self.name, message)
        try:
            self._write(link, encode_frame(ERROR, 0, [("code", "protocol"),
                                                      ("message", message[:200])]))
        except ValueError:
            pass

    def _read_loop(self, link):
        try:
            self._read_frames(link)
        except Exception:   # a bug here must not leave a half-dead link
            log.error("%s: reader failed:\n%s", self.name, traceback.format_exc())
        finally:
            self._shutdown(link)

    def _read_frames(self, link):
        sock = link.sock
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        buf = bytearray()
        while not link.closed:
            # A gate that sends nothing (not even its PING) for three intervals is gone.
            silence = 3 * self._ping_ms if link.ready and self._ping_ms else 30000
            if not poller.poll(silence):
                log.warning("%s: the gate was silent for %d ms; closing the link",
                            self.name, silence)
                return
            try:
                data = sock.recv(1 << 18)
            except InterruptedError:
                continue
            except OSError as e:
                if not link.closed:
                    log.info("%s: link read failed: %s", self.name, e)
                return
            if not data:
                return
            buf += data
            pos = 0
            while not link.closed:
                try:
                    got = _decode_one(buf, pos, self._max_frame)
                except ProtocolError as e:
                    self._violation(link, str(e))
                    return
                if got is None:
                    break
                frame, pos = got
                if not self._on_frame(link, frame):
                    return
            del buf[:pos]

    def _on_frame(self, link, frame):
        """Handles one frame from the gate; False ends the link."""
        ftype = frame.type
        if not link.ready:
            if ftype != HELLO:
                self._violation(link, "%s before HELLO" % TYPE_NAMES[ftype])
                return False
            return self._on_hello(link, frame)
        if ftype == JOB:
            self._on_job(link, frame)
        elif ftype == PING:
            self._write(link, encode_frame(PONG, frame.id, frame.pairs))
        elif ftype == PONG:
            pass
        elif ftype == DONE_BELOW:
            self._forget_below(frame.id)
        elif ftype == ERROR:
            code, message = frame.text("code", ""), frame.text("message", "")
            if frame.id == 0:
                log.warning("%s: the gate closes the link: %s: %s", self.name, code, message)
                return False
            log.warning("%s: the gate reports an error on job %d: %s: %s",
                        self.name, frame.id, code, message)
        else:
            self._violation(link, "unexpected %s from the gate" % TYPE_NAMES[ftype])
            return False
        return True

    def _on_hello(self, link, frame):
        epoch = _number_or_text(frame.get("epoch"))
        version = frame.number("version", VERSION)
        if version != VERSION:
            self._violation(link, "gate speaks version %r" % (version,))
            return False
        features = [f for f in frame.text("features", "").split(",") if f]
        info = {"version": version, "epoch": epoch,
                "max_frame": frame.number("max_frame", MAX_BODY_DEFAULT),
                "ping_ms": frame.number("ping_ms"), "features": features}
        with self._cv:
            if self._epoch is not None and epoch != self._epoch:
                # A restarted gate: its job ids start over, what we remember is moot.
                log.info("%s: the gate's epoch changed (%r -> %r): forgetting %d replies",
                         self.name, self._epoch, epoch, len(self._replies))
                self._replies.clear()
                self._running.clear()
                self._done_below = 0
            self._epoch = epoch
            self._max_frame = info["max_frame"]
            self._ping_ms = info["ping_ms"]
            self._gate = info
            link.ready = True
            self.connected.set()
            self._cv.notify_all()
        log.info("%s: connected to %s:%d (epoch %r)", self.name, self.address[0],
                 self.address[1], epoch)
        if self.on_connect is not None:
            try:
                self.on_connect(dict(info))
            except Exception:
                log.error("%s: on_connect failed:\n%s", self.name, traceback.format_exc())
        return True

    def _on_job(self, link, frame):
        job = Job(frame.id, frame.pairs)
        job.backend = self
        frame_out = None
        with self._cv:
            job._epoch = self._epoch
            entry = self._replies.get(job.id)
            if entry is not None:
                # Answered before: from memory, without running the handler.
                self._repeats += 1
                frame_out, unwritten_job = entry
                link.writing += 1
            elif job.id in self._running or job.id in link.held:
                # Its first copy still runs: it answers on this link when done.
                if job.id not in link.held:
                    self._repeats += 1
                link.held.add(job.id)
                return
            else:
                link.held.add(job.id)
                self._running[job.id] = job
        if frame_out is None:
            self._jobs.put(job)
            return
        self._deliver(link, job.id, frame_out, unwritten_job)

    def _forget_below(self, below):
        with self._cv:
            if below <= self._done_below:
                return
            self._done_below = below
            for jid in [j for j in self._replies if j < below]:
                del self._replies[jid]
            # Jobs a handler kept without replying (NO_REPLY) are settled too.
            for jid in [j for j, job in self._running.items() if job._silent and j < below]:
                del self._running[jid]

    # -- workers -----------------------------------------------------------

    def _worker(self):
        while True:
            job = self._jobs.get()
            try:
                self._execute(job)
            except Exception:
                log.error("%s: job %d: %s", self.name, job.id, traceback.format_exc())

    def _execute(self, job):
        handler = self._handlers.get(job.route)
        job.started_ns = time.monotonic_ns()
        try:
            if handler is None:
                raise JobError("no_handler", "no handler for route %r" % job.route)
            with self._cv:
                self._runs += 1
            result = handler(job)
        except JobError as e:
            result = e
        except Exception as e:
            log.error("%s: handler of %r failed on job %d:\n%s", self.name, job.route,
                      job.id, traceback.format_exc())
            result = JobError("internal", "the handler raised %s" % type(e).__name__)
        job.ended_ns = time.monotonic_ns()
        try:
            frame = reply_frame(job.id, result)
        except (TypeError, ValueError) as e:
            log.error("%s: job %d: cannot encode the reply: %s", self.name, job.id, e)
            frame = JobError("internal", "bad reply: %s" % e).encode(job.id)
        if frame is None:
            with self._cv:    # NO_REPLY: the job stays 'running'; nothing is sent
                job._silent = True
                self._cv.notify_all()
            return
        if len(frame) - HEADER_SIZE > self._max_frame:
            frame = JobError("too_large", "reply of %d bytes over max_frame %d"
                             % (len(frame) - HEADER_SIZE, self._max_frame)).encode(job.id)
        self._finish(job, frame)

    def _finish(self, job, frame):
        """Remembers the reply, and writes it if the current link holds the job."""
        with self._cv:
            if self._running.get(job.id) is job:
                del self._running[job.id]
            if job._epoch != self._epoch:
                return    # a job of a gate that has restarted since: nobody holds it
            if job.id >= self._done_below:
                self._replies[job.id] = [frame, job]
            link = self._link
            if link is None or link.closed or job.id not in link.held:
                return    # the link it came on dropped: answered from memory if resent
            link.held.discard(job.id)
            link.writing += 1
        self._deliver(link, job.id, frame, job)

    def _deliver(self, link, job_id, frame, job):
        """Writes a claimed reply; the first successful write makes the job done."""
        ok = self._write(link, frame)
        first = False
        with self._cv:
            if ok and job is not None and not job._written:
                job._written = first = True
                entry = self._replies.get(job_id)
                if entry is not None:
                    entry[1] = None    # the Job (and its body) is not needed any more
        if first:
            job.written_ns = time.monotonic_ns()
            if self.on_done is not None:
                try:
                    self.on_done(job)
                except Exception:
                    log.error("%s: on_done failed:\n%s", self.name, traceback.format_exc())
        # Counted as writing until on_done has returned: a drain ends only then.
        with self._cv:
            link.writing -= 1
            self._cv.notify_all()


def main(argv=None):
    """``python3 tidegate_backend.py [HOST:PORT] [ROUTES]``: an echo backend,
    for trying the gate out by hand."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    connect = argv[0] if argv else "127.0.0.1:7070"
    routes = argv[1] if len(argv) > 1 else "echo"
    backend = Backend(routes, connect=connect)
    for r in backend.routes:
        backend.handle(r, lambda job: Reply(body=job.body, data=job.data))
    try:
        backend.run()
    except KeyboardInterrupt:
        backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
