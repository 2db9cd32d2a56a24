# Shared by the bench scripts (sourced): a Confab on the bench ports, started and waited for.
# The scripts run from the repository root.

# confab_config DIR [EXTRA_TOML]: writes DIR/confab.toml (store in DIR/data): two shards,
# client ports 25222 (STARTTLS) and 25223 (direct TLS), admin API on 25280, warnings only;
# EXTRA_TOML (whole sections) is appended.
confab_config() {
  cat > "$1/confab.toml" <<TOML
domain = "localhost"
data_dir = "$1/data"
shards = 2
[listen]
c2s = "127.0.0.1:25222"
c2s_tls = "127.0.0.1:25223"
http = "127.0.0.1:25280"
[log]
level = "warn"
${2:-}
TOML
}

# confab_start BINARY DIR: starts BINARY on DIR/confab.toml in the background (its log in
# DIR/log, 20,000 file descriptors), sets CONFAB_PID and waits until the admin API answers.
confab_start() {
  (ulimit -n 20000; exec "$1" serve --config "$2/confab.toml" >"$2/log" 2>&1) &
  CONFAB_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null -XPOST -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:25280/api/status && break
    sleep 0.1
  done
}
