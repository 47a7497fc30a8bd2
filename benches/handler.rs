//! Handler CPU: decode and decide per record (the whole `plan`: split the event, decode every
//! record, decide, coalesce) on realistic 1,000- and 10,000-record events. No I/O. The event is
//! decoded from bytes, as `sync-lambda` does (`StreamEvent::from_bytes` in `lambda::DecodeFirst`).
//! `via_raw_value` is the way a Lambda without that layer would decode it, and `json_floor` is
//! serde_json's bare parse of the same text, for comparison.
//! Run: `scripts/bench.sh` (also writes the events for the Powertools baseline).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tiersync::handler::{plan, StreamEvent};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    for n in [1_000usize, 10_000] {
        let event = common::event(n, (n / 4) as u64, 42);
        common::write_event(&format!("mix-{n}.json"), &event);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n}_records"), |b| {
            b.iter(|| {
                let raw = StreamEvent::from_bytes(black_box(event.as_bytes())).unwrap();
                black_box(plan("tiersync", &raw))
            })
        });
        // What the function would cost without the `DecodeFirst` layer: lambda_runtime reads the
        // payload through serde_path_to_error, here into raw JSON, which is then scanned again.
        group.bench_function(format!("{n}_records_via_raw_value"), |b| {
            b.iter(|| {
                let d = &mut serde_json::Deserializer::from_slice(black_box(event.as_bytes()));
                let body: Box<serde_json::value::RawValue> =
                    serde_path_to_error::deserialize(d).unwrap();
                let raw: StreamEvent = body.get().parse().unwrap();
                black_box(plan("tiersync", &raw))
            })
        });
        // For scale: serde_json reading the same text into nothing (`IgnoredAny`), the least any
        // serde-based decoder can cost.
        group.bench_function(format!("{n}_records_json_floor"), |b| {
            b.iter(|| {
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(event.as_bytes()))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
