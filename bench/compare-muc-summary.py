#!/usr/bin/python3
"""Writes README.md for a MUC results directory made by bench/compare-muc.sh.

Usage: bench/compare-muc-summary.py results/NAME [path/to/confab-loadgen]

Reads every muc-fanout-<occupants>-<server>.json and muc-rooms-<rate>-<server>.json
(confab-loadgen --json output of the `muc` scenario) and writes the headline figures per
server with ratios (fan-out latency per delivered copy in one big room; delivered copies/s,
latency and server CPU per copy across many rooms at each total post rate), the correctness
counters that make those figures valid (joins, missing, duplicated and unexpected copies,
errors), then the side-by-side table of every run (`confab-loadgen compare`).
"""

import json
import pathlib
import platform
import re
import subprocess
import sys

KINDS = ["fanout", "rooms"]


def load(directory):
    runs = {}
    for path in sorted(directory.glob("*.json")):
        match = re.fullmatch(r"muc-(fanout|rooms)-(\d+)-(\w+)\.json", path.name)
        if match:
            kind, number, server = match.groups()
            runs[(kind, int(number), server)] = (path, json.loads(path.read_text()))
    return runs


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def main():
    directory = pathlib.Path(sys.argv[1])
    loadgen = sys.argv[2] if len(sys.argv) > 2 else "target/release/confab-loadgen"
    runs = load(directory)
    servers = sorted({server for (_, _, server) in runs}, key=lambda s: (s != "confab", s))
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    cores = len([line for line in open("/proc/cpuinfo") if line.startswith("processor")])
    any_run = next(iter(runs.values()))[1] if runs else {}
    mechanism = re.search(r"--mechanism (\S+)", any_run.get("command", ""))
    out = [f"# Multi-user chat (XEP-0045): {' vs '.join(servers) or 'no runs'}, side by side ({directory.name})", ""]
    out.append(
        f"git {sha}; {cores} cores ({cpu}); {platform.system()} {platform.release()}; the load generator runs on "
        f"the same cores. Every server over STARTTLS with {mechanism.group(1) if mechanism else '?'}; accounts "
        "provisioned through each server's admin API (`register`). Occupant i of room r is user r × occupants + i + 1 "
        "with its username as nick; each room's first occupant creates it (and unlocks it as an instant room when "
        "the service answers status 201), then the others join, asking for no history; then every occupant posts "
        "every rooms × occupants / rate seconds, open loop. ejabberd runs [ejabberd.yml](ejabberd.yml) (the anchor "
        "configuration with mod_muc's caps raised to 2,000 occupants, room archive on), Confab "
        "[confab.toml](confab.toml); each starts from an empty database."
    )
    out.append("")
    out.append("Every command, with the load average before it, is in [commands.md](commands.md); each `*.json` is one "
               "run's full result. Latencies are HDR percentiles in µs from each post's intended (open-loop) time to "
               "its arrival at each other occupant; the sender's own reflection is measured apart. Copies owed = "
               "posts × (occupants that joined the room − 1).")
    out.append("")
    out.append("## Headline")
    out.append("")
    ratio_heads = "".join(f" ratio {s}/{servers[0]} |" for s in servers[1:])
    out.append("| figure | " + " | ".join(servers) + " |" + ratio_heads)
    out.append("|---" * (1 + 2 * len(servers) - 1) + "|")

    def row(name, values):
        cells = [fmt(v) for v in values]
        ratios = []
        for v in values[1:]:
            if values[0] in (None, 0) or v is None:
                ratios.append("–")
            else:
                ratios.append(f"{v / values[0]:.1f}×")
        out.append(f"| {name} | " + " | ".join(cells) + " |" + "".join(f" {r} |" for r in ratios))

    def get(kind, number, server, pick):
        entry = runs.get((kind, number, server))
        return pick(entry[1]) if entry else None

    def numbers(kind):
        return sorted({n for (k, n, _) in runs if k == kind})

    for n in numbers("fanout"):
        rate = get("fanout", n, servers[0], lambda r: r["muc_messages_per_s"])
        label = f"1 room of {n:,}, {fmt(rate)} posts/s"
        for q, key in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")]:
            row(f"{label}: fan-out {q} µs per copy", [get("fanout", n, s, lambda r: r["muc_copy_us"][key]) for s in servers])
        row(f"{label}: copies delivered/s", [get("fanout", n, s, lambda r: r["muc_copies_per_s"]) for s in servers])
        row(f"{label}: copies missing", [get("fanout", n, s, lambda r: r["muc_copies_missing"]) for s in servers])
        row(f"{label}: join p99 µs", [get("fanout", n, s, lambda r: r["muc_join_us"]["p99"]) for s in servers])
        row(f"{label}: server CPU µs per copy", [get("fanout", n, s, lambda r: r["server_cpu_us_per_muc_copy"]) for s in servers])
    for n in numbers("rooms"):
        shape = get("rooms", n, servers[0], lambda r: f"{r['muc_rooms']} rooms of {r['muc_occupants']}")
        label = f"{shape}, {n:,} posts/s"
        row(f"{label}: posts/s sent", [get("rooms", n, s, lambda r: r["muc_messages_per_s"]) for s in servers])
        row(f"{label}: copies delivered/s", [get("rooms", n, s, lambda r: r["muc_copies_per_s"]) for s in servers])
        for q, key in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")]:
            row(f"{label}: latency {q} µs per copy", [get("rooms", n, s, lambda r: r["muc_copy_us"][key]) for s in servers])
        row(f"{label}: copies missing", [get("rooms", n, s, lambda r: r["muc_copies_missing"]) for s in servers])
        row(f"{label}: server CPU s in the posting phase", [get("rooms", n, s, lambda r: r["server_cpu_phase_seconds"]) for s in servers])
        row(f"{label}: server CPU µs per copy", [get("rooms", n, s, lambda r: r["server_cpu_us_per_muc_copy"]) for s in servers])
    out.append("")
    if len(servers) > 1:
        out.append(f"Ratios are other/{servers[0]}: above 1× means {servers[0]} is faster or cheaper by that factor.")
        out.append("")
    out.append("## Correctness of each run")
    out.append("")
    out.append("| run | server | logins ok/failed | joins ok / late / failed | rooms created (201) / unlocked | posts sent / "
               "skipped / errors | copies owed / received / missing / duplicated / unexpected | reflections missing | "
               "session errors |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    order = sorted(runs, key=lambda k: (KINDS.index(k[0]), k[1], servers.index(k[2])))
    for kind, number, server in order:
        r = runs[(kind, number, server)][1]
        out.append(
            f"| {kind} {number} | {server} | {r['logins_ok']}/{r['logins_failed']} "
            f"| {r['muc_joins_ok']} / {r['muc_joins_late']} / {r['muc_joins_failed']} "
            f"| {r['muc_rooms_created']} / {r['muc_rooms_unlocked']} "
            f"| {r['muc_messages_sent']} / {r['muc_posts_skipped']} / {r['muc_message_errors']} "
            f"| {r['muc_copies_expected']} / {r['muc_copies_received']} / {r['muc_copies_missing']} / "
            f"{r['muc_copies_duplicated']} / {r['muc_copies_unexpected']} "
            f"| {r['muc_reflections_missing']} "
            f"| {fmt(sum(r.get('errors', {}).values()))} {json.dumps(r.get('errors', {})) if r.get('errors') else ''} |"
        )
    out.append("")
    out.append("## Every run")
    out.append("")
    for kind, number in sorted({(k, n) for (k, n, _) in runs}, key=lambda k: (KINDS.index(k[0]), k[1])):
        files = [str(runs[(kind, number, s)][0]) for s in servers if (kind, number, s) in runs]
        heading = f"fan-out: one room of {number:,}" if kind == "fanout" else f"rooms at {number:,} posts/s"
        out.append(f"### {heading}")
        out.append("")
        table = subprocess.run([loadgen, "compare", *files], capture_output=True, text=True)
        out.append(table.stdout.strip() if table.returncode == 0 else f"(compare failed: {table.stderr.strip()})")
        out.append("")
    (directory / "README.md").write_text("\n".join(out) + "\n")
    print(f"wrote {directory / 'README.md'}")


if __name__ == "__main__":
    main()
