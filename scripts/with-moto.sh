#!/usr/bin/env bash
# Runs a command with a fresh moto server on 127.0.0.1 (free port) and the AWS environment pointing
# at it; stops the server afterwards, whatever the command's outcome.
# Usage: scripts/with-moto.sh CMD [ARGS...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/venv.sh"
port=$("$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log="${TMPDIR:-/tmp}/tiersync-moto-$port.log"
"$root/.venv/bin/python" "$root/scripts/moto_server.py" "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; wait $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$root/.venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
    break
  fi
  kill -0 $moto_pid 2>/dev/null || { echo "moto_server failed to start; see $log" >&2; exit 1; }
  sleep 0.1
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE AWS_SESSION_TOKEN
"$@"
