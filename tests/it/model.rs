//! A model of Lambda's event source mapping that drives the real sync handler through generated
//! delivery schedules (deterministic simulation, VOPR-style): batches and their boundaries,
//! duplicates, partial failures with redelivery from the lowest reported sequence number,
//! crashes between a PROFILE write and the checkpoint, function errors with bisected retries,
//! replays of old ranges, and interleaving across shards. Every case is a pure function of one seed: a failure prints the seed, and
//! `TIERSYNC_MODEL_SEED=<seed> cargo test --test it model::` replays it exactly.
//!
//! Invariants, checked after every handler call or at the end:
//! - PROFILE's `tier_version` never decreases;
//! - the handler reports, for each failed user, a sequence number of this batch no later than
//!   that user's highest-version record (so the redelivery carries it), and nothing on success;
//! - once every record was delivered at least once, PROFILE equals USAGE#LIMITS for every user
//!   (so the final state does not depend on the schedule);
//! - delivering the whole stream again changes nothing (applying twice equals applying once).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tiersync::handler::{StreamEvent, SyncHandler};
use tiersync::schema::{Tier, UserId};
use tiersync::store::{classify_profile_conflict, ProfileStore, ProfileWrite, StoreError};

/// SplitMix64: small, fast, and the same everywhere, so a seed names a case forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The store double: DynamoDB's conditional-write semantics for the PROFILE update, exactly
/// (`attribute_exists(PK) AND (attribute_not_exists(tier_version) OR tier_version < :v)`, and
/// ALL_OLD on failure).
#[derive(Default)]
pub struct MemStore {
    profiles: Mutex<HashMap<UserId, (Tier, u64)>>,
}

/// Wraps a store and fails a share of its writes as if the SDK's retries had run out.
pub struct Flaky<S> {
    inner: S,
    fail_percent: Mutex<u64>,
    rng: Mutex<Rng>,
}

impl<S> Flaky<S> {
    fn new(inner: S, seed: u64) -> Self {
        Self {
            inner,
            fail_percent: Mutex::new(0),
            rng: Mutex::new(Rng(seed ^ 0x5EED)),
        }
    }
    fn set_fail_percent(&self, p: u64) {
        *self.fail_percent.lock().unwrap() = p;
    }
}

impl<S: ProfileStore> ProfileStore for Flaky<S> {
    fn table(&self) -> &str {
        self.inner.table()
    }

    async fn write_profile(
        &self,
        user: &UserId,
        tier: Tier,
        version: u64,
        at: &str,
    ) -> Result<ProfileWrite, StoreError> {
        let fail = {
            let p = *self.fail_percent.lock().unwrap();
            self.rng.lock().unwrap().chance(p)
        };
        if fail {
            let e = aws_sdk_dynamodb::Error::InternalServerError(
                aws_sdk_dynamodb::types::error::InternalServerError::builder()
                    .message("injected")
                    .build(),
            );
            return Err(StoreError::Sdk {
                op: "UpdateItem",
                message: "injected 500".into(),
                source: Box::new(e),
            });
        }
        self.inner.write_profile(user, tier, version, at).await
    }
}

impl MemStore {
    fn snapshot(&self) -> HashMap<UserId, (Tier, u64)> {
        self.profiles.lock().unwrap().clone()
    }
}

impl ProfileStore for MemStore {
    fn table(&self) -> &str {
        "model"
    }

    async fn write_profile(
        &self,
        user: &UserId,
        tier: Tier,
        version: u64,
        _at: &str,
    ) -> Result<ProfileWrite, StoreError> {
        let mut profiles = self.profiles.lock().unwrap();
        let Some(current) = profiles.get_mut(user) else {
            return Ok(classify_profile_conflict(None, tier, version));
        };
        if current.1 < version {
            *current = (tier, version);
            return Ok(ProfileWrite::Applied);
        }
        let old = HashMap::from([
            ("PK".to_owned(), AttributeValue::S(user.pk())),
            (
                "tier".to_owned(),
                AttributeValue::S(current.0.as_str().into()),
            ),
            (
                "tier_version".to_owned(),
                AttributeValue::N(current.1.to_string()),
            ),
        ]);
        Ok(classify_profile_conflict(Some(&old), tier, version))
    }
}

/// One stream record in Lambda's shape, with what the checks need to know about it.
#[derive(Clone)]
struct Rec {
    json: String,
    seq: u128,
    user: usize,
    /// `tier_version` of the new image when it is a LIMITS change with a version rise.
    rise: Option<u64>,
}

