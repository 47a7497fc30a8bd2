"""Checks that infra/template.yaml's table is the table `tiersync table create` makes.

Usage: check_table_definition.py TEMPLATE DEFINITION_JSON
DEFINITION_JSON is the output of `tiersync table definition`. Exits 1 naming every difference.
"""
import json
import sys

from cfnlint.decode import cfn_yaml


def normalise(value):
    """Drops cfn-lint's line-number wrappers and sorts lists of dicts by name."""
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalise(v) for v in value]
        if all(isinstance(i, dict) for i in items):
            items.sort(key=lambda i: json.dumps(i, sort_keys=True))
        return items
    return value if isinstance(value, (int, float, bool)) or value is None else str(value)


def main() -> int:
    template = cfn_yaml.load(sys.argv[1])
    with open(sys.argv[2]) as f:
        want = normalise(json.load(f))
    props = normalise(template["Resources"]["Table"]["Properties"])
    diffs = [
        f"{key}: template has {json.dumps(props.get(key))}, tiersync creates {json.dumps(value)}"
        for key, value in want.items()
        if props.get(key) != value
    ]
    for d in diffs:
        print("table definition differs:", d)
    if not diffs:
        print(f"template table == `tiersync table create` ({', '.join(want)})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
