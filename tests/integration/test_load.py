"""Load: 10,000 concurrent keep-alive clients, and 50,000 connect/close cycles that
must leave the descriptor count and memory where they were.

Clients spread their source addresses over 127.0.0.2 .. 127.0.0.254 (bound before
connect), so that neither side runs out of ephemeral ports or TIME_WAIT slots."""

import asyncio
import socket
import struct
import time

from tidegate import client_socket, source_address

REQ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
CLIENTS = 10000
CYCLES = 50000
WARMUP_CYCLES = 5000
CONCURRENCY = 100


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, body


async def open_client(port, i, sem):
    loop = asyncio.get_running_loop()
    async with sem:
        sock = client_socket(source_address(i), blocking=False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=65536)
        writer.write(REQ)
        status, body = await read_response(reader)
        assert (status, body) == (200, b"ok\n"), (i, status, body)
        return reader, writer


async def ten_thousand_clients(srv, deadline_s):
    sem = asyncio.Semaphore(500)           # connects in flight; all stay open
    clients = await asyncio.wait_for(
        asyncio.gather(*(open_client(srv.port, i, sem) for i in range(CLIENTS))), deadline_s)
    st = await asyncio.get_running_loop().run_in_executor(None, srv.stats)
    assert st["connections"]["live"] == CLIENTS + 1, st["connections"]

    # Everyone asks again at once, on the same connections.
    for _, w in clients:
        w.write(REQ)

    async def second(r):
        return await read_response(r)
    answers = await asyncio.wait_for(asyncio.gather(*(second(r) for r, _ in clients)), deadline_s)
    assert all(a == (200, b"ok\n") for a in answers)
    for _, w in clients:
        w.close()
    return st


def test_10000_concurrent_keepalive_clients(server):
    fds = server.fd_count()
    base = server.stats()
    start = time.monotonic()
    asyncio.run(ten_thousand_clients(server, 60 * server.slow))
    elapsed = time.monotonic() - start
    st = server.wait_live(1, timeout=20)
    assert st["connections"]["accepted"] - base["connections"]["accepted"] == CLIENTS + server.stats_calls - 1
    assert st["requests"] - base["requests"] == 2 * CLIENTS + server.stats_calls - 1
    server.wait_fds(fds, timeout=10)
    assert all(v == 0 for v in st["errors"].values()), st["errors"]
    print("10,000 clients: %.1fs" % elapsed)


async def cycle_worker(port, wid, n, failures):
    loop = asyncio.get_running_loop()
    for k in range(n):
        i = wid * n + k
        sock = client_socket(source_address(i), blocking=False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            if k % 2 == 0:                    # half of them make a request first
                await loop.sock_sendall(sock, REQ)
                data = b""
                while not data.endswith(b"\r\n\r\nok\n"):
                    chunk = await loop.sock_recv(sock, 4096)
                    if not chunk:
                        raise ConnectionError("closed after %r" % data)
                    data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError("bad response %r" % data)
            if k % 4 == 3:                    # a quarter end with a reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as e:
            failures.append("%d: %r" % (i, e))
        finally:
            sock.close()


async def cycles(port, total, concurrency, deadline_s):
    failures = []
    per = total // concurrency
    await asyncio.wait_for(asyncio.gather(
        *(cycle_worker(port, w, per, failures) for w in range(concurrency))), deadline_s)
    return failures


def test_50000_connect_close_cycles_leak_nothing(server):
    fds = server.fd_count()
    # Warm up at the same concurrency, so that pools reach their working size
    # before the memory baseline is taken.
    failures = asyncio.run(cycles(server.port, WARMUP_CYCLES, CONCURRENCY, 60 * server.slow))
    assert not failures, failures[:10]
    base = server.wait_live(1, timeout=10)
    server.wait_fds(fds, timeout=5)
    rss0 = server.rss()

    start = time.monotonic()
    failures = asyncio.run(cycles(server.port, CYCLES, CONCURRENCY, 120 * server.slow))
    elapsed = time.monotonic() - start
    assert not failures, "%d failed cycles, e.g. %s" % (len(failures), failures[:10])

    st = server.wait_live(1, timeout=10)
    calls = server.stats_calls
    assert st["connections"]["accepted"] - base["connections"]["accepted"] >= CYCLES
    assert st["connections"]["closed"] == st["connections"]["accepted"] - 1
    assert all(v == 0 for v in st["errors"].values()), st["errors"]
    server.wait_fds(fds, timeout=5)
    rss1 = server.rss()
    print("50,000 cycles: %.1fs (%.0f/s); RSS %d -> %d KiB; %d stats calls"
          % (elapsed, CYCLES / elapsed, rss0 >> 10, rss1 >> 10, calls))
    # Still serving.
    assert server.get("/healthz").body == b"ok\n"
    # Under ASan the allocator's quarantine makes RSS meaningless (LeakSanitizer
    # checks at exit instead).
    if not server.asan:
        assert rss1 <= rss0 * 1.10, "RSS grew from %d to %d KiB" % (rss0 >> 10, rss1 >> 10)