fn limits_image(user: usize, tier: Tier, version: u64, used: u64) -> Value {
    json!({
        "PK": {"S": format!("USER#u{user}")}, "SK": {"S": "USAGE#LIMITS"},
        "tier": {"S": tier.as_str()}, "tier_version": {"N": version.to_string()},
        "daily_used": {"N": used.to_string()}, "reset_daily_at": {"S": "2026-12-04T00:00:00Z"}
    })
}

fn record(seq: u128, name: &str, sk: &str, user: usize, old: Value, new: Value) -> String {
    json!({
        "eventID": format!("e{seq}"), "eventName": name, "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1764806400.0,
            "Keys": {"PK": {"S": format!("USER#u{user}")}, "SK": {"S": sk}},
            "NewImage": new, "OldImage": old,
            "SequenceNumber": seq.to_string(), "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/model/stream/2026-12-01T00:00:00.000"
    })
    .to_string()
}

/// A generated history: the source of truth and the stream it wrote, per shard.
struct History {
    limits: Vec<(Tier, u64)>,
    shards: Vec<Vec<Rec>>,
}

fn history(rng: &mut Rng) -> History {
    let users = 2 + rng.below(4) as usize;
    let shard_count = 1 + rng.below(3) as usize;
    let mut shards: Vec<Vec<Rec>> = vec![Vec::new(); shard_count];
    let mut seq: u128 = 100_000_000_000_000_000_000;
    let mut limits = vec![(Tier::Free, 1u64); users];
    let mut used = vec![0u64; users];
    let push =
        |shards: &mut Vec<Vec<Rec>>, user: usize, json: String, seq: u128, rise: Option<u64>| {
            shards[user % shard_count].push(Rec {
                json,
                seq,
                user,
                rise,
            });
        };
    for u in 0..users {
        seq += 1 + rng.below(3) as u128;
        push(
            &mut shards,
            u,
            record(
                seq,
                "INSERT",
                "USAGE#LIMITS",
                u,
                Value::Null,
                limits_image(u, Tier::Free, 1, 0),
            ),
            seq,
            Some(1),
        );
    }
    for _ in 0..(5 + rng.below(30)) {
        let u = rng.below(users as u64) as usize;
        let (tier, version) = limits[u];
        seq += 1 + rng.below(3) as u128;
        match rng.below(10) {
            // A tier write with DynamoDB's conditional semantics (`tier <> :t`): a real change
            // bumps the version; the same tier writes nothing (no record).
            0..=5 => {
                let target = if rng.chance(50) {
                    Tier::Free
                } else {
                    Tier::Premium
                };
                if target != tier {
                    limits[u] = (target, version + 1);
                    let json = record(
                        seq,
                        "MODIFY",
                        "USAGE#LIMITS",
                        u,
                        limits_image(u, tier, version, used[u]),
                        limits_image(u, target, version + 1, used[u]),
                    );
                    push(&mut shards, u, json, seq, Some(version + 1));
                } else if rng.chance(20) {
                    // moto writes a record for a no-op write; real DynamoDB does not.
                    let img = limits_image(u, tier, version, used[u]);
                    push(
                        &mut shards,
                        u,
                        record(seq, "MODIFY", "USAGE#LIMITS", u, img.clone(), img),
                        seq,
                        None,
                    );
                }
            }
            6..=8 => {
                used[u] += 1;
                let json = record(
                    seq,
                    "MODIFY",
                    "USAGE#LIMITS",
                    u,
                    limits_image(u, tier, version, used[u] - 1),
                    limits_image(u, tier, version, used[u]),
                );
                push(&mut shards, u, json, seq, None);
            }
            _ => {
                let p = json!({"PK": {"S": format!("USER#u{u}")}, "SK": {"S": "PROFILE"}, "name": {"S": "x"}});
                push(
                    &mut shards,
                    u,
                    record(seq, "MODIFY", "PROFILE", u, p.clone(), p),
                    seq,
                    None,
                );
            }
        }
    }
    History { limits, shards }
}

