#!/usr/bin/env bash
# Store commit latency during a login storm: does password hashing delay durable writes?
#
#   bench/login-storm.sh [results-name]
#
# Side by side in one run: OLD_REV (default 10a7d27, the last revision that hashed passwords
# on glommio's blocking pool, the thread that also commits the store; built in a git worktree)
# and the working tree (the hashing pool: threads of their own at idle priority). ROUNDS
# times, old then new, each server runs one bench/commit-probe.py session that sends
# PROBE_RATE roster sets per second (each answered only once durable) through these phases of
# PHASE_SECONDS, GAP_SECONDS apart:
#   quiet: nothing else runs;
#   each storm of STORMS (MECHANISM:RATE): confab-loadgen logs in RATE users per second
#          with that SASL mechanism from 16 source addresses. With PLAIN the server runs
#          PBKDF2 (4096 iterations of SHA-256) for every login; with SCRAM it hashes nothing
#          (the client does), so a SCRAM storm is the same connection, TLS and session load
#          without the hashing: the difference between the two is what authentication adds.
# Reported: the probe's latency (intended send time -> result, open loop), the server's own
# commit latency histogram (`store_latency`, the working tree only: OLD_REV lacks it) and the
# storm's login results. Writes results/<name>/README.md and the raw JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

NAME=${1:-login-storm-$(date -u +%Y-%m-%d)}
OUT=results/$NAME
OLD_REV=${OLD_REV:-10a7d27}
STORMS=${STORMS:-PLAIN:400 SCRAM-SHA-256:800 PLAIN:800 PLAIN:2500}
ROUNDS=${ROUNDS:-3}
STORM_USERS=${STORM_USERS:-2000}
PHASE_SECONDS=${PHASE_SECONDS:-15}
PROBE_RATE=${PROBE_RATE:-50}
GAP_SECONDS=${GAP_SECONDS:-3}
PYTHON=/usr/bin/python3

mkdir -p "$OUT"
cargo build --release --locked -p confab-shards -p confab-loadgen --bins
LOADGEN=$PWD/target/release/confab-loadgen
NEW_BIN=$PWD/target/release/confab
OLD_TREE=${OLD_TREE:-/tmp/confab-old-$OLD_REV}
if [ ! -x "$OLD_TREE/target/release/confab" ]; then
  git worktree add -f "$OLD_TREE" "$OLD_REV" >/dev/null 2>&1 || true
  (cd "$OLD_TREE" && cargo build --release --locked -p confab-shards --bins)
fi
OLD_BIN=$OLD_TREE/target/release/confab

api() { curl -s -XPOST -H 'Content-Type: application/json' -d "${2:-{\}}" "http://127.0.0.1:25280/api/$1"; }

run_server() {
  local label=$1 binary=$2 dir storm mechanism rate
  dir=$(mktemp -d /tmp/confab-storm.XXXXXX)
  confab_config "$dir"
  confab_start "$binary" "$dir"
  api register '{"user":"probe","host":"localhost","password":"probe-pw"}' >/dev/null
  # Provision the storm's accounts (and warm up): a few logins.
  "$LOADGEN" run --scenario login --server 127.0.0.1:25222 --domain localhost --users "$STORM_USERS" \
    --prefix storm --password-prefix pw --register-api http://127.0.0.1:25280 --rate 20 --duration 2s \
    --insecure --mechanism PLAIN --procs 1 >/dev/null 2>&1
  sync
  sleep 2
  # One probe session for all phases: it logs in while the server is quiet and stays.
  local base=$OUT/$label-$ROUND phases
  phases=$base-phases.txt
  : > "$phases"
  "$PYTHON" bench/commit-probe.py 127.0.0.1 25222 "$dir/data/cert.pem" localhost probe probe-pw \
    "$PROBE_RATE" 0 "$base-probe.json" > "$base-probe.out" &
  local probe=$!
  for _ in $(seq 300); do grep -q online "$base-probe.out" && break; sleep 0.1; done
  sleep 1
  api store_latency >/dev/null || true

  echo "== $label round $ROUND: quiet"
  local start
  start=$(date +%s.%N)
  sleep "$PHASE_SECONDS"
  echo "quiet $start $(date +%s.%N)" >> "$phases"
  api store_latency > "$base-quiet-store.json" || true

  for storm in $STORMS; do
    mechanism=${storm%%:*}
    rate=${storm##*:}
    sleep "$GAP_SECONDS"
    api store_latency >/dev/null || true
    echo "== $label round $ROUND: storm of $rate $mechanism logins/s"
    start=$(date +%s.%N)
    "$LOADGEN" run --scenario login --server 127.0.0.1:25222 --domain localhost --users "$STORM_USERS" \
      --prefix storm --password-prefix pw --rate "$rate" --duration "${PHASE_SECONDS}s" \
      --insecure --mechanism "$mechanism" --procs 1 --source-addresses 16 \
      --json "$base-$mechanism-$rate-logins.json" >/dev/null 2>&1 || true
    echo "$mechanism-$rate $start $(date +%s.%N)" >> "$phases"
    api store_latency > "$base-$mechanism-$rate-store.json" || true
  done
  kill -TERM "$probe" 2>/dev/null || true
  wait "$probe" || true
  pkill -f "serve --config $dir/confab.toml" || true
  sleep 1
  rm -rf "$dir"
}

for ROUND in $(seq "$ROUNDS"); do
  run_server old "$OLD_BIN"
  run_server new "$NEW_BIN"
done

SHA=$(git rev-parse --short HEAD)
"$PYTHON" - "$OUT" "$OLD_REV" "$SHA" "$STORMS" "$PROBE_RATE" "$PHASE_SECONDS" "$ROUNDS" <<'EOF'
import json, os, sys, datetime, platform, statistics
out, old_rev, sha, storms, probe_rate, seconds, rounds = sys.argv[1:]
rounds = int(rounds)
phases = ["quiet"] + [storm.replace(":", "-") for storm in storms.split()]
servers = (("old", old_rev), ("new", sha))

def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception:
        return {}

def ms(us):
    return f"{us / 1000:.1f}" if isinstance(us, (int, float)) else "–"

def triple(d):
    return " / ".join(ms(d.get(k)) for k in ("p50_us", "p99_us", "max_us")) if d else "–"

def quantile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))] if values else None

