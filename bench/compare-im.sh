#!/usr/bin/env bash
# Side by side, in one run: the IM benchmarks of issue #4 against Confab and ejabberd 23.01 on
# this machine, with the same confab-loadgen scenarios, results and ratios in results/<name>/.
#
#   bench/compare-im.sh [results-name]
#
# 1. roster:   logins whose accounts hold a CONTACTS-item roster: roster load time (roster get
#              sent → result) and full login time.
# 2. presence: USERS online, each with CONTACTS mutual contacts online; PRESENCE_RATE status
#              changes per second: fan-out latency per delivered copy, missing/duplicated copies.
# 3. mam:      each user sends MAM_MESSAGES messages to its contacts (at MAM_FILL_RATE, which
#              ejabberd's archive keeps up with here), then queries per second for the last 50
#              (RSM <max>50</max><before/>) at each of MAM_RATES: query → <fin/> latency, whole
#              pages. Later rates query the same archives (--messages 0: no second filling).
# 4. mixed:    at each of MIXED_RATES events/s: chat 70%, presence 20%, roster gets 5%,
#              archive queries 5%.
#
# Before every run the script waits (up to SETTLE_MAX s) until the server has been idle for
# two seconds, so no run inherits the backlog of an overloaded one (ejabberd keeps answering
# the archive queries of sessions already gone); the wait is recorded in commands.md.
#
# Accounts and rosters are provisioned through each server's ejabberd-compatible admin API
# (register, then add_rosteritem for both directions with subs=both). Needs root (starts
# ejabberd from Debian, configured with ../shared/anchors/ejabberd-bench.yml plus
# mod_admin_extra, which add_rosteritem lives in). Each server starts from an empty database.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

