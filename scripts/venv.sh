#!/usr/bin/env bash
# Creates a project-local Python venv with pinned packages; idempotent (a stamp of the
# requirements file's hash skips the install when nothing changed).
# Usage: scripts/venv.sh [DIR REQUIREMENTS]   (default: .venv requirements-dev.txt, for moto)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
reqs=${2:-requirements-dev.txt}
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
echo "$want" > "$stamp"
