/* app/page.c - the page GET / serves: a live view of one channel over both
 * browser transports (EventSource and WebSocket), for trying tidegate out and
 * for the browser test. ?ch=NAME picks the channel (default "demo"). */
#include "app/page.h"

const char tg_demo_page[] =
    "<!doctype html>\n"
    "<html><head><meta charset=\"utf-8\"><title>tidegate</title>\n"
    "<style>body{font:14px system-ui,sans-serif;margin:2em}ul{font-family:monospace}"
    "section{display:inline-block;vertical-align:top;width:45%}</style></head>\n"
    "<body><h1>tidegate</h1>\n"
    "<p>Channel <b id=\"ch\"></b>. Publish with "
    "<code>curl -X POST HOST/pub/CHANNEL -d '{\"hello\":1}'</code></p>\n"
    "<section><h2>EventSource <small id=\"sse-state\">connecting</small></h2>"
    "<ul id=\"sse\"></ul></section>\n"
    "<section><h2>WebSocket <small id=\"ws-state\">connecting</small></h2>"
    "<ul id=\"ws\"></ul></section>\n"
    "<script>\n"
    "const ch = new URLSearchParams(location.search).get('ch') || 'demo';\n"
    "document.getElementById('ch').textContent = ch;\n"
    "function add(list, pos, data) {\n"
    "  const li = document.createElement('li');\n"
    "  li.dataset.pos = pos;\n"
    "  li.textContent = pos + ' ' + data;\n"
    "  document.getElementById(list).appendChild(li);\n"
    "}\n"
    "const es = new EventSource('/sub/' + encodeURIComponent(ch));\n"
    "es.addEventListener('sub', () => {\n"
    "  document.getElementById('sse-state').textContent = 'subscribed';\n"
    "});\n"
    "es.onmessage = (e) => add('sse', e.lastEventId, e.data);\n"
    "const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') +\n"
    "                         location.host + '/ws');\n"
    "ws.onopen = () => ws.send(JSON.stringify({op: 'sub', ch: ch}));\n"
    "ws.onmessage = (e) => {\n"
    "  const m = JSON.parse(e.data);\n"
    "  if (m.type === 'sub') document.getElementById('ws-state').textContent = 'subscribed';\n"
    "  if (m.type === 'msg') add('ws', m.pos, JSON.stringify(m.data));\n"
    "};\n"
    "ws.onclose = () => { document.getElementById('ws-state').textContent = 'closed'; };\n"
    "</script></body></html>\n";

const unsigned long tg_demo_page_len = sizeof(tg_demo_page) - 1;
