#!/usr/bin/python3
"""Writes README.md for an IM results directory made by bench/compare-im.sh.

Usage: bench/compare-im-summary.py results/NAME [path/to/confab-loadgen]

Reads every <scenario>-<number>-<server>.json (confab-loadgen --json output; scenario one of
roster, presence, mam, mixed) and writes the headline figures of the three benchmarks of
issue #4 (roster load time with a 100-contact roster, presence fan-out to 100 online contacts,
MAM query of the last 50 messages) per server with ratios, the correctness counters that
make those figures valid (missing copies, wrong rosters, incomplete pages), then the
side-by-side table of every run (`confab-loadgen compare`).
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from summary_common import Headline, compare_tables, fmt, load, machine, servers_of  # noqa: E402

SCENARIOS = ["roster", "presence", "mam", "mixed"]






def main():
    directory = pathlib.Path(sys.argv[1])
    loadgen = sys.argv[2] if len(sys.argv) > 2 else "target/release/confab-loadgen"
    runs = load(directory, "roster|presence|mam|mixed")
    servers = servers_of(runs)
    where, mechanism = machine(runs)
    any_run = next(iter(runs.values()))[1] if runs else {}
    users = any_run.get("users", "?")
    contacts = any_run.get("contacts", "?")
    out = [f"# IM benchmarks: Confab vs ejabberd 23.01, side by side ({directory.name})", ""]
    out.append(
        f"{where}; the load generator runs on "
        f"the same cores. Both servers over STARTTLS with {mechanism}, {users} accounts, "
        f"each with {contacts} mutual contacts (a ring: the {contacts // 2 if isinstance(contacts, int) else '?'} nearest "
        "accounts on either side), provisioned through each server's admin API (`register`, then `add_rosteritem` "
        "for both directions with subs=both). Both servers archive every message (Confab's archive; ejabberd's "
        "mod_mam with `default: always`). ejabberd runs [ejabberd.yml](ejabberd.yml) (the anchor configuration plus "
        "mod_admin_extra), Confab [confab.toml](confab.toml); each starts from an empty database."
    )
    out.append("")
    out.append("Every command, with the load average before it, is in [commands.md](commands.md); each `*.json` "
               "is one run's full result. Latencies are HDR percentiles in µs from the intended (open-loop) time, "
               "except the roster load at login, which is roster get sent → result.")
    out.append("")
    out.append("## Headline")
    out.append("")
    headline = Headline(out, runs, servers)
    row, get, numbers = headline.row, headline.get, headline.numbers

    for n in numbers("roster"):
        label = f"login with a {n}-contact roster"
        for q, key in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")]:
            row(f"{label}: roster load {q} µs", [get("roster", n, s, lambda r: r["roster_load_us"][key]) for s in servers])
        row(f"{label}: full login p50 ms", [get("roster", n, s, lambda r: r["login_ms"]["p50"]) for s in servers])
        row(f"{label}: full login p99 ms", [get("roster", n, s, lambda r: r["login_ms"]["p99"]) for s in servers])
        row(f"{label}: server CPU µs per login", [get("roster", n, s, lambda r: r["server_cpu_us_per_login"]) for s in servers])
    for n in numbers("presence"):
        label = f"presence fan-out to {contacts} online contacts, {n} changes/s"
        for q, key in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")]:
            row(f"{label}: {q} µs", [get("presence", n, s, lambda r: r["presence_fanout_us"][key]) for s in servers])
        row(f"{label}: server CPU µs per copy", [get("presence", n, s, lambda r: r["server_cpu_us_per_presence_copy"]) for s in servers])
    for n in numbers("mam"):
        label = f"MAM query of the last 50, {n} queries/s"
        for q, key in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")]:
            row(f"{label}: {q} µs", [get("mam", n, s, lambda r: r["archive_query_us"][key]) for s in servers])
        row(f"{label}: server CPU µs per query", [get("mam", n, s, lambda r: r["server_cpu_us_per_archive_query"]) for s in servers])
        row(f"{label}: queries unanswered at the end (of {fmt(get('mam', n, servers[0], lambda r: r['archive_queries']))})",
            [get("mam", n, s, lambda r: r.get("archive_unanswered", 0)) for s in servers])
    for n in numbers("mixed"):
        label = f"mixed, {n} events/s"
        row(f"{label}: chat p99 µs", [get("mixed", n, s, lambda r: r["latency_ms"]["p99"] * 1000) for s in servers])
        row(f"{label}: presence fan-out p99 µs", [get("mixed", n, s, lambda r: r["presence_fanout_us"]["p99"]) for s in servers])
        row(f"{label}: roster get p99 µs", [get("mixed", n, s, lambda r: r["roster_load_us"]["p99"]) for s in servers])
        row(f"{label}: MAM query p99 µs", [get("mixed", n, s, lambda r: r["archive_query_us"]["p99"]) for s in servers])
        row(f"{label}: server CPU s in the measured phase", [get("mixed", n, s, lambda r: r["server_cpu_phase_seconds"]) for s in servers])
    out.append("")
    out.append("Ratios are other/Confab: above 1× means Confab is faster or cheaper by that factor.")
    out.append("")
    out.append("## Correctness of each run")
    out.append("")
    out.append("| run | server | logins ok/failed | rosters wrong / unanswered | presence copies owed / missing / duplicated / "
               "unexpected | chat lost / duplicated, p99 ms | archive pages answered / incomplete / short of 50 / errors / "
               "unanswered | session errors |")
    out.append("|---|---|---|---|---|---|---|---|")
    order = sorted(runs, key=lambda k: (SCENARIOS.index(k[0]), k[1], servers.index(k[2])))
    for scenario, number, server in order:
        r = runs[(scenario, number, server)][1]
        chat = f"{r['messages_lost']} / {r['messages_duplicated']}, {fmt(r['latency_ms']['p99'])}" if r["messages_sent"] else "–"
        out.append(
            f"| {scenario} {number} | {server} | {r['logins_ok']}/{r['logins_failed']} "
            f"| {r.get('roster_items_wrong', 0)} / {r.get('roster_unanswered', 0)} "
            f"| {r.get('presence_copies_expected', 0)} / {r.get('presence_copies_missing', 0)} / "
            f"{r.get('presence_copies_duplicated', 0)} / {r.get('presence_copies_unexpected', 0)} "
            f"| {chat} "
            f"| {r.get('archive_answered', 0)} / {r.get('archive_incomplete', 0)} / {r.get('archive_short', 0)} / "
            f"{r.get('archive_errors', 0)} / {r.get('archive_unanswered', 0)} "
            f"| {sum(r.get('errors', {}).values())} |"
        )
    out.append("")
    out.append("In mam runs the chat column is the archive filling (sent before the queries): its p99 shows whether the "
               "server kept up with archiving, so the queries met no backlog. Unanswered queries (still pending when "
               "the run ended) have no latency in the percentiles above: read those with the unanswered count beside them.")
    out.append("")
    out.append("## Every run")
    out.append("")
    units = {"roster": "contacts", "presence": "changes/s", "mam": "queries/s", "mixed": "events/s"}
    steps = sorted({(s, n) for (s, n, _) in runs}, key=lambda k: (SCENARIOS.index(k[0]), k[1]))
    compare_tables(out, loadgen, runs, servers, steps, lambda scenario, number: f"{scenario} at {number:,} {units[scenario]}")
    (directory / "README.md").write_text("\n".join(out) + "\n")
    print(f"wrote {directory / 'README.md'}")


if __name__ == "__main__":
    main()