fn event(recs: &[Rec]) -> StreamEvent {
    let body = format!(
        "{{\"Records\":[{}]}}",
        recs.iter()
            .map(|r| r.json.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    body.parse().unwrap()
}

/// What one simulated case did, for the figures.
#[derive(Default, Debug)]
pub struct CaseStats {
    pub invocations: u64,
    pub failures_injected: u64,
    pub crashes: u64,
    pub replays: u64,
    pub duplicates: u64,
    pub bisects: u64,
}

/// Reads every PROFILE's `(tier, tier_version)`.
pub type Profiles<'a> = &'a (dyn Fn() -> BoxFuture<'a, HashMap<UserId, (Tier, u64)>> + Sync);

struct Sim<'a, S: ProfileStore> {
    seed: u64,
    store: &'a Flaky<S>,
    handler: SyncHandler<&'a Flaky<S>>,
    profiles: Profiles<'a>,
    seen: HashMap<UserId, (Tier, u64)>,
    stats: CaseStats,
}

impl<S: ProfileStore> Sim<'_, S> {
    fn ctx(&self, what: &str) -> String {
        format!(
            "seed {} (replay: TIERSYNC_MODEL_SEED={} cargo test --test it model::): {what}",
            self.seed, self.seed
        )
    }

    /// One handler invocation with `fail` percent of writes failing; returns the lowest reported
    /// sequence number. Checks the per-invocation invariants.
    async fn deliver(&mut self, recs: &[Rec], fail: u64) -> Option<u128> {
        self.store.set_fail_percent(fail);
        let out = self.handler.handle(&event(recs), chrono::Utc::now()).await;
        self.stats.invocations += 1;
        self.stats.failures_injected += out.counts.failed;
        // PROFILE versions never go down.
        let now = (self.profiles)().await;
        for (user, (_, v)) in &now {
            let before = self.seen.get(user).map_or(0, |p| p.1);
            assert!(
                *v >= before,
                "{}",
                self.ctx(&format!("{user} went from version {before} to {v}"))
            );
        }
        self.seen = now;
        // Failure reports: one per failed user, inside the batch, no later than the record that
        // carries that user's highest version.
        let reported = out.failed_sequence_numbers();
        assert_eq!(
            reported.len() as u64,
            out.counts.failed,
            "{}",
            self.ctx("one report per failed user")
        );
        for s in &reported {
            let s: u128 = s.as_str().parse().unwrap();
            let Some(r) = recs.iter().find(|r| r.seq == s) else {
                panic!(
                    "{}",
                    self.ctx("reported a sequence number outside the batch")
                );
            };
            let top = recs
                .iter()
                .filter(|x| x.user == r.user && x.rise.is_some())
                .max_by_key(|x| x.rise)
                .unwrap();
            assert!(
                s <= top.seq,
                "{}",
                self.ctx("reported past the record to redeliver")
            );
        }
        reported
            .into_iter()
            .min()
            .map(|s| s.as_str().parse::<u128>().unwrap())
    }

    async fn check_final(&self, limits: &[(Tier, u64)], what: &str) {
        let p = (self.profiles)().await;
        for (u, want) in limits.iter().enumerate() {
            let id = UserId::parse(&format!("u{u}")).unwrap();
            assert_eq!(
                p.get(&id),
                Some(want),
                "{}",
                self.ctx(&format!("{what}: u{u}"))
            );
        }
    }
}

/// Runs one case of the model against `store`, whose PROFILE state `profiles` reads. Panics with
/// the seed on any violated invariant.
pub async fn run_case<'a, S: ProfileStore>(
    seed: u64,
    store: &'a Flaky<S>,
    profiles: Profiles<'a>,
) -> CaseStats {
    let mut rng = Rng(seed);
    let h = history(&mut rng);
    let mut sim = Sim {
        seed,
        store,
        handler: SyncHandler::new(store, 1 + rng.below(8) as usize),
        profiles,
        seen: profiles().await,
        stats: CaseStats::default(),
    };
    let mut checkpoints = vec![0usize; h.shards.len()];
    let mut attempts = 0u64;
    while checkpoints.iter().zip(&h.shards).any(|(c, s)| *c < s.len()) {
        // Interleaving across shards (ParallelizationFactor-like).
        let open: Vec<usize> = (0..h.shards.len())
            .filter(|&i| checkpoints[i] < h.shards[i].len())
            .collect();
        let shard = open[rng.below(open.len() as u64) as usize];
        let recs = &h.shards[shard];
        let c = checkpoints[shard];
        if c > 0 && rng.chance(10) {
            // A replay of an old range, at a random later point.
            let i = rng.below(c as u64) as usize;
            let j = i + 1 + rng.below((c - i) as u64) as usize;
            sim.stats.replays += 1;
            sim.deliver(&recs[i..j], 0).await;
            continue;
        }
        let k = 1 + rng.below(6) as usize;
        let batch = &recs[c..(c + k).min(recs.len())];
        attempts += 1;
        if batch.len() > 1 && rng.chance(5) {
            // A function error (timeout, crash) after some writes: the ESM bisects the batch and
            // retries each half (BisectBatchOnFunctionError); the first invocation's response is
            // lost.
            sim.stats.bisects += 1;
            sim.deliver(batch, 15).await;
            let (left, right) = batch.split_at(batch.len() / 2);
            for half in [left, right] {
                while sim.deliver(half, 0).await.is_some() {}
            }
            checkpoints[shard] = c + batch.len();
            continue;
        }
        // Faults stop eventually (the ESM's retries outlast a transient fault).
        let fail = if attempts < 200 {
            [0, 0, 15, 40][rng.below(4) as usize]
        } else {
            0
        };
        match sim.deliver(batch, fail).await {
            Some(lowest) => {
                // Lambda checkpoints before the lowest reported record and redelivers from it.
                checkpoints[shard] = c + batch.iter().position(|r| r.seq == lowest).unwrap();
            }
            // Wrote PROFILE, died before the checkpoint: the batch comes again.
            None if rng.chance(10) => sim.stats.crashes += 1,
            None => {
                if rng.chance(10) {
                    sim.stats.duplicates += 1;
                    sim.deliver(batch, 0).await;
                }
                checkpoints[shard] = c + batch.len();
            }
        }
    }
    // Every record was delivered at least once: PROFILE equals USAGE#LIMITS for every user.
    sim.check_final(&h.limits, "after delivery").await;
    // Applying everything again (one batch per shard) changes nothing.
    for shard in &h.shards {
        if !shard.is_empty() {
            let failed = sim.deliver(shard, 0).await;
            assert_eq!(failed, None, "{}", sim.ctx("redelivery failed"));
        }
    }
    sim.check_final(&h.limits, "after a second full delivery")
        .await;
    sim.stats
}

