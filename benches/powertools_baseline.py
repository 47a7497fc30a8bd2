"""The common alternative, measured on the same events: Powertools for AWS Lambda (Python),
BatchProcessor(EventType.DynamoDBStreams), with per-record logic equivalent to tiersync's
decode-and-decide (keys, event name, old/new tier_version, tier validation, coalescing).

Usage: powertools_baseline.py EVENT.json [EVENT.json ...]   prints one JSON line per event.
"""
import json
import statistics
import sys
import time

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

TIERS = {"free", "premium"}


def run(event):
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    plan = {}

    def record_handler(record: DynamoDBRecord):
        change = record.dynamodb
        keys = change.keys
        if keys.get("SK") != "USAGE#LIMITS":
            return
        if record.event_name.name not in ("INSERT", "MODIFY"):
            return
        new = change.new_image or {}
        old = change.old_image or {}
        new_v = int(new.get("tier_version", 0))
        old_v = int(old.get("tier_version", 0))
        if new_v <= old_v:
            return
        tier = new.get("tier")
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}")
        user = keys["PK"].removeprefix("USER#")
        if plan.get(user, (0, None))[0] < new_v:
            plan[user] = (new_v, tier)

    response = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=None)
    return plan, response


def main():
    for path in sys.argv[1:]:
        with open(path) as f:
            text = f.read()
        n = len(json.loads(text)["Records"])
        times = []
        for _ in range(7):
            started = time.perf_counter()
            # Same scope as the Rust bench: parse the event JSON, then decode and decide.
            plan, response = run(json.loads(text))
            times.append(time.perf_counter() - started)
        assert response == {"batchItemFailures": []}, response
        per_record_us = statistics.median(times) / n * 1e6
        print(json.dumps({"event": path, "records": n, "writes": len(plan), "us_per_record": round(per_record_us, 2)}))


if __name__ == "__main__":
    main()
