#!/usr/bin/env bash
# Store commit latency during a login storm: does password hashing delay durable writes?
#
#   bench/login-storm.sh [results-name]
#
# Side by side in one run: OLD_REV (default 10a7d27, the last revision that hashed passwords
# on glommio's blocking pool, the thread that also commits the store; built in a git worktree)
# and the working tree (the hashing pool: niced threads of their own). For each server, in two
# phases of PHASE_SECONDS:
#   quiet: bench/commit-probe.py sends PROBE_RATE roster sets per second (each answered only
#          once durable) and nothing else runs;
#   storm: the same, while confab-loadgen logs in STORM_RATE users per second with SASL PLAIN
#          (the server runs PBKDF2 for every login: 4096 iterations of SHA-256).
# Reported: the probe's latency (intended send time → result, open loop), the server's own
# commit latency histogram (`store_latency`, the working tree only: OLD_REV lacks it) and the
# storm's login results. Writes results/<name>/README.md and the raw JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${1:-login-storm-$(date -u +%Y-%m-%d)}
OUT=results/$NAME
OLD_REV=${OLD_REV:-10a7d27}
STORM_RATE=${STORM_RATE:-800}
STORM_USERS=${STORM_USERS:-2000}
PHASE_SECONDS=${PHASE_SECONDS:-20}
PROBE_RATE=${PROBE_RATE:-50}
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
  local label=$1 binary=$2 dir
  dir=$(mktemp -d /tmp/confab-storm.XXXXXX)
  cat > "$dir/confab.toml" <<EOF
domain = "localhost"
data_dir = "$dir/data"
shards = 2
[listen]
c2s = "127.0.0.1:25222"
c2s_tls = "127.0.0.1:25223"
http = "127.0.0.1:25280"
[log]
level = "warn"
EOF
  (ulimit -n 20000; exec "$binary" serve --config "$dir/confab.toml" >"$dir/log" 2>&1) &
  for _ in $(seq 100); do api status >/dev/null 2>&1 && break; sleep 0.1; done
  api register '{"user":"probe","host":"localhost","password":"probe-pw"}' >/dev/null
  # Provision the storm's accounts (and warm up): a few logins.
  "$LOADGEN" run --scenario login --server 127.0.0.1:25222 --domain localhost --users "$STORM_USERS" \
    --prefix storm --password-prefix pw --register-api http://127.0.0.1:25280 --rate 20 --duration 2s \
    --insecure --mechanism PLAIN --procs 1 >/dev/null 2>&1
  api store_latency >/dev/null || true

  echo "== $label: quiet"
  "$PYTHON" bench/commit-probe.py 127.0.0.1 25222 "$dir/data/cert.pem" localhost probe probe-pw \
    "$PROBE_RATE" "$PHASE_SECONDS" "$OUT/$label-probe-quiet.json"
  api store_latency > "$OUT/$label-store-quiet.json" || true

  echo "== $label: storm of $STORM_RATE PLAIN logins/s"
  "$LOADGEN" run --scenario login --server 127.0.0.1:25222 --domain localhost --users "$STORM_USERS" \
    --prefix storm --password-prefix pw --rate "$STORM_RATE" --duration "${PHASE_SECONDS}s" \
    --insecure --mechanism PLAIN --procs 1 --json "$OUT/$label-storm-logins.json" >/dev/null 2>&1 &
  local storm=$!
  sleep 1
  "$PYTHON" bench/commit-probe.py 127.0.0.1 25222 "$dir/data/cert.pem" localhost probe probe-pw \
    "$PROBE_RATE" "$((PHASE_SECONDS - 2))" "$OUT/$label-probe-storm.json"
  api store_latency > "$OUT/$label-store-storm.json" || true
  wait "$storm" || true
  pkill -f "serve --config $dir/confab.toml" || true
  sleep 1
  rm -rf "$dir"
}

run_server old "$OLD_BIN"
run_server new "$NEW_BIN"

SHA=$(git rev-parse --short HEAD)
"$PYTHON" - "$OUT" "$OLD_REV" "$SHA" "$STORM_RATE" "$PROBE_RATE" "$PHASE_SECONDS" <<'EOF'
import json, os, sys, datetime, platform
out, old_rev, sha, storm_rate, probe_rate, seconds = sys.argv[1:]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception:
        return {}
def ms(us):
    return f"{us / 1000:.1f}" if isinstance(us, (int, float)) else "–"
rows = []
for label, rev in (("old", old_rev), ("new", sha)):
    for phase in ("quiet", "storm"):
        probe = load(f"{label}-probe-{phase}.json")
        store = load(f"{label}-store-{phase}.json")
        logins = load(f"{label}-storm-logins.json") if phase == "storm" else {}
        ok = logins.get("logins_ok", logins.get("logged_in", "–"))
        failed = logins.get("logins_failed", logins.get("login_failures", "–"))
        rows.append(f"| {label} ({rev}) | {phase} | {ms(probe.get('p50_us'))} / {ms(probe.get('p99_us'))} / {ms(probe.get('max_us'))} | "
                    f"{probe.get('answered', '–')}/{probe.get('sent', '–')} | "
                    f"{ms(store.get('p50_us')) if store.get('commits') else '–'} / {ms(store.get('p99_us')) if store.get('commits') else '–'} / {ms(store.get('max_us')) if store.get('commits') else '–'} | "
                    f"{ok} ok, {failed} failed |")
text = f"""# Store commit latency during a login storm

`bench/login-storm.sh` on {datetime.date.today()} ({platform.node()}, 2 cores shared with the
load generator), {old_rev} (password hashing on glommio's blocking pool, the thread that commits
the store) beside {sha} (the hashing pool: niced threads of their own), each server with 2
shards, in one run.

Each phase lasts {seconds} s. The probe (`bench/commit-probe.py`, python3-slixmpp) sends {probe_rate}
roster sets per second, each answered only once its change is durable; its latency runs from
the set's intended time to its result. During the storm, `confab-loadgen --scenario login
--mechanism PLAIN --rate {storm_rate}` logs users in, so the server runs PBKDF2 (4096
iterations) for every login. The server's own histogram (`store_latency`: submission to
durable) exists only in the new revision.

| server | phase | probe roster set p50 / p99 / max (ms) | answered | server commit p50 / p99 / max (ms) | storm logins |
|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Raw data: the JSON files beside this one (`*-probe-*.json` from the probe, `*-store-*.json`
from `store_latency`, `*-storm-logins.json` from confab-loadgen).
"""
with open(os.path.join(out, "README.md"), "w") as f:
    f.write(text)
print(text)
EOF
