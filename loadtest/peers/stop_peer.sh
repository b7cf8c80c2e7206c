#!/usr/bin/env bash
# Stops what start_peer.sh started: its process group (SIGTERM, then SIGKILL after 20 s).
pg="$1"
kill -TERM -- -"$pg" 2>/dev/null || exit 0
for _ in $(seq 1 20); do kill -0 -- -"$pg" 2>/dev/null || exit 0; sleep 1; done
kill -KILL -- -"$pg" 2>/dev/null || true
