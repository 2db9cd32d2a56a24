#!/usr/bin/env bash
# Side by side, in one run: XEP-0045 multi-user chat against Confab and ejabberd 23.01 on this
# machine, with the same confab-loadgen `muc` scenario, results and ratios in results/<name>/.
#
#   bench/compare-muc.sh [results-name]
#   SERVERS=ejabberd FANOUT_OCCUPANTS=20 ROOMS=2 ROOM_OCCUPANTS=5 ROOM_RATES=10 bench/compare-muc.sh muc-small
#
# 1. fan-out:    one room of FANOUT_OCCUPANTS occupants, FANOUT_RATE posts/s in total (each
#                delivered to the FANOUT_OCCUPANTS − 1 others) for FANOUT_SECONDS: latency per
#                delivered copy, missing and duplicated copies.
# 2. throughput: ROOMS rooms of ROOM_OCCUPANTS occupants at each of ROOM_RATES posts/s in total
#                (× ROOM_OCCUPANTS − 1 copies each) for ROOM_SECONDS: delivered copies/s,
#                latency, loss, server CPU per copy.
#
# Every occupant posts every rooms × occupants / rate seconds (--interval), open loop. Each run
# logs its users in at LOGIN_RATE, then the rooms' creators join (and unlock their new room as
# an instant room), then the other occupants at JOIN_RATE (FANOUT_JOIN_RATE for the big room),
# then, after JOIN_GRACE (FANOUT_JOIN_GRACE), the posts start. Before every
# run the script waits (up to SETTLE_MAX s) until the server has been idle for two seconds;
# the wait is recorded in commands.md.
#
# Accounts are provisioned through each server's ejabberd-compatible admin API (register).
# Needs root (starts ejabberd from Debian, configured with ../shared/anchors/ejabberd-bench.yml,
# its mod_muc patched below so a room may hold FANOUT_OCCUPANTS). Each server starts from an
# empty database. When ejabberd is shared with other work, run the script under
# `flock /tmp/ejabberd.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

NAME=${1:-muc-$(date -u +%Y%m%d)}
OUT=results/$NAME
FANOUT_OCCUPANTS=${FANOUT_OCCUPANTS:-1000}
FANOUT_RATE=${FANOUT_RATE:-2}          # posts/s in the room: × 999 = 1,998 copies/s
FANOUT_SECONDS=${FANOUT_SECONDS:-20}
# Filling a room of n costs the server n²/2 presence copies (each newcomer's presence goes to
# everyone already there): ~500,000 for 1,000 occupants, which ejabberd 23.01 takes tens of
# seconds of CPU for here. Joins at 200/s left it 30 s behind (72 joins timed out and no post
# got through before the end), so the big room fills slowly and gets time to drain.
FANOUT_JOIN_RATE=${FANOUT_JOIN_RATE:-20}
FANOUT_JOIN_GRACE=${FANOUT_JOIN_GRACE:-30s}
ROOMS=${ROOMS:-100}
ROOM_OCCUPANTS=${ROOM_OCCUPANTS:-50}
ROOM_RATES=${ROOM_RATES:-"100 200 400"}  # posts/s in total, × 49 copies each
ROOM_SECONDS=${ROOM_SECONDS:-20}
LOGIN_RATE=${LOGIN_RATE:-200}          # logins/s before the joins
# 100 rooms of 50 cost 122,500 presence copies to fill: at 200 joins/s ejabberd fell ~6 s
# behind (594 joins completed after the posts began), so they go at 100/s with a 10 s grace.
JOIN_RATE=${JOIN_RATE:-100}            # joins/s in the many-room runs
JOIN_GRACE=${JOIN_GRACE:-10s}          # between the last join and the first post
# A worker holds whole rooms; no process may hold more than ~15,000 sockets (20,000 fds).
SOCKETS_PER_PROC=${SOCKETS_PER_PROC:-15000}
SETTLE_MAX=${SETTLE_MAX:-120}
MECHANISM=${MECHANISM:-SCRAM-SHA-1}    # ejabberd stores SCRAM-SHA-1 secrets by default
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
CONFAB_DIR=$(mktemp -d /tmp/confab-muc.XXXXXX)
confab_config "$CONFAB_DIR" "[muc]
max_users = 2000                 # per-room occupant cap (service-wide), also the default for new rooms
occupant_messages_per_s = 1000   # per-occupant rate limit (the default is low)
occupant_burst = 1000"
sed "s|$CONFAB_DIR|/tmp/confab-muc.XXXXXX|" "$CONFAB_DIR/confab.toml" > "$OUT/confab.toml"
CONFAB_PID=
start_confab() { confab_start "$CONFAB" "$CONFAB_DIR"; }
stop_confab() {
  [ -n "$CONFAB_PID" ] || return 0
  kill "$CONFAB_PID" 2>/dev/null || true; wait "$CONFAB_PID" 2>/dev/null || true; CONFAB_PID=
  rm -rf "$CONFAB_DIR/data"
}

