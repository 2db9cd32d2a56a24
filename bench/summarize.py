#!/usr/bin/env python3
"""Prints a markdown table of criterion results from one or more runs of the same benchmarks.

Usage: bench/summarize.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds criterion's own files, <group>/<name>/new/{estimates,benchmark}.json (a
copy of target/criterion after one run). One row per benchmark:
- median: the median of the runs' medians (with one run, that run's median);
- 95% CI: criterion's interval (slope, or mean where there is no slope) from the run whose
  median was taken;
- runs: the smallest and largest run median, to show how much the machine moved them;
- rate: the median in the benchmark's throughput unit (MB/s for bytes, per second for
  elements)."""

import json
import pathlib
import sys


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def human_rate(per_iteration, ns, unit):
    rate = per_iteration / (ns / 1e9)
    if unit == "bytes":
        return f"{rate / 1e6:,.0f} MB/s"
    return f"{rate:,.0f} /s"


def load(run_dir):
    results = {}
    for estimates_path in sorted(pathlib.Path(run_dir).glob("*/*/new/estimates.json")):
        estimates = json.loads(estimates_path.read_text())
        benchmark = json.loads((estimates_path.parent / "benchmark.json").read_text())
        typical = estimates.get("slope") or estimates["mean"]
        results[benchmark["full_id"]] = {
            "median": estimates["median"]["point_estimate"],
            "low": typical["confidence_interval"]["lower_bound"],
            "high": typical["confidence_interval"]["upper_bound"],
            "throughput": benchmark.get("throughput") or {},
        }
    return results


def main():
    runs = [load(run_dir) for run_dir in sys.argv[1:] or ["results/raw/criterion"]]
    names = sorted({name for run in runs for name in run})
    print("| benchmark | median | 95% CI (that run) | runs: min – max | rate at the median |")
    print("|---|---|---|---|---|")
    for name in names:
        found = sorted((run[name] for run in runs if name in run), key=lambda r: r["median"])
        middle = found[(len(found) - 1) // 2]
        rate = ""
        for unit in ("Bytes", "Elements"):
            if unit in middle["throughput"]:
                rate = human_rate(middle["throughput"][unit], middle["median"], unit.lower())
        spread = f"{human_time(found[0]['median'])} – {human_time(found[-1]['median'])} ({len(found)})"
        print(
            f"| `{name}` | {human_time(middle['median'])} | {human_time(middle['low'])} – "
            f"{human_time(middle['high'])} | {spread} | {rate} |"
        )


if __name__ == "__main__":
    main()
