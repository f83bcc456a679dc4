"""A real browser: Debian's Chromium, headless, driven by playwright-core, loads
the page tidegate serves at / ; the page subscribes with EventSource and with
WebSocket; the test publishes and reads what the page shows."""

import json
import os
import subprocess

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def test_page_shows_messages_over_eventsource_and_websocket(make_server):
    server = make_server(io_threads=2)
    script = os.path.join(ROOT, "tests", "browser", "page_test.js")
    out = subprocess.run(["node", script, str(server.port), "browser", "5"],
                         capture_output=True, text=True, timeout=120,
                         cwd=os.path.join(ROOT, "tests", "browser"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    sent = result["sent"]
    assert len(sent) == 5
    assert result["shown"]["sse"] == ['%s {"n":%d}' % (pos, i) for i, pos in enumerate(sent)]
    assert result["shown"]["ws"] == ['%s {"n":%d}' % (pos, i) for i, pos in enumerate(sent)]
