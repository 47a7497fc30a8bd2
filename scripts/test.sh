#!/usr/bin/env bash
# Runs every test: unit and property tests, the integration tests against a fresh moto server
# (installed into .venv on first use), and the benches as small smoke tests. Extra arguments go
# to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-moto.sh bash -c 'cargo test --locked --benches "$@" && cargo test --locked --lib --bins --tests "$@"' _ "$@"
