#!/usr/bin/python3
"""Writes README.md for a side-by-side results directory made by bench/compare-ejabberd.sh.

Usage: bench/compare-summary.py results/NAME [path/to/confab-loadgen]

Reads every <scenario>-<rate or size>-<server>.json (confab-loadgen --json output) and writes:
the headline figures per server (the highest login rate with p99 <= 100 ms and no failure,
the highest chat rate with p99 <= 10 ms and no loss, memory per idle session, server CPU per
message), their ratios, then the side-by-side table of every step (`confab-loadgen compare`).
Memory per session is recomputed from each run's timeline: the median RSS over the samples
taken while the peak number of sessions was held, minus the RSS before the run.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from summary_common import compare_tables, load, machine, servers_of  # noqa: E402

LOGIN_P99_MS = 100.0
CHAT_P99_MS = 10.0




def steady_bytes_per_session(run):
    timeline = run.get("timeline", [])
    peak = max((t["sessions"] for t in timeline), default=0)
    samples = sorted(t["server_rss_bytes"] for t in timeline if t["sessions"] == peak and peak > 0)
    if not samples:
        return 0.0
    return (samples[len(samples) // 2] - run.get("server_rss_baseline_bytes", 0)) / peak


def login_ok(run):
    return run["logins_failed"] == 0 and run["login_ms"]["p99"] <= LOGIN_P99_MS


def chat_ok(run):
    return (run["logins_failed"] == 0 and run["messages_lost"] == 0 and run["messages_duplicated"] == 0
            and run["latency_ms"]["p99"] <= CHAT_P99_MS)


def best(runs, server, scenario, ok):
    passing = [number for (s, number, who), (_, run) in runs.items() if who == server and s == scenario and ok(run)]
    tried = [number for (s, number, who) in runs if who == server and s == scenario]
    return (max(passing) if passing else None), (sorted(tried))


def main():
    directory = pathlib.Path(sys.argv[1])
    loadgen = sys.argv[2] if len(sys.argv) > 2 else "target/release/confab-loadgen"
    runs = load(directory, "login|chat|idle|storm")
    servers = servers_of(runs)
    where, mechanism = machine(runs)
    out = [f"# Confab vs ejabberd 23.01, side by side ({directory.name})", ""]
    out.append(f"{where}; the load generator "
               f"runs on the same cores. Both servers over STARTTLS with {mechanism}, "
               "accounts provisioned through each server's /api/register. ejabberd runs "
               "`../shared/anchors/ejabberd-bench.yml` (shapers off, MAM archiving every message); Confab archives "
               "every 1:1 message on both sides too (XEP-0313, since git e1f102f; runs before that had no archive).")
    out.append("")
    out.append("Every command is in [commands.md](commands.md); each `*.json` is one run's full result "
               "(histograms' percentiles, counters, per-second timeline).")
    out.append("")
    out.append("## Headline")
    out.append("")
    header = "| figure | " + " | ".join(servers) + (" | ratio " + " | ratio ".join(f"{servers[0]}/{s}" for s in servers[1:]) if len(servers) > 1 else "") + " |"
    out.append(header)
    out.append("|---" * (1 + len(servers) + max(0, len(servers) - 1)) + "|")

    def row(name, values, better_high=True):
        cells = [("–" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")) for v in values]
        ratios = []
        for v in values[1:]:
            if values[0] is None or v in (None, 0):
                ratios.append("–")
            else:
                ratios.append(f"{values[0] / v:.1f}×" if better_high else f"{v / values[0]:.1f}× less")
        out.append(f"| {name} | " + " | ".join(cells) + (" | " + " | ".join(ratios) if ratios else "") + " |")

    notes = []
    for server in servers:
        rate, tried = best(runs, server, "login", login_ok)
        if rate is None and tried:
            notes.append(f"{server}: no login step met p99 <= {LOGIN_P99_MS:.0f} ms (tried {tried}/s).")
        rate, tried = best(runs, server, "chat", chat_ok)
        if rate is None and tried:
            notes.append(f"{server}: no chat step met p99 <= {CHAT_P99_MS:.0f} ms (tried {tried}/s).")
    row(f"max logins/s with p99 <= {LOGIN_P99_MS:.0f} ms, no failure", [best(runs, s, "login", login_ok)[0] for s in servers])
    row(f"max chat messages/s with p99 <= {CHAT_P99_MS:.0f} ms, no loss", [best(runs, s, "chat", chat_ok)[0] for s in servers])
    sizes = sorted({number for (s, number, _) in runs if s == "idle"})
    for size in sizes:
        values = [steady_bytes_per_session(runs[("idle", size, s)][1]) if ("idle", size, s) in runs else None for s in servers]
        row(f"server RSS per idle TLS session at {size:,} sessions (bytes)", values, better_high=False)
    chat_rates = sorted({number for (s, number, _) in runs if s == "chat"})
    common = [r for r in chat_rates if all(("chat", r, s) in runs for s in servers)]
    if common:
        r = common[0]
        row(f"server CPU µs per message, chat at {r}/s", [runs[("chat", r, s)][1]["server_cpu_us_per_message"] for s in servers], better_high=False)
        row(f"chat p99 latency ms at {r}/s", [runs[("chat", r, s)][1]["latency_ms"]["p99"] for s in servers], better_high=False)
    login_rates = sorted({number for (s, number, _) in runs if s == "login"})
    common = [r for r in login_rates if all(("login", r, s) in runs for s in servers)]
    if common:
        r = common[0]
        row(f"login p99 ms at {r}/s", [runs[("login", r, s)][1]["login_ms"]["p99"] for s in servers], better_high=False)
        row(f"server CPU µs per login at {r}/s", [runs[("login", r, s)][1]["server_cpu_us_per_login"] for s in servers], better_high=False)
    out.append("")
    out.append("Ratios read \"how many times better Confab is\": higher throughput, or less latency, memory or CPU.")
    for note in notes:
        out.append(f"- {note}")
    out.append("")
    out.append("## Every step")
    out.append("")
    steps = sorted({(s, n) for (s, n, _) in runs}, key=lambda k: (["login", "chat", "idle", "storm"].index(k[0]), k[1]))
    units = {"idle": "sessions", "chat": "messages/s"}
    compare_tables(out, loadgen, runs, servers, steps, lambda scenario, number: f"{scenario} at {number:,} {units.get(scenario, 'logins/s')}")
    (directory / "README.md").write_text("\n".join(out) + "\n")
    print(f"wrote {directory / 'README.md'}")


if __name__ == "__main__":
    main()
