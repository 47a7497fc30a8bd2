#!/usr/bin/env bash
# Reset job vs a full parallel Scan on a local moto (issue: daily reset, benchmark).
# Usage: scripts/bench-reset.sh [--users N] [--due-percent P] [--segments S]
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-moto.sh cargo bench --locked --bench reset_scan -- "$@"
