#!/usr/bin/python3
"""A minimal GRIP origin for the Pushpin benchmark peer (Python 3 standard library only).

Pushpin proxies every request to this server (route `* 127.0.0.1:PORT,over_http`) and
holds the client connection according to the GRIP instructions answered here:

  GET /sub/{ch} with Accept: text/event-stream
      200, Content-Type: text/event-stream, Grip-Hold: stream, Grip-Channel: {ch},
      body ":\\n\\n" (one SSE comment line): Pushpin sends that, then keeps the stream
      open and appends what is published to {ch} in the http-stream format.
  POST /sub/{ch} with Content-Type: application/websocket-events (Pushpin's
      WebSocket-over-HTTP; the client opened a WebSocket on /sub/{ch})
      OPEN    -> OPEN, then a TEXT event c:{"type":"subscribe","channel":"{ch}"}
                 (Sec-WebSocket-Extensions: grip makes "c:" a control message): the
                 connection receives what is published to {ch} in the ws-message format.
      PING    -> PONG with the same content (Pushpin passes the client's pings on).
      TEXT/BINARY/PONG from the client -> nothing (messages are ignored).
      CLOSE   -> CLOSE (acknowledged);  DISCONNECT -> nothing.
  GET /healthz -> 200 "ok\\n" (readiness probe through Pushpin).
  anything else -> 404 (GET /sub/{ch} without text/event-stream: 406).

Usage: grip_backend.py [--host 127.0.0.1] --port PORT
"""

import argparse
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHANNEL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@/=+-")


def parse_events(body):
    """WebSocket-over-HTTP events: TYPE[ HEXLEN]\\r\\n[CONTENT\\r\\n] ..."""
    events = []
    i = 0
    while i < len(body):
        end = body.find(b"\r\n", i)
        if end < 0:
            raise ValueError("truncated event line")
        line = body[i:end].decode("ascii")
        i = end + 2
        if " " in line:
            etype, hexlen = line.split(" ", 1)
            n = int(hexlen, 16)
            content = body[i:i + n]
            if len(content) != n or body[i + n:i + n + 2] != b"\r\n":
                raise ValueError("truncated event content")
            i += n + 2
        else:
            etype, content = line, None
        events.append((etype, content))
    return events


def event(etype, content=None):
    if content is None:
        return etype.encode("ascii") + b"\r\n"
    return b"%s %x\r\n%s\r\n" % (etype.encode("ascii"), len(content), content)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Pushpin's HTTP client (zurl)
    server_version = "grip-backend"

    def log_message(self, fmt, *args):  # quiet: no access log
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-type" for k, _ in headers):
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def channel(self):
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/sub/"):
            return None
        ch = urllib.parse.unquote(path[len("/sub/"):])
        if not 1 <= len(ch) <= 128 or not set(ch) <= CHANNEL_CHARS:
            return None
        return ch

    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path == "/healthz":
            return self.reply(200, b"ok\n")
        ch = self.channel()
        if ch is None:
            return self.reply(404, b"not found\n")
        if "text/event-stream" not in self.headers.get("Accept", ""):
            return self.reply(406, b"subscribe with Accept: text/event-stream or WebSocket\n")
        self.reply(200, b":\n\n", (
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", ch),
        ))

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        ch = self.channel()
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ch is None or ctype != "application/websocket-events":
            return self.reply(404, b"not found\n")
        try:
            events = parse_events(body)
        except ValueError as e:
            return self.reply(400, ("bad events: %s\n" % e).encode())
        out = []
        for etype, content in events:
            if etype == "OPEN":
                out.append(event("OPEN"))
                sub = json.dumps({"type": "subscribe", "channel": ch}, separators=(",", ":"))
                out.append(event("TEXT", b"c:" + sub.encode()))
            elif etype == "PING":
                out.append(event("PONG", content or None))  # Pushpin relays client pings here
            elif etype == "CLOSE":
                out.append(event("CLOSE", b"\x03\xe8"))  # 1000, normal
        self.reply(200, b"".join(out), (
            ("Content-Type", "application/websocket-events"),
            ("Sec-WebSocket-Extensions", "grip"),
        ))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    srv = Server((a.host, a.port), Handler)
    print("grip_backend listening on %s:%d" % (a.host, a.port), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