def probe_phase(label, r, phase):
    """The probe's sets whose intended time falls in the phase."""
    try:
        with open(os.path.join(out, f"{label}-{r}-phases.txt")) as f:
            windows = {name: (float(a), float(b)) for name, a, b in (line.split() for line in f if line.strip())}
    except Exception:
        return {}
    if phase not in windows:
        return {}
    start, end = windows[phase]
    chosen = [latency for due, latency in load(f"{label}-{r}-probe.json").get("samples", []) if start <= due < end]
    answered = sorted(latency for latency in chosen if latency is not None)
    return {"sent": len(chosen), "answered": len(answered), "p50_us": quantile(answered, 0.5),
            "p99_us": quantile(answered, 0.99), "max_us": answered[-1] if answered else None}

def store_phase(label, r, phase):
    store = load(f"{label}-{r}-{phase}-store.json")
    return store if store.get("commits") else {}

def phase_name(phase):
    if phase == "quiet":
        return "quiet"
    mechanism, rate = phase.rsplit("-", 1)
    return f"{rate}/s {mechanism}"

def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None

summary, rows = [], []
for phase in phases:
    cells = []
    for label, _ in servers:
        probes = [probe_phase(label, r, phase) for r in range(1, rounds + 1)]
        stores = [store_phase(label, r, phase) for r in range(1, rounds + 1)]
        cells.append(f"{ms(median(p.get('p50_us') for p in probes))} / {ms(median(p.get('p99_us') for p in probes))}")
        if label == "new":
            cells.append(f"{ms(median(s.get('p50_us') for s in stores))} / {ms(median(s.get('p99_us') for s in stores))}")
    summary.append(f"| {phase_name(phase)} | " + " | ".join(cells) + " |")
    for label, rev in servers:
        for r in range(1, rounds + 1):
            probe = probe_phase(label, r, phase)
            store = store_phase(label, r, phase)
            logins = load(f"{label}-{r}-{phase}-logins.json")
            if logins:
                lm = logins.get("login_ms", {})
                storm = (f"{logins.get('logins_ok', '–')} ok, {logins.get('logins_failed', '–')} failed; "
                         f"p50 {lm.get('p50', 0):.0f} ms, p99 {lm.get('p99', 0):.0f} ms")
            else:
                storm = "–"
            rows.append(f"| {label} ({rev}) | {r} | {phase_name(phase)} | {triple(probe)} | "
                        f"{probe.get('answered', '–')}/{probe.get('sent', '–')} | {triple(store)} | {storm} |")

text = f"""# Store commit latency during a login storm

`bench/login-storm.sh` on {datetime.date.today()} ({platform.node()}: 2 cores, shared with the
load generator and the probe): {old_rev} (password hashing on glommio's blocking pool, the
thread that commits the store) beside {sha} (the hashing pool: threads of their own at idle
CPU priority), each server with 2 shards, {rounds} rounds in one run (old, new, old, new, …).

Each phase lasts {seconds} s (a storm: until its last login attempt ends). One probe session
(`bench/commit-probe.py`, python3-slixmpp), logged in before the first phase, sends
{probe_rate} roster sets per second throughout, each answered only once its change is durable;
its latency runs from the set's intended time to its result (open loop), and each set counts
in the phase its intended time falls in ("answered": within 60 s). During a storm,
`confab-loadgen --scenario login --source-addresses 16 --mechanism M` logs users in at the
given rate. With PLAIN the server runs PBKDF2 (4096 iterations, about 0.7 ms of CPU) for
every login; with SCRAM it hashes nothing, so the SCRAM storm is the same connection, TLS and
session load without the hashing (its client derives each user's keys once, 2,000 PBKDF2 at
the storm's start). The server's own histogram (`store_latency`: submission to durable)
exists only in the new revision.

Medians over the rounds, in ms:

| phase | old: probe p50 / p99 | new: probe p50 / p99 | new: server commit p50 / p99 |
|---|---|---|---|
""" + "\n".join(summary) + """

Every round:

| server | round | phase | probe roster set p50 / p99 / max (ms) | answered | server commit p50 / p99 / max (ms) | storm logins |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Raw data: the files beside this one (`*-probe.json` from the probe, with every sample;
`*-phases.txt`, the phases' start and end times; `*-store.json` from `store_latency`;
`*-logins.json` from confab-loadgen).
"""
with open(os.path.join(out, "README.md"), "w") as f:
    f.write(text)
print(text)
EOF
