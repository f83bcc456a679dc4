"""tidegate-bench (tools/tidegate-bench.c, tools/bench/) against the real server: every
transport delivers every message once and in order, channels, churn and idle modes, the
server figures read from /proc, and the tool's own strictness (loopback only, malformed
responses counted, never a crash)."""

import os
import socket
import subprocess
import threading

import pytest

import tidegate


def bench_path():
    return os.path.join(os.path.dirname(tidegate.binary_path()), "tidegate-bench")


def run_bench(*args, timeout=120):
    run = subprocess.run([bench_path(), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
    result = {}
    if lines:
        for field in lines[0].split()[2:]:
            k, v = field.split("=", 1)
            result[k] = v
    return run, result


@pytest.mark.parametrize("transport", ["ws", "sse", "stream", "poll"])
def test_every_transport_delivers_everything_once_in_order(make_server, transport):
    server = make_server(io_threads=2)
    run, r = run_bench("--port", server.port, "--transport", transport, "--channel", "t-" + transport,
                       "--subs", 100, "--rate", 200, "--count", 200, "--duration", 60,
                       "--pid", server.pid)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len([l for l in run.stdout.splitlines() if l.startswith("RESULT ")]) == 1
    assert r["transport"] == transport
    assert r["connected"] == "100" and r["connect_errors"] == "0"
    assert r["published"] == "200" and r["pub_errors"] == "0"
    assert r["deliveries"] == "20000", run.stdout
    assert (r["lost"], r["dup"], r["disorder"], r["errors"]) == ("0", "0", "0", "0")
    assert r["complete"] == "1"
    assert int(r["p50_us"]) <= int(r["p90_us"]) <= int(r["p99_us"]) <= int(r["max_us"])
    assert float(r["cpu_us_per_delivery"]) >= 0
    # The whole box's CPU holds the load tool's own (and the server's).
    assert 0 < float(r["client_us_per_delivery"]) <= float(r["box_us_per_delivery"])
    assert int(r["fds_up"]) >= int(r["fds_before"]) + 100


def test_channels_random_pipelined_over_several_connections(make_server):
    """--rate 0: as fast as answered over 3 connections, 5 channels chosen at random; a
    channel keeps to one connection, so nothing arrives out of order."""
    server = make_server(io_threads=2)
    run, r = run_bench("--port", server.port, "--channel", "multi", "--channels", 5, "--pub-random",
                       "--pub-conns", 3, "--subs", 50, "--rate", 0, "--count", 2000)
    assert run.returncode == 0, run.stdout + run.stderr
    assert r["channels"] == "5" and r["published"] == "2000" and r["complete"] == "1"
    assert (r["lost"], r["dup"], r["disorder"]) == ("0", "0", "0")
    assert int(r["deliveries"]) > 0


def test_churn_reconnects_without_loss_and_without_leaking_server_fds(make_server):
    server = make_server(io_threads=2)
    run, r = run_bench("--port", server.port, "--channel", "churn", "--channels", 2, "--subs", 100,
                       "--rate", 100, "--count", 200, "--churn", 20, "--pid", server.pid)
    assert run.returncode == 0, run.stdout + run.stderr
    assert r["mode"] == "churn" and int(r["churned"]) >= 20
    assert int(r["churn_deliveries"]) > 0
    assert (r["lost"], r["dup"], r["disorder"]) == ("0", "0", "0")
    assert r["fds_after"] == r["fds_before"]
    assert int(r["rss_up_kb"]) > 0 and int(r["rss_after_kb"]) > 0  # figures, not "-"


def test_idle_holds_the_connections_and_measures_memory(make_server):
    server = make_server(io_threads=2)
    run, r = run_bench("--port", server.port, "--transport", "sse", "--channel", "idle",
                       "--subs", 300, "--idle", 0.5, "--pid", server.pid)
    assert run.returncode == 0, run.stdout + run.stderr
    assert r["mode"] == "idle" and r["connected"] == "300" and r["closed"] == "0"
    assert r["published"] == "0" and r["deliveries"] == "0"
    assert int(r["fds_up"]) >= int(r["fds_before"]) + 300
    int(r["rss_per_conn"]), int(r["pss_per_conn"])         # figures, not "-"


def test_refuses_targets_off_loopback():
    run, _ = run_bench("--sub-url", "ws://10.1.2.3:8080/sub/{ch}", "--subs", 1, timeout=10)
    assert run.returncode == 2
    assert "non-loopback" in run.stderr


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",   # wrong accept key
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",                      # malformed head
    b"garbage\r\n\r\n",
])
def test_malformed_responses_are_counted_not_fatal(answer):
    """A fake server answering every subscriber wrongly: each is a counted connect error,
    the first one printed; the tool exits 1 with its RESULT line."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    conns = []

    def serve():
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            conns.append(c)
            c.recv(4096)
            c.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        run, r = run_bench("--port", lsock.getsockname()[1], "--subs", 5, "--count", 0,
                           "--duration", 20, timeout=30)
    finally:
        lsock.close()
        for c in conns:
            c.close()
    assert run.returncode == 1, run.stdout + run.stderr
    assert r["connected"] == "0" and r["connect_errors"] == "5"
    assert "tidegate-bench: first" in run.stderr
