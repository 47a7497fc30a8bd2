#!/usr/bin/env bash
# Runs every test: unit and property tests, then the integration tests against a fresh moto
# server (installed into .venv on first use). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-moto.sh cargo test --locked --all-targets "$@"