fn mem_store(users: usize) -> MemStore {
    let store = MemStore::default();
    let mut p = store.profiles.lock().unwrap();
    for u in 0..users {
        p.insert(UserId::parse(&format!("u{u}")).unwrap(), (Tier::Free, 1));
    }
    drop(p);
    store
}

/// Cases per run: `TIERSYNC_MODEL_CASES` (default 10,000); or exactly `TIERSYNC_MODEL_SEED`.
#[test]
fn generated_delivery_schedules_never_regress_and_always_converge() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seeds: Vec<u64> = match std::env::var("TIERSYNC_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("TIERSYNC_MODEL_SEED is a u64")],
        Err(_) => {
            let cases: u64 = std::env::var("TIERSYNC_MODEL_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(10_000);
            let base: u64 = std::env::var("TIERSYNC_MODEL_BASE")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64
                });
            eprintln!("model: {cases} cases from base seed {base} (TIERSYNC_MODEL_BASE={base} reproduces the run)");
            (0..cases)
                .map(|i| Rng(base.wrapping_add(i)).next())
                .collect()
        }
    };
    let mut total = CaseStats::default();
    for &seed in &seeds {
        // Users u0..u5 cover every generated history.
        let store = Flaky::new(mem_store(6), seed);
        let s = rt.block_on(run_case(seed, &store, &|| {
            Box::pin(async { store.inner.snapshot() })
        }));
        total.invocations += s.invocations;
        total.failures_injected += s.failures_injected;
        total.crashes += s.crashes;
        total.replays += s.replays;
        total.duplicates += s.duplicates;
        total.bisects += s.bisects;
    }
    eprintln!(
        "model: {} cases passed: {} handler invocations, {} write failures injected, {} crashes before checkpoint, {} bisected batches, {} old-range replays, {} duplicate deliveries",
        seeds.len(), total.invocations, total.failures_injected, total.crashes, total.bisects, total.replays, total.duplicates
    );
    assert!(
        seeds.len() == 1 || total.failures_injected > 0 && total.crashes > 0 && total.replays > 0
    );
}

/// A sample of the same generated cases against moto's DynamoDB, with the real store.
#[tokio::test]
async fn a_sample_of_generated_schedules_holds_against_moto() {
    let cases: u64 = std::env::var("TIERSYNC_MODEL_MOTO_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(12);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("model on moto: {cases} cases from base seed {base}");
    for i in 0..cases {
        let seed = Rng(base.wrapping_add(i)).next();
        let app = crate::helpers::TestApp::spawn().await;
        for u in 0..6 {
            app.store
                .create_user(
                    &UserId::parse(&format!("u{u}")).unwrap(),
                    Tier::Free,
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        }
        let store = Flaky::new(app.store.clone(), seed);
        let app = &app;
        let profiles = move || -> BoxFuture<'_, HashMap<UserId, (Tier, u64)>> {
            Box::pin(async move {
                let mut m = HashMap::new();
                for u in 0..6 {
                    if let Some((t, v)) = app.profile(&format!("u{u}")).await {
                        m.insert(
                            UserId::parse(&format!("u{u}")).unwrap(),
                            (t.parse().unwrap(), v),
                        );
                    }
                }
                m
            })
        };
        run_case(seed, &store, &profiles).await;
    }
}