# --- ejabberd ------------------------------------------------------------------------------
ejabberd_config() {
  # The anchor configuration with its mod_muc opened up to FANOUT_OCCUPANTS-occupant rooms:
  # max_users is the service cap (default 200) and the new rooms' own cap; max_users_presence
  # (default 1000) is where ejabberd stops broadcasting occupants' presence; no message or
  # presence interval (min_message_interval, min_presence_interval) and no shapers are set,
  # so nothing throttles an occupant. History (20) and the room archive (mam) stay as the
  # anchor has them; joins ask for no history.
  sed '/^  mod_muc:$/,/^      mam: true$/c\
  mod_muc:\
    history_size: 20\
    access_create: all\
    max_users: 2000\
    max_users_presence: 2000\
    max_user_conferences: 1000\
    default_room_options:\
      mam: true\
      max_users: 2000' "$SHARED/anchors/ejabberd-bench.yml"
}
EJABBERD_PID=
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
stop_ejabberd() {
  [ -n "$EJABBERD_PID" ] || return 0
  su ejabberd -s /bin/bash -c "ejabberdctl stop" >/dev/null 2>&1 || true; sleep 2; EJABBERD_PID=
}
ejabberd_config > "$OUT/ejabberd.yml"
grep -q 'max_users_presence: 2000' "$OUT/ejabberd.yml" || { echo "the anchor's mod_muc block was not patched" >&2; exit 1; }
# A failed run must not leave a server behind (ejabberd is shared).
trap 'stop_confab; stop_ejabberd' EXIT

start() { if [ "$1" = confab ]; then start_confab; else start_ejabberd; fi; }
stop() { if [ "$1" = confab ]; then stop_confab; else stop_ejabberd; fi; }
server_pid() { if [ "$1" = confab ]; then echo "$CONFAB_PID"; else echo "$EJABBERD_PID"; fi; }
server_args() {
  case $1 in
    confab) echo "--server 127.0.0.1:25222 --server-pid $CONFAB_PID" ;;
    ejabberd) echo "--server 127.0.0.1:15222 --server-pid $EJABBERD_PID" ;;
  esac
}
api() { case $1 in confab) echo http://127.0.0.1:25280 ;; ejabberd) echo http://127.0.0.1:15280 ;; esac; }
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
# Seconds between one occupant's posts for a total of $3 posts/s from $1 rooms of $2.
interval() { awk -v r="$1" -v s="$2" -v rate="$3" 'BEGIN { printf "%.6f", r * s / rate }'; }
# Workers for $1 rooms of $2: whole rooms per worker, at most SOCKETS_PER_PROC sockets each.
procs() {
  local per_room=$(( SOCKETS_PER_PROC / $2 )) n
  [ "$per_room" -ge 1 ] || per_room=1
  n=$(( ($1 + per_room - 1) / per_room ))
  [ "$n" -ge 2 ] || n=2
  [ "$n" -le "$1" ] || n=$1
  echo "$n"
}

COMMON="--domain localhost --insecure --mechanism $MECHANISM --prefix user --password-prefix pass --login-rate $LOGIN_RATE"
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
  # Accounts are provisioned by the first run of each kind (registering is idempotent).
  # shellcheck disable=SC2046
  record "$LOADGEN" run --scenario muc --rooms 1 --occupants "$FANOUT_OCCUPANTS" \
    --interval "$(interval 1 "$FANOUT_OCCUPANTS" "$FANOUT_RATE")" --duration "${FANOUT_SECONDS}s" \
    --join-rate "$FANOUT_JOIN_RATE" --join-grace "$FANOUT_JOIN_GRACE" \
    --procs "$(procs 1 "$FANOUT_OCCUPANTS")" $COMMON $(server_args "$server") --register-api "$url" \
    --label "$server" --json "$OUT/muc-fanout-$FANOUT_OCCUPANTS-$server.json"
  register="--register-api $url"
  for rate in $ROOM_RATES; do
    # shellcheck disable=SC2046,SC2086
    record "$LOADGEN" run --scenario muc --rooms "$ROOMS" --occupants "$ROOM_OCCUPANTS" \
      --interval "$(interval "$ROOMS" "$ROOM_OCCUPANTS" "$rate")" --duration "${ROOM_SECONDS}s" \
      --join-rate "$JOIN_RATE" --join-grace "$JOIN_GRACE" \
      --procs "$(procs "$ROOMS" "$ROOM_OCCUPANTS")" $COMMON $(server_args "$server") $register \
      --label "$server" --json "$OUT/muc-rooms-$rate-$server.json"
    register=
  done
  stop "$server"
done
rm -rf "$CONFAB_DIR"

/usr/bin/python3 bench/compare-muc-summary.py "$OUT" "$LOADGEN"
echo "results in $OUT"
