"""What the side-by-side summary scripts (compare-summary.py, compare-im-summary.py,
compare-muc-summary.py) share: reading a results directory's runs, the line that says what
machine and commit they ran on, number formatting, the headline table with ratios, and the
per-run tables of `confab-loadgen compare`. Each script keeps its own figures and prose.
"""

import json
import platform
import re
import subprocess


def load(directory, kinds, prefix=""):
    """Runs named `<prefix><kind>-<number>-<server>.json`, `kinds` a regex alternative of the
    kinds: {(kind, number, server): (path, parsed JSON)}."""
    runs = {}
    for path in sorted(directory.glob("*.json")):
        match = re.fullmatch(rf"{prefix}({kinds})-(\d+)-(\w+)\.json", path.name)
        if match:
            kind, number, server = match.groups()
            runs[(kind, int(number), server)] = (path, json.loads(path.read_text()))
    return runs


def servers_of(runs):
    """The servers in the runs, Confab first."""
    return sorted({server for (_, _, server) in runs}, key=lambda s: (s != "confab", s))


def machine(runs):
    """The commit, the machine and the SASL mechanism: "git SHA; N cores (CPU); OS RELEASE"
    and the mechanism of the runs' command line ("?" when unknown)."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    cores = len([line for line in open("/proc/cpuinfo") if line.startswith("processor")])
    any_run = next(iter(runs.values()))[1] if runs else {}
    mechanism = re.search(r"--mechanism (\S+)", any_run.get("command", "")) if any_run else None
    return f"git {sha}; {cores} cores ({cpu}); {platform.system()} {platform.release()}", (mechanism.group(1) if mechanism else "?")


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


class Headline:
    """The headline table: a row per figure, a column per server, then other/first ratios."""

    def __init__(self, out, runs, servers):
        self.out, self.runs, self.servers = out, runs, servers
        ratio_heads = "".join(f" ratio {s}/{servers[0]} |" for s in servers[1:])
        out.append("| figure | " + " | ".join(servers) + " |" + ratio_heads)
        out.append("|---" * (1 + 2 * len(servers) - 1) + "|")

    def row(self, name, values):
        cells = [fmt(v) for v in values]
        ratios = []
        for v in values[1:]:
            if values[0] in (None, 0) or v is None:
                ratios.append("–")
            else:
                ratios.append(f"{v / values[0]:.1f}×")
        self.out.append(f"| {name} | " + " | ".join(cells) + " |" + "".join(f" {r} |" for r in ratios))

    def get(self, kind, number, server, pick):
        entry = self.runs.get((kind, number, server))
        return pick(entry[1]) if entry else None

    def numbers(self, kind):
        return sorted({n for (k, n, _) in self.runs if k == kind})

    def each(self, kind, number, pick):
        """One value per server."""
        return [self.get(kind, number, s, pick) for s in self.servers]


def compare_tables(out, loadgen, runs, servers, steps, title):
    """For each (kind, number) of `steps`, a heading from `title(kind, number)` and the
    side-by-side table of `confab-loadgen compare` over the servers' runs."""
    for kind, number in steps:
        files = [str(runs[(kind, number, s)][0]) for s in servers if (kind, number, s) in runs]
        out.append(f"### {title(kind, number)}")
        out.append("")
        table = subprocess.run([loadgen, "compare", *files], capture_output=True, text=True)
        out.append(table.stdout.strip() if table.returncode == 0 else f"(compare failed: {table.stderr.strip()})")
        out.append("")
