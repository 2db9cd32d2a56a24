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
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from summary_common import Headline, compare_tables, fmt, load, machine, servers_of  # noqa: E402

KINDS = ["fanout", "rooms"]






def main():
    directory = pathlib.Path(sys.argv[1])
    loadgen = sys.argv[2] if len(sys.argv) > 2 else "target/release/confab-loadgen"
    runs = load(directory, "fanout|rooms", prefix="muc-")
    servers = servers_of(runs)
    where, mechanism = machine(runs)
    any_run = next(iter(runs.values()))[1] if runs else {}
    out = [f"# Multi-user chat (XEP-0045): {' vs '.join(servers) or 'no runs'}, side by side ({directory.name})", ""]
    out.append(
        f"{where}; the load generator runs on "
        f"the same cores. Every server over STARTTLS with {mechanism}; accounts "
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
    headline = Headline(out, runs, servers)
    row, get, numbers = headline.row, headline.get, headline.numbers

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
    steps = sorted({(k, n) for (k, n, _) in runs}, key=lambda k: (KINDS.index(k[0]), k[1]))
    compare_tables(out, loadgen, runs, servers, steps,
                   lambda kind, number: f"fan-out: one room of {number:,}" if kind == "fanout" else f"rooms at {number:,} posts/s")
    (directory / "README.md").write_text("\n".join(out) + "\n")
    print(f"wrote {directory / 'README.md'}")


if __name__ == "__main__":
    main()
