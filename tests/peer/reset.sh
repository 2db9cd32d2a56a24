#!/bin/sh
# RESET_CMD for the peer suite: (re)start Confab with empty storage on embedded defaults
# (only the domain, ports and data directory are set) and create every account the
# scripts log in with, through the admin API. Run by tests/peer/run.sh before each script.
#
# Environment: CONFAB_BINARY (default target/debug/confab), PEER_WORK (state directory),
# PEER_PORT (c2s port; c2s_tls = +1, http = +2).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${CONFAB_BINARY:-$HERE/../../target/debug/confab}
WORK=${PEER_WORK:?PEER_WORK must name a state directory}
PORT=${PEER_PORT:-35222}
API=http://127.0.0.1:$((PORT + 2))/api

if [ -f "$WORK/pid" ]; then
  kill "$(cat "$WORK/pid")" 2>/dev/null || true
  # Wait for the old process to let go of its ports and files.
  for _ in $(seq 100); do kill -0 "$(cat "$WORK/pid")" 2>/dev/null || break; sleep 0.05; done
fi
rm -rf "$WORK/data"
# Glommio listens with SO_REUSEPORT: a stray server on the same port would silently take half
# of the connections. Refuse to start beside one.
if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.5)" 2>/dev/null; then
  echo "port $PORT is already in use by another process" >&2
  exit 1
fi
mkdir -p "$WORK"
cat > "$WORK/confab.toml" <<EOF
domain = "localhost"
data_dir = "$WORK/data"
[listen]
c2s = "127.0.0.1:$PORT"
c2s_tls = "127.0.0.1:$((PORT + 1))"
http = "127.0.0.1:$((PORT + 2))"
EOF
"$BIN" serve --config "$WORK/confab.toml" >> "$WORK/server.log" 2>&1 &
echo $! > "$WORK/pid"

api() {
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d "$2" "$API/$1" || true
}
up=""
for _ in $(seq 400); do
  [ "$(api status '{}')" = 200 ] && { up=1; break; }
  sleep 0.05
done
[ -n "$up" ] || { echo "confab did not start; see $WORK/server.log" >&2; exit 1; }

for account in $(cat "$WORK/accounts"); do
  code=$(api register "{\"user\":\"${account%@*}\",\"host\":\"localhost\",\"password\":\"password\"}")
  [ "$code" = 200 ] || { echo "registering $account: HTTP $code" >&2; exit 1; }
done
