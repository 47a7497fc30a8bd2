#!/usr/bin/env bash
# Lints infra/template.yaml with cfn-lint (plus the serverless rules) and checkov. Both must
# report zero unsuppressed findings; every suppression sits on its resource with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lint
scripts/venv.sh "$venv" requirements-lint.txt
echo "cfn-lint (with cfn_lint_serverless.rules):"
"$venv/bin/cfn-lint" --append-rules cfn_lint_serverless.rules -- infra/template.yaml
echo "  no findings"
echo "checkov:"
"$venv/bin/checkov" --quiet --compact --skip-download --framework cloudformation -f infra/template.yaml
echo "table definition:"
cargo build --locked --quiet --bin tiersync
target/debug/tiersync table definition > "$venv/table-definition.json"
"$venv/bin/python" infra/check_table_definition.py infra/template.yaml "$venv/table-definition.json"
