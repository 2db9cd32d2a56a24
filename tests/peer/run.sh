#!/bin/sh
# Runs Prosody's own protocol scripts (tests/peer/scripts, see tests/peer/README.md) against a
# fresh Confab per script and compares the outcome with tests/peer/expected.txt: a script that
# passed must still pass, and a recorded difference (DIFFERENCES.md) must fail exactly where
# and how it is recorded. Anything else fails this run.
#
#   tests/peer/run.sh              run the default tiers (core xeps muc pep) and compare
#   tests/peer/run.sh --update     run and rewrite expected.txt (review the diff!)
#   tests/peer/run.sh -v SCRIPT    run one script verbosely, no comparison
#
# Environment: CONFAB_BINARY (default target/debug/confab), PEER_PORT (default 35222).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PEER_WORK=$(mktemp -d "${TMPDIR:-/tmp}/confab-peer.XXXXXX")
PEER_PORT=${PEER_PORT:-35222}
export PEER_WORK PEER_PORT
cleanup() {
  [ -f "$PEER_WORK/pid" ] && kill "$(cat "$PEER_WORK/pid")" 2>/dev/null || true
  rm -rf "$PEER_WORK"
}
trap cleanup EXIT INT TERM

python3 "$HERE/scansion-lite/scansion.py" --list-accounts --domain localhost "$HERE/scripts/prosody-0.12" > "$PEER_WORK/accounts"
export RESET_CMD="sh $HERE/reset.sh"

if [ "${1:-}" = -v ]; then
  shift
  SCANSION_OPTS="--unordered -v" sh "$HERE/run-scansion.sh" 127.0.0.1 "$PEER_PORT" localhost "$@"
  exit $?
fi

SCANSION_OPTS="--unordered" sh "$HERE/run-scansion.sh" 127.0.0.1 "$PEER_PORT" localhost core xeps muc pep \
  > "$PEER_WORK/output" 2>&1 || true
# One line per script: "name PASS" or "name FAIL line N: first words of the reason". Only the
# line number and the reason's kind are kept: ids and resources differ from run to run.
sed -n -e 's/^PASS \([^ ]*\)\.scs .*/\1 PASS/p' \
  -e 's/^FAIL \([^ ]*\)\.scs ([^)]*): line \([0-9]*\) ([^)]*): stanza mismatch: \([^:]*\).*/\1 FAIL line \2: mismatch at \3/p' \
  -e 's/^FAIL \([^ ]*\)\.scs ([^)]*): line \([0-9]*\) ([^)]*): timed out.*/\1 FAIL line \2: nothing arrives/p' \
  -e 's/^FAIL \([^ ]*\)\.scs ([^)]*): line \([0-9]*\) ([^)]*): \([^:]*\).*/\1 FAIL line \2: \3/p' \
  "$PEER_WORK/output" > "$PEER_WORK/actual"
passed=$(grep -c ' PASS$' "$PEER_WORK/actual" || true)
total=$(wc -l < "$PEER_WORK/actual")

if [ "${1:-}" = --update ]; then
  cp "$PEER_WORK/actual" "$HERE/expected.txt"
  echo "peer suite: $passed of $total scripts pass; expected.txt rewritten"
  exit 0
fi
if ! diff -u "$HERE/expected.txt" "$PEER_WORK/actual"; then
  echo "peer suite: outcome differs from tests/peer/expected.txt (above); full output:" >&2
  cat "$PEER_WORK/output" >&2
  echo "server log:" >&2
  tail -50 "$PEER_WORK/server.log" >&2
  exit 1
fi
echo "peer suite: $passed of $total scripts pass, every other one fails as DIFFERENCES.md records"
