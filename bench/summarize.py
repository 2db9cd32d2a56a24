#!/usr/bin/env python3
"""Prints a markdown table of criterion results: one row per benchmark, from
<dir>/<group>/<name>/new/{estimates,benchmark}.json (criterion's own files).

Usage: bench/summarize.py [results/raw/criterion]

Columns: the median time per iteration; criterion's reported interval (the 95% confidence
interval of the slope, or of the mean where there is no slope); and the median as a rate in
the benchmark's own throughput unit (bytes or elements per iteration)."""

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


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "results/raw/criterion")
    print("| benchmark | median | range (95% CI) | median as a rate |")
    print("|---|---|---|---|")
    for estimates_path in sorted(root.glob("*/*/new/estimates.json")):
        estimates = json.loads(estimates_path.read_text())
        benchmark = json.loads((estimates_path.parent / "benchmark.json").read_text())
        median = estimates["median"]["point_estimate"]
        typical = estimates.get("slope") or estimates["mean"]
        low = typical["confidence_interval"]["lower_bound"]
        high = typical["confidence_interval"]["upper_bound"]
        throughput = benchmark.get("throughput") or {}
        rate = ""
        for unit in ("Bytes", "Elements"):
            if unit in throughput:
                rate = human_rate(throughput[unit], median, unit.lower())
        name = benchmark["full_id"]
        print(f"| `{name}` | {human_time(median)} | {human_time(low)} – {human_time(high)} | {rate} |")


if __name__ == "__main__":
    main()
