#!/usr/bin/python3
"""chat.py - a chat room backend: calls in, pushes out.

Route "chat", driven by calls from WebSocket clients (`{"op":"call",
"route":"chat","id":1,"data":{...}}`):

    {"op": "join", "room": "lobby"}                  subscribes the calling connection
                                                     to channel "room.lobby"
    {"op": "say", "room": "lobby", "text": "hi"}     publishes {"from":...,"text":"hi"}
                                                     on "room.lobby"
    {"op": "whisper", "to": CONN, "text": "psst"}    pushes to one connection (CONN is
                                                     the "from" of a message)
    {"op": "login", "user": "ann"}                   binds the connection to user ann
    {"op": "dm", "to_user": "ann", "text": "hi"}     pushes to every connection of ann

Each call is answered {"ok": true}, or an error for an unknown op or a bad
argument.

    python3 examples/chat.py [--connect 127.0.0.1:7070]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "clients", "python"))

from tidegate_backend import Backend, JobError, Reply  # noqa: E402


def text_arg(data, name):
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise JobError("bad_input", "%s must be a non-empty string" % name, status=400)
    return value


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connect", default="127.0.0.1:7070")
    args = p.parse_args()

    backend = Backend(["chat"], name="chat-%d" % os.getpid(), connect=args.connect)

    @backend.route("chat")
    def chat(job):
        data = job.data if isinstance(job.data, dict) else {}
        op = data.get("op")
        sender = job.user or job.conn          # who speaks: the user when logged in
        if op == "join":
            backend.subscribe(job.conn, "room." + text_arg(data, "room"))
        elif op == "say":
            room = text_arg(data, "room")
            backend.push(channel="room." + room,
                         data={"from": sender, "room": room, "text": text_arg(data, "text")})
        elif op == "login":
            # A real backend checks a password or a token here.
            user = text_arg(data, "user")
            return Reply(data={"ok": True, "user": user}, set_user=user)
        elif op == "dm":
            backend.push(user=text_arg(data, "to_user"),
                         data={"from": sender, "dm": text_arg(data, "text")})
        elif op == "whisper":
            to = data.get("to")
            if not str(to).isdigit():
                raise JobError("bad_input", "to must be a connection id", status=400)
            backend.push(conn=to, data={"from": sender, "whisper": text_arg(data, "text")})
        else:
            raise JobError("bad_op", "op must be join, say, whisper, login or dm", status=400)
        return {"ok": True}

    try:
        backend.run()
    except KeyboardInterrupt:
        backend.stop()


if __name__ == "__main__":
    main()
