#!/usr/bin/env bash
# The main job on a fresh machine: installs moto into .venv, starts it on 127.0.0.1, creates the
# table and demo users, changes tiers (and usage, which must not sync), runs the stream worker
# once, and prints a short summary.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  cargo build --locked --quiet --bin tiersync
  exec scripts/with-moto.sh "$0" "$@"
fi
ts=target/debug/tiersync
export TABLE_NAME=${TABLE_NAME:-tiersync-demo}
state=$(mktemp -d)/checkpoint.json
$ts table create >/dev/null
users=(alice bob carol dave erin)
for u in "${users[@]}"; do $ts user create "$u" --tier free >/dev/null; done
$ts set-tier alice premium >/dev/null
$ts set-tier bob premium >/dev/null
$ts set-tier bob free >/dev/null
$ts set-tier carol premium >/dev/null
$ts set-tier carol premium >/dev/null   # same tier: no write, no version bump
$ts set-tier erin premium >/dev/null
summary=$($ts worker --once --from-start --state-file "$state" 2>/dev/null)
in_sync=0
for u in "${users[@]}"; do
  if $ts user show "$u" | .venv/bin/python -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["in_sync"] else 1)'; then
    in_sync=$((in_sync + 1))
  fi
done
SUMMARY="$summary" IN_SYNC=$in_sync TOTAL=${#users[@]} .venv/bin/python - <<'PY'
import json, os
s = json.loads(os.environ["SUMMARY"])
h = s["handler"]
print(f"records seen:   {s['records_read']}")
print(f"tier changes:   {h['relevant']} (coalesced to {h['writes']} PROFILE writes)")
print(f"writes applied: {h['applied']} (already current: {h['already_current']}, failed: {h['failed']}, poison: {h['poison']})")
print(f"users in sync:  {os.environ['IN_SYNC']}/{os.environ['TOTAL']}")
PY
[ "$in_sync" -eq "${#users[@]}" ]
