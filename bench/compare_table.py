#!/usr/bin/python3
"""compare_table.py RESULTS OUTDIR - the table and chart of bench/compare.sh.

RESULTS holds one line per run: "SERVER SCENARIO LABEL key=value ..." (the
fields of tidegate-bench's RESULT line). Prints a table whose rows are
scenario x figure and whose columns are the servers and tidegate / best peer
(best = the better of the peers for that figure), and writes OUTDIR/compare.png
with gnuplot when it is installed. Standard library only."""

import os
import subprocess
import sys

SERVERS = ["tidegate", "nchan", "pushpin"]
# figure key -> (label, better: "low" or "high", scale, unit)
FIGURES = {
    "bytes_per_conn": ("user-space bytes per connection", "low", 1, "B"),
    "deliveries_per_s": ("deliveries/s", "high", 1, ""),
    "cpu_us_per_delivery": ("server CPU per delivery", "low", 1, "us"),
    "user_us_per_delivery": ("  of it in user space", "low", 1, "us"),
    # What the server's figure leaves out: the load tool's own CPU, and the whole
    # box's, where the work of a send counts wherever the kernel did it.
    "client_us_per_delivery": ("load client's CPU per delivery", "low", 1, "us"),
    "box_us_per_delivery": ("whole box's CPU per delivery", "low", 1, "us"),
    "p50_us": ("latency p50", "low", 0.001, "ms"),
    "p99_us": ("latency p99", "low", 0.001, "ms"),
    "lost_dup": ("lost + duplicated", "low", 1, ""),
    "fd_growth": ("server fds after - before", "low", 1, ""),
    "rss_growth": ("server RSS after - while up", "low", 1, "KiB"),
    "connected": ("subscribers connected", "high", 1, ""),
}
BY_SCENARIO = {
    "idle-ws": ["connected", "bytes_per_conn"],
    "idle-sse": ["connected", "bytes_per_conn"],
    "base": ["deliveries_per_s", "cpu_us_per_delivery", "user_us_per_delivery",
             "client_us_per_delivery", "box_us_per_delivery", "p50_us", "p99_us", "lost_dup"],
    "fanout-ws": ["deliveries_per_s", "cpu_us_per_delivery", "p50_us", "p99_us", "lost_dup"],
    "fanout-sse": ["deliveries_per_s", "cpu_us_per_delivery", "p50_us", "p99_us", "lost_dup"],
    "burst": ["deliveries_per_s", "cpu_us_per_delivery", "p99_us", "lost_dup"],
    "channels": ["deliveries_per_s", "cpu_us_per_delivery", "p99_us", "lost_dup"],
    "churn": ["deliveries_per_s", "fd_growth", "rss_growth", "lost_dup"],
}


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


def figure(d, key):
    if "failed" in d:
        return None
    if key == "bytes_per_conn":
        v = num(d, "pss_per_conn")
        return v if v else num(d, "rss_per_conn")
    if key == "lost_dup":
        a, b = num(d, "lost"), num(d, "dup")
        return None if a is None or b is None else a + b
    if key == "user_us_per_delivery":     # the rest is the kernel's (TCP, loopback)
        a, b = num(d, "cpu_us_per_delivery"), num(d, "sys_us_per_delivery")
        return None if a is None or b is None else max(a - b, 0.0)
    if key == "fd_growth":
        a, b = num(d, "fds_after"), num(d, "fds_before")
        return None if a is None or b is None else a - b
    if key == "rss_growth":  # negative: memory given back once the subscribers left
        a, b = num(d, "rss_after_kb"), num(d, "rss_up_kb")
        return None if a is None or b is None else a - b
    return num(d, key)


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            srv, scen, label = parts[:3]
            d = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
            runs[(scen, label, srv)] = d
    return runs


def fmt(v, scale, unit):
    if v is None:
        return "-"
    v *= scale
    s = ("%.0f" % v) if abs(v) >= 100 or v == int(v) else ("%.2f" % v)
    return s + (" " + unit if unit else "")


def main():
    runs = load(sys.argv[1])
    outdir = sys.argv[2]
    rows = []
    seen = []
    for (scen, label, _srv) in runs:
        if (scen, label) not in seen:
            seen.append((scen, label))
    print("%-22s %-34s %14s %14s %14s %10s" % ("scenario", "figure", *SERVERS,
                                               "tg / best"))
    for scen, label in seen:
        for key in BY_SCENARIO.get(scen, []):
            name, better, scale, unit = FIGURES[key]
            vals = {s: figure(runs.get((scen, label, s), {"failed": 1}), key) for s in SERVERS}
            peers = [vals[s] for s in SERVERS[1:] if vals[s] is not None]
            ratio = "-"
            tg = vals["tidegate"]
            if tg is not None and peers and key not in ("lost_dup", "fd_growth", "rss_growth", "connected"):
                best = min(peers) if better == "low" else max(peers)
                if best:
                    ratio = "%.2f" % (tg / best)
            print("%-22s %-34s %14s %14s %14s %10s" % (
                scen + " " + label, name, *(fmt(vals[s], scale, unit) for s in SERVERS), ratio))
            rows.append((scen, label, key, vals))
    print("(tg / best: tidegate's figure over the better peer's; below 1 is better for "
          "bytes, CPU and latency, above 1 for deliveries/s)")
    chart(rows, outdir)


def chart(rows, outdir):
    """Three headline bars per server: idle bytes/conn, CPU per delivery and p99
    at 1,000 x 100 msg/s."""
    pick = {}
    for scen, label, key, vals in rows:
        if scen == "idle-ws" and key == "bytes_per_conn" and "idle" not in pick:
            pick["idle"] = (vals, "user-space bytes per idle WebSocket subscriber", 1)
        if scen == "base" and key == "cpu_us_per_delivery":
            pick["cpu"] = (vals, "server CPU us per delivery (1,000 subs x 100 msg/s)", 1)
        if scen == "base" and key == "p99_us":
            pick["p99"] = (vals, "p99 latency ms (1,000 subs x 100 msg/s)", 0.001)
    if not pick or subprocess.call(["sh", "-c", "command -v gnuplot >/dev/null"]) != 0:
        return
    data = os.path.join(outdir, "compare.dat")
    script = os.path.join(outdir, "compare.gp")
    order = [n for n in ("idle", "cpu", "p99") if n in pick]
    with open(data, "w") as f:
        for name in order:
            vals, _title, scale = pick[name]
            f.write("# %s\n" % name)
            for s in SERVERS:
                v = vals.get(s)
                f.write('"%s" %s\n' % (s, "%.3f" % (v * scale) if v is not None else "NaN"))
            f.write("\n\n")
    with open(script, "w") as f:
        f.write('set terminal pngcairo size 1200,400 font ",10"\n')
        f.write('set output "%s"\n' % os.path.join(outdir, "compare.png"))
        f.write("set multiplot layout 1,%d\n" % len(pick))
        f.write("set style fill solid 0.8\nset boxwidth 0.6\nset grid ytics\n"
                "unset key\nset logscale y\n")
        for i, name in enumerate(order):
            f.write('set title "%s"\n' % pick[name][1])
            f.write('plot "%s" index %d using 0:2:xtic(1) with boxes lc rgb "#3b6ea8"\n'
                    % (data, i))
        f.write("unset multiplot\n")
    subprocess.call(["gnuplot", script])


if __name__ == "__main__":
    main()
