//! Typed configuration, read once at start from the environment and validated there, so a bad
//! value fails the cold start with a clear message instead of a later invocation.

use crate::handler::DEFAULT_CONCURRENCY;
use crate::metrics::DEFAULT_NAMESPACE;
use crate::schema::Tier;

/// A configuration value that is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Reads a whole number in `range` from `name`, or `default` when unset.
fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ConfigError(format!(
                    "{name} must be a whole number in {}..={}, got {v:?}",
                    range.start(),
                    range.end()
                ))
            }),
    }
}

fn table(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    get("TABLE_NAME")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ConfigError("TABLE_NAME is not set".into()))
}

/// Daily request limits per tier: `FREE_DAILY_LIMIT` (default 10) and `PREMIUM_DAILY_LIMIT`
/// (default 1000), each at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub free: u64,
    pub premium: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            free: 10,
            premium: 1000,
        }
    }
}

impl Limits {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            free: number(&get, "FREE_DAILY_LIMIT", d.free, 1..=u32::MAX as u64)?,
            premium: number(&get, "PREMIUM_DAILY_LIMIT", d.premium, 1..=u32::MAX as u64)?,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn for_tier(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Free => self.free,
            Tier::Premium => self.premium,
        }
    }
}

/// `sync-lambda`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// `TABLE_NAME` (required).
    pub table: String,
    /// `SYNC_CONCURRENCY`: concurrent PROFILE writes per batch (default 64).
    pub concurrency: usize,
    /// `METRICS_NAMESPACE` (default `tiersync`).
    pub namespace: String,
}

impl SyncConfig {
    /// Reads the configuration through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            table: table(&get)?,
            concurrency: number(
                &get,
                "SYNC_CONCURRENCY",
                DEFAULT_CONCURRENCY as u64,
                1..=1024,
            )? as usize,
            namespace: get("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// `reset-lambda`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetConfig {
    /// `TABLE_NAME` (required).
    pub table: String,
    /// `RESET_CONCURRENCY`: concurrent reset writes (default 64).
    pub concurrency: usize,
    /// `RESET_SAFETY_MARGIN_MS`: stop this long before the Lambda deadline (default 3000).
    pub safety_margin_ms: u64,
    /// `METRICS_NAMESPACE` (default `tiersync`).
    pub namespace: String,
}

impl ResetConfig {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            table: table(&get)?,
            concurrency: number(&get, "RESET_CONCURRENCY", 64, 1..=1024)? as usize,
            safety_margin_ms: number(&get, "RESET_SAFETY_MARGIN_MS", 3000, 0..=600_000)?,
            namespace: get("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn sync_config_is_validated_at_start() {
        let cfg = SyncConfig::from_lookup(lookup(&[("TABLE_NAME", "t")])).unwrap();
        assert_eq!(
            cfg,
            SyncConfig {
                table: "t".into(),
                concurrency: 64,
                namespace: "tiersync".into()
            }
        );
        assert_eq!(
            SyncConfig::from_lookup(lookup(&[]))
                .unwrap_err()
                .to_string(),
            "invalid configuration: TABLE_NAME is not set"
        );
        let bad =
            SyncConfig::from_lookup(lookup(&[("TABLE_NAME", "t"), ("SYNC_CONCURRENCY", "0")]));
        assert_eq!(
            bad.unwrap_err().to_string(),
            "invalid configuration: SYNC_CONCURRENCY must be a whole number in 1..=1024, got \"0\""
        );
    }

    #[test]
    fn limits_default_and_reject_nonsense() {
        assert_eq!(
            Limits::from_lookup(lookup(&[])).unwrap(),
            Limits {
                free: 10,
                premium: 1000
            }
        );
        let set = Limits::from_lookup(lookup(&[
            ("FREE_DAILY_LIMIT", "3"),
            ("PREMIUM_DAILY_LIMIT", "50"),
        ]))
        .unwrap();
        assert_eq!(
            (set.for_tier(Tier::Free), set.for_tier(Tier::Premium)),
            (3, 50)
        );
        for bad in ["0", "-1", "ten", "1.5"] {
            let err = Limits::from_lookup(lookup(&[("FREE_DAILY_LIMIT", bad)])).unwrap_err();
            assert!(err.to_string().contains("FREE_DAILY_LIMIT"), "{bad}: {err}");
        }
    }

    #[test]
    fn reset_config_defaults() {
        let cfg = ResetConfig::from_lookup(lookup(&[("TABLE_NAME", "t")])).unwrap();
        assert_eq!((cfg.concurrency, cfg.safety_margin_ms), (64, 3000));
    }
}
