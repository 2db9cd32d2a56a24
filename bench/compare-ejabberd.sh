#!/usr/bin/env bash
# Side by side: the same confab-loadgen scenarios against Confab and ejabberd 23.01 on this
# machine, in one run, results and ratios written to results/<name>/.
#
#   bench/compare-ejabberd.sh [results-name]
#
# Needs root (installs and starts ejabberd from Debian, configured with
# ../shared/anchors/ejabberd-bench.yml). Scales can be changed with the environment
# variables below. Each ramp stops for a server after its first step that misses the target
# (login: p99 > 100 ms or any failure; chat: p99 > 10 ms or any loss).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

NAME=${1:-compare-$(date -u +%Y%m%d)}
OUT=results/$NAME
LOGIN_RATES=${LOGIN_RATES:-"100 200 400 800 1600 3200"}
LOGIN_SECONDS=${LOGIN_SECONDS:-10}
# Accounts cycled by the login scenario: the generator caches each account's salted password,
# so with a small set it pays PBKDF2 once per account instead of once per login.
LOGIN_USERS=${LOGIN_USERS:-2000}
CHAT_USERS=${CHAT_USERS:-1000}
CHAT_RATES=${CHAT_RATES:-"1000 2000 4000 8000 16000 32000"}
CHAT_SECONDS=${CHAT_SECONDS:-10}
IDLE_SIZES=${IDLE_SIZES:-"10000 19500"}
IDLE_RATE=${IDLE_RATE:-100}
IDLE_HOLD=${IDLE_HOLD:-20s}
MECHANISM=${MECHANISM:-SCRAM-SHA-1}   # ejabberd stores SCRAM-SHA-1 secrets by default
SERVERS=${SERVERS:-"confab ejabberd"}
SHARED=${SHARED:-../shared}
# Per-server ramps override the common ones, e.g. LOGIN_RATES_ejabberd="25 50 100".
rates() { local var="$1_$2"; echo "${!var:-${!1}}"; }

mkdir -p "$OUT"
cargo build --release --locked -p confab-shards -p confab-loadgen --bins
LOADGEN=$PWD/target/release/confab-loadgen

# --- Confab --------------------------------------------------------------------------------
CONFAB_DIR=$(mktemp -d /tmp/confab-bench.XXXXXX)
confab_config "$CONFAB_DIR"
start_confab() {
  confab_start target/release/confab "$CONFAB_DIR"
}
stop_confab() { pkill -f "confab serve --config $CONFAB_DIR/confab.toml" || true; sleep 0.5; }

# --- ejabberd ------------------------------------------------------------------------------
start_ejabberd() {
  if ! command -v ejabberdctl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ejabberd
  fi
  su ejabberd -s /bin/bash -c "ejabberdctl stop" >/dev/null 2>&1 || true
  sleep 1
  cp "$SHARED/anchors/ejabberd-bench.yml" /etc/ejabberd/ejabberd.yml
  chown ejabberd:ejabberd /etc/ejabberd/ejabberd.yml
  # A fresh database, so each run starts from the same state.
  rm -rf /var/lib/ejabberd/*
  su ejabberd -s /bin/bash -c "ulimit -n 20000; ejabberdctl start"
  su ejabberd -s /bin/bash -c "ejabberdctl started"
  for _ in $(seq 100); do curl -s -o /dev/null -XPOST -d '{}' http://127.0.0.1:15280/api/status && break; sleep 0.2; done
  EJABBERD_PID=$(pgrep -u ejabberd -f beam.smp | head -1)
}
stop_ejabberd() { su ejabberd -s /bin/bash -c "ejabberdctl stop" >/dev/null 2>&1 || true; sleep 2; }

server_args() {
  case $1 in
    confab) echo "--server 127.0.0.1:25222 --register-api http://127.0.0.1:25280 --server-pid $CONFAB_PID" ;;
    ejabberd) echo "--server 127.0.0.1:15222 --register-api http://127.0.0.1:15280 --server-pid $EJABBERD_PID" ;;
  esac
}
start() { if [ "$1" = confab ]; then start_confab; else start_ejabberd; fi; }
stop() { if [ "$1" = confab ]; then stop_confab; else stop_ejabberd; fi; }

# p99 and failure checks on a result file: exit 0 when the step met the target.
met() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
path, kind = sys.argv[1], sys.argv[2]
r = json.load(open(path))
if kind == "login":
    ok = r["logins_failed"] == 0 and r["login_ms"]["p99"] <= 100.0
else:
    ok = r["logins_failed"] == 0 and r["messages_lost"] == 0 and r["messages_duplicated"] == 0 and r["latency_ms"]["p99"] <= 10.0
sys.exit(0 if ok else 1)
PY
}

COMMON="--domain localhost --insecure --procs 2 --mechanism $MECHANISM --prefix user --password-prefix pass"
[ -f "$OUT/commands.md" ] || echo "# $NAME: commands" > "$OUT/commands.md"

for server in $SERVERS; do
  start "$server"
  # Login ramp.
  for rate in $(rates LOGIN_RATES "$server"); do
    file=$OUT/login-$rate-$server.json
    cmd="$LOADGEN run --scenario login --rate $rate --duration ${LOGIN_SECONDS}s --users $LOGIN_USERS $COMMON $(server_args "$server") --label $server --json $file"
    echo "- \`${cmd//$PWD\//}\`" >> "$OUT/commands.md"
    $cmd || true
    [ -f "$file" ] && met "$file" login || break
  done
  # Chat ramp with CHAT_USERS online.
  for rate in $(rates CHAT_RATES "$server"); do
    file=$OUT/chat-$rate-$server.json
    cmd="$LOADGEN run --scenario chat --users $CHAT_USERS --login-rate 200 --rate $rate --duration ${CHAT_SECONDS}s $COMMON $(server_args "$server") --label $server --json $file"
    echo "- \`${cmd//$PWD\//}\`" >> "$OUT/commands.md"
    $cmd || true
    [ -f "$file" ] && met "$file" chat || break
  done
  # Idle memory at each size (fresh server each time, so RSS is not from earlier runs).
  for size in $IDLE_SIZES; do
    stop "$server"; start "$server"
    file=$OUT/idle-$size-$server.json
    cmd="$LOADGEN run --scenario idle --users $size --rate $IDLE_RATE --duration $IDLE_HOLD --keepalive 30s $COMMON $(server_args "$server") --label $server --json $file --report $OUT/idle-$size-$server"
    echo "- \`${cmd//$PWD\//}\`" >> "$OUT/commands.md"
    $cmd || true
  done
  stop "$server"
done
rm -rf "$CONFAB_DIR"

# Side-by-side tables and headline figures.
/usr/bin/python3 bench/compare-summary.py "$OUT" "$LOADGEN"
echo "results in $OUT"