NAME=${1:-im-$(date -u +%Y%m%d)}
OUT=results/$NAME
USERS=${USERS:-200}
CONTACTS=${CONTACTS:-100}
LOGIN_RATE=${LOGIN_RATE:-25}          # arrivals/s before the presence, mam and mixed phases
ROSTER_RATE=${ROSTER_RATE:-20}        # roster: logins/s ...
ROSTER_SECONDS=${ROSTER_SECONDS:-10}  # ... for this long (20 × 10 = every account once)
PRESENCE_RATES=${PRESENCE_RATES:-"20 100"}
PRESENCE_SECONDS=${PRESENCE_SECONDS:-20}
MAM_MESSAGES=${MAM_MESSAGES:-100}
# ejabberd 23.01 (mnesia archive) falls behind at 500 archived messages/s on this box with the
# load generator beside it; at 250/s its delivery p99 stays in milliseconds.
MAM_FILL_RATE=${MAM_FILL_RATE:-250}
# ejabberd spends ~0.25 s of CPU per query here: 2/s it sustains, 20/s it does not.
MAM_RATES=${MAM_RATES:-"2 20"}
MAM_SECONDS=${MAM_SECONDS:-20}
MIXED_RATES=${MIXED_RATES:-"40"}       # 5% archive queries: 2/s at 40 events/s
MIXED_SECONDS=${MIXED_SECONDS:-20}
SETTLE_MAX=${SETTLE_MAX:-120}
MECHANISM=${MECHANISM:-SCRAM-SHA-1}   # ejabberd stores SCRAM-SHA-1 secrets by default
SERVERS=${SERVERS:-"confab ejabberd"}
SHARED=${SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --locked -p confab-shards -p confab-loadgen --bins
fi
LOADGEN=$TARGET/release/confab-loadgen
CONFAB=$TARGET/release/confab

# --- Confab --------------------------------------------------------------------------------
CONFAB_DIR=$(mktemp -d /tmp/confab-im.XXXXXX)
confab_config "$CONFAB_DIR"
sed "s|$CONFAB_DIR|/tmp/confab-im.XXXXXX|" "$CONFAB_DIR/confab.toml" > "$OUT/confab.toml"
start_confab() { confab_start "$CONFAB" "$CONFAB_DIR"; }
stop_confab() { kill "$CONFAB_PID" 2>/dev/null || true; wait "$CONFAB_PID" 2>/dev/null || true; rm -rf "$CONFAB_DIR/data"; }

# --- ejabberd ------------------------------------------------------------------------------
ejabberd_config() {
  # The anchor configuration, plus mod_admin_extra (add_rosteritem); its api_permissions
  # already let loopback call every command.
  sed '/^modules:/a\  mod_admin_extra: {}' "$SHARED/anchors/ejabberd-bench.yml"
}
start_ejabberd() {
  if ! command -v ejabberdctl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ejabberd
  fi
  su ejabberd -s /bin/bash -c "ejabberdctl stop" >/dev/null 2>&1 || true
  sleep 1
  ejabberd_config > /etc/ejabberd/ejabberd.yml
  chown ejabberd:ejabberd /etc/ejabberd/ejabberd.yml
  rm -rf /var/lib/ejabberd/*   # a fresh database
  su ejabberd -s /bin/bash -c "ulimit -n 20000; ejabberdctl start"
  su ejabberd -s /bin/bash -c "ejabberdctl started"
  for _ in $(seq 100); do curl -s -o /dev/null -XPOST -d '{}' http://127.0.0.1:15280/api/status && break; sleep 0.2; done
  EJABBERD_PID=$(pgrep -u ejabberd -f beam.smp | head -1)
}
stop_ejabberd() { su ejabberd -s /bin/bash -c "ejabberdctl stop" >/dev/null 2>&1 || true; sleep 2; }
ejabberd_config > "$OUT/ejabberd.yml"

start() { if [ "$1" = confab ]; then start_confab; else start_ejabberd; fi; }
stop() { if [ "$1" = confab ]; then stop_confab; else stop_ejabberd; fi; }
server_pid() { if [ "$1" = confab ]; then echo "$CONFAB_PID"; else echo "$EJABBERD_PID"; fi; }
server_args() {
  case $1 in
    confab) echo "--server 127.0.0.1:25222 --server-pid $CONFAB_PID" ;;
    ejabberd) echo "--server 127.0.0.1:15222 --server-pid $EJABBERD_PID" ;;
  esac
}
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Seconds until the process used under 5% of a core for two seconds in a row (or SETTLE_MAX).
settle() {
  local pid=$1 waited=0 quiet=0 before after limit
  limit=$(( $(getconf CLK_TCK) / 20 ))
  while [ "$waited" -lt "$SETTLE_MAX" ] && [ "$quiet" -lt 2 ]; do
    before=$(cpu_ticks "$pid"); sleep 1; after=$(cpu_ticks "$pid"); waited=$((waited + 1))
    if [ $((after - before)) -le "$limit" ]; then quiet=$((quiet + 1)); else quiet=0; fi
  done
  echo "$waited"
}
api() { case $1 in confab) echo http://127.0.0.1:25280 ;; ejabberd) echo http://127.0.0.1:15280 ;; esac; }

COMMON="--domain localhost --insecure --procs 2 --mechanism $MECHANISM --prefix user --password-prefix pass --users $USERS --contacts $CONTACTS"
{
  echo "# $NAME: commands"
  echo
  echo "git $(git rev-parse HEAD)$(git diff --quiet HEAD -- core shards loadgen || echo ' (with uncommitted changes)'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "Confab configuration: [confab.toml](confab.toml); ejabberd's: [ejabberd.yml](ejabberd.yml)."
  echo
} > "$OUT/commands.md"
record() {
  local waited
  waited=$(settle "$(server_pid "$server")")
  echo "- \`${*//$PWD\//}\`" >> "$OUT/commands.md"
  echo "  (server idle after ${waited} s of waiting; load average before: $(cut -d' ' -f1-3 /proc/loadavg))" >> "$OUT/commands.md"
  "$@" || echo "  (exited with $?)" >> "$OUT/commands.md"
}

for server in $SERVERS; do
  start "$server"
  url=$(api "$server")
  # Accounts and rosters are provisioned once, by the first run (their time is recorded in
  # its JSON as roster_provisioning_s).
  # shellcheck disable=SC2046
  record "$LOADGEN" run --scenario roster --rate "$ROSTER_RATE" --duration "${ROSTER_SECONDS}s" $COMMON $(server_args "$server") \
    --register-api "$url" --roster-api "$url" --label "$server" --json "$OUT/roster-$CONTACTS-$server.json"
  for rate in $PRESENCE_RATES; do
    # shellcheck disable=SC2046
    record "$LOADGEN" run --scenario presence --login-rate "$LOGIN_RATE" --rate "$rate" --duration "${PRESENCE_SECONDS}s" $COMMON \
      $(server_args "$server") --label "$server" --json "$OUT/presence-$rate-$server.json"
  done
  messages=$MAM_MESSAGES
  for rate in $MAM_RATES; do
    # shellcheck disable=SC2046
    record "$LOADGEN" run --scenario mam --login-rate "$LOGIN_RATE" --messages "$messages" --fill-rate "$MAM_FILL_RATE" --page 50 \
      --rate "$rate" --duration "${MAM_SECONDS}s" $COMMON $(server_args "$server") --label "$server" --json "$OUT/mam-$rate-$server.json"
    messages=0
  done
  for rate in $MIXED_RATES; do
    # shellcheck disable=SC2046
    record "$LOADGEN" run --scenario mixed --login-rate "$LOGIN_RATE" --rate "$rate" --duration "${MIXED_SECONDS}s" --page 50 $COMMON \
      $(server_args "$server") --label "$server" --json "$OUT/mixed-$rate-$server.json"
  done
  stop "$server"
done
rm -rf "$CONFAB_DIR"

/usr/bin/python3 bench/compare-im-summary.py "$OUT" "$LOADGEN"
echo "results in $OUT"
