//! CloudWatch Embedded Metric Format: one JSON log line per invocation that CloudWatch turns into
//! metrics, with no API call and no extra latency.

use serde_json::{json, Map, Value};

/// Default metrics namespace (override with `METRICS_NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "tiersync";

/// One EMF line: every pair becomes a `Count` metric under `namespace`, with the dimension
/// `Service = service`.
pub fn emf_line(
    namespace: &str,
    service: &str,
    timestamp_ms: i64,
    values: &[(&str, u64)],
) -> String {
    emf_line_with_units(
        namespace,
        service,
        timestamp_ms,
        values.iter().map(|&(k, v)| (k, v as f64, "Count")),
    )
}

/// Like [`emf_line`] with a unit per metric (e.g. `Milliseconds`).
pub fn emf_line_with_units<'a>(
    namespace: &str,
    service: &str,
    timestamp_ms: i64,
    values: impl IntoIterator<Item = (&'a str, f64, &'a str)>,
) -> String {
    let mut root = Map::new();
    let mut definitions = Vec::new();
    for (name, value, unit) in values {
        definitions.push(json!({"Name": name, "Unit": unit}));
        root.insert(name.to_owned(), json!(value));
    }
    root.insert("Service".into(), Value::String(service.to_owned()));
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Service"]],
                "Metrics": definitions,
            }]
        }),
    );
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_every_metric_and_carries_its_value() {
        let line = emf_line(
            "tiersync",
            "sync",
            1_764_806_400_000,
            &[("poison", 2), ("applied", 5)],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_764_806_400_000i64);
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "tiersync");
        assert_eq!(cw["Dimensions"], json!([["Service"]]));
        assert_eq!(
            cw["Metrics"],
            json!([{"Name": "poison", "Unit": "Count"}, {"Name": "applied", "Unit": "Count"}])
        );
        assert_eq!(
            (
                v["poison"].as_f64(),
                v["applied"].as_f64(),
                v["Service"].as_str()
            ),
            (Some(2.0), Some(5.0), Some("sync"))
        );
    }
}
