//! `tiersync`, the operator's CLI. Endpoint, region and credentials come from the standard AWS
//! environment (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, …) through aws-config; the table from
//! `--table` or `TABLE_NAME`. Machine-readable results go to stdout as JSON; logs go to stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::config::Limits;
use crate::handler::{self, StreamEvent, SyncHandler, DEFAULT_CONCURRENCY};
use crate::schema::{Tier, UserId};
use crate::store::{DynamoStore, TableCreate};
use crate::usage::Increment;
use crate::worker::{OnFailureTarget, Worker, WorkerConfig, MAX_BATCH_SIZE};

#[derive(Debug, Parser)]
#[command(
    name = "tiersync",
    version,
    about = "Keep a user's tier in sync from USAGE#LIMITS to PROFILE through the DynamoDB stream"
)]
pub struct Cli {
    /// The DynamoDB table.
    #[arg(long, env = "TABLE_NAME", global = true)]
    pub table: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the table.
    #[command(subcommand)]
    Table(TableCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Set a user's tier on USAGE#LIMITS (the stream syncs PROFILE).
    SetTier {
        user_id: String,
        /// free | premium
        tier: Tier,
    },
    /// Print a user's usage as JSON: tier, daily_used, daily_limit, reset_daily_at (one GetItem).
    Usage { user_id: String },
    /// Count one request for a user; at the daily limit, exit non-zero naming the limit.
    Use { user_id: String },
    /// Run the daily reset job now (the same job as reset-lambda), with a progress bar.
    Reset {
        /// Reset as of this time (RFC 3339) [default: now].
        #[arg(long, value_parser = parse_time)]
        at: Option<chrono::DateTime<Utc>>,
        /// Concurrent reset writes.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Run the local stream worker: the event source mapping on this machine.
    Worker(WorkerArgs),
    /// Replay failed stream batches from on-failure records (SQS queue or file).
    Replay {
        #[command(flatten)]
        source: ReplaySource,
        /// Read and plan only: print planned PROFILE writes, write nothing, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Process at most this many messages.
        #[arg(long, default_value_t = 1000)]
        max_messages: usize,
        /// When a batch's records expired, repair from USAGE#LIMITS (`reconcile --repair`),
        /// restricted to the batch's users when the message names them.
        #[arg(long)]
        reconcile_on_expiry: bool,
        /// Rate limit of repair writes.
        #[arg(long, default_value_t = 100)]
        max_writes_per_second: u32,
    },
    /// Find drift between USAGE#LIMITS and PROFILE; with --repair, fix profiles that are behind.
    Reconcile {
        /// Fix profile_behind users with the sync's conditional write (never lowers a version).
        #[arg(long)]
        repair: bool,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = 4)]
        segments: u32,
        /// Rate limit of repair writes.
        #[arg(long, default_value_t = 100)]
        max_writes_per_second: u32,
        /// Print the report as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move legacy items onto the model (tier and version on USAGE#LIMITS, reset-index attributes).
    Migrate {
        /// Count what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = 4)]
        segments: u32,
    },
    /// Run the sync handler on a Lambda event JSON file; prints the batch response last.
    Sync {
        /// A DynamoDB stream event as Lambda delivers it (`{"Records": [...]}`).
        #[arg(long)]
        event: PathBuf,
        /// Touch no database: print each planned PROFILE write as a JSON line first.
        #[arg(long)]
        dry_run: bool,
        /// Concurrent PROFILE writes.
        #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
        concurrency: usize,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ReplaySource {
    /// SQS queue holding on-failure records (the stack's OnFailureQueueUrl output).
    #[arg(long)]
    pub queue_url: Option<String>,
    /// File with on-failure records: one JSON object, an array, or JSON lines.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create the table (PK/SK strings, on-demand, stream NEW_AND_OLD_IMAGES, reset index).
    /// Idempotent.
    Create,
    /// Print the table definition `create` uses, in CloudFormation property names (JSON).
    Definition,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create PROFILE and USAGE#LIMITS in one transaction.
    Create {
        user_id: String,
        #[arg(long, default_value = "free")]
        tier: Tier,
    },
    /// Print both items' tier and version, and whether they agree (one consistent Query).
    Show { user_id: String },
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Drain every shard to its current end and exit.
    #[arg(long)]
    pub once: bool,
    /// Records per handler invocation (1–10000), like the mapping's BatchSize.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH_SIZE as i64))]
    pub batch_size: u32,
    /// Redeliveries of a failing batch before it goes to the on-failure destination.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// First backoff delay between redeliveries, in milliseconds (doubles, with jitter, up to 10 s).
    #[arg(long, default_value_t = 200)]
    pub retry_delay_ms: u64,
    /// Ignore the saved checkpoints and read every shard from TRIM_HORIZON.
    #[arg(long)]
    pub from_start: bool,
    /// Checkpoint file [default: .tiersync/<table>.checkpoint.json].
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// SQS queue URL that receives on-failure records.
    #[arg(long, conflicts_with = "on_failure_file")]
    pub on_failure_queue: Option<String>,
    /// JSON-lines file that receives on-failure records.
    #[arg(long)]
    pub on_failure_file: Option<PathBuf>,
    /// Concurrent PROFILE writes per batch.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Pause between polls of a caught-up stream, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
}

/// Logs to stderr, `info` by default (`RUST_LOG` overrides).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(filter)
        .init();
}

fn parse_time(s: &str) -> Result<chrono::DateTime<Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-12-04T00:00:00Z: {e}"))
}

fn user(id: &str) -> Result<UserId> {
    UserId::parse(id).with_context(|| format!("invalid user id {id:?}"))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Runs the CLI.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Table(TableCommand::Definition) = &cli.command {
        return print_json(&crate::store::TABLE.to_cloudformation());
    }
    // `sync --dry-run` touches no database: no client, no table needed.
    if let Command::Sync {
        event,
        dry_run: true,
        ..
    } = &cli.command
    {
        return sync_dry_run(event, cli.table.as_deref().unwrap_or("-"));
    }
    let table = cli
        .table
        .clone()
        .context("no table: pass --table NAME or set TABLE_NAME")?;
    let aws = crate::aws::load().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), table.clone());
    match cli.command {
        Command::Table(TableCommand::Definition) => unreachable!("handled before the client"),
        Command::Table(TableCommand::Create) => {
            let outcome = store.create_table().await?;
            let created = outcome == TableCreate::Created;
            print_json(&serde_json::json!({"table": table, "created": created}))
        }
        Command::User(UserCommand::Create { user_id, tier }) => {
            let id = user(&user_id)?;
            store.create_user(&id, tier, Utc::now()).await?;
            print_json(&serde_json::json!({"user_id": id, "tier": tier, "tier_version": 1}))
        }
        Command::User(UserCommand::Show { user_id }) => {
            let id = user(&user_id)?;
            print_json(&store.get_user(&id).await?)
        }
        Command::SetTier { user_id, tier } => {
            let id = user(&user_id)?;
            let outcome = store.set_tier(&id, tier, Utc::now()).await?;
            let mut v = serde_json::to_value(outcome)?;
            v["user_id"] = serde_json::json!(id);
            v["tier"] = serde_json::json!(tier);
            print_json(&v)
        }
        Command::Usage { user_id } => {
            let limits = Limits::from_env()?;
            let u = store.get_user_usage(&user(&user_id)?, Utc::now()).await?;
            let mut v = serde_json::to_value(&u)?;
            v["daily_limit"] = serde_json::json!(limits.for_tier(u.tier));
            print_json(&v)
        }
        Command::Use { user_id } => {
            let limits = Limits::from_env()?;
            let id = user(&user_id)?;
            match store.increment_usage(&id, Utc::now(), &limits).await? {
                Increment::Counted {
                    daily_used,
                    daily_limit,
                    reset_daily_at,
                } => print_json(&serde_json::json!({
                    "user_id": id, "daily_used": daily_used, "daily_limit": daily_limit, "reset_daily_at": reset_daily_at,
                })),
                Increment::LimitReached {
                    daily_limit,
                    reset_daily_at,
                } => {
                    bail!("user {id} reached the daily limit of {daily_limit} requests; it resets at {reset_daily_at}")
                }
            }
        }
        Command::Reset { at, concurrency } => {
            let now = at.unwrap_or_else(Utc::now);
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} reset {pos} due items ({per_sec})",
                )
                .expect("valid template"),
            );
            let summary =
                crate::reset::run_reset(&store, now, concurrency, &|| false, &|| bar.inc(1)).await;
            bar.finish_and_clear();
            print_json(&summary)?;
            if summary.failed > 0 {
                bail!(
                    "{} reset writes or queries failed; run it again",
                    summary.failed
                );
            }
            Ok(())
        }
        Command::Sync {
            event, concurrency, ..
        } => {
            let raw = read_event(&event)?;
            let handler = SyncHandler::new(store, concurrency);
            let outcome = handler.handle(&raw, Utc::now()).await;
            tracing::info!(counts = ?outcome.counts, "batch handled");
            print_json(&outcome.response)
        }
        Command::Worker(args) => run_worker(args, &aws, store, &table).await,
        Command::Replay {
            source,
            dry_run,
            max_messages,
            reconcile_on_expiry,
            max_writes_per_second,
        } => {
            let source = match (source.queue_url, source.file) {
                (Some(url), _) => crate::replay::Source::Queue {
                    client: aws_sdk_sqs::Client::new(&aws),
                    url,
                },
                (None, Some(path)) => crate::replay::Source::File(path),
                (None, None) => unreachable!("clap requires one source"),
            };
            let replayer = crate::replay::Replayer {
                store: &store,
                handler: SyncHandler::new(store.clone(), DEFAULT_CONCURRENCY),
                streams: aws_sdk_dynamodbstreams::Client::new(&aws),
                opts: crate::replay::ReplayOptions {
                    dry_run,
                    max_messages,
                    reconcile_on_expiry,
                    max_writes_per_second,
                },
            };
            let bar = spinner("replay {pos} messages ({elapsed})");
            let summary = replayer.run(&source, &|| bar.inc(1)).await;
            bar.finish_and_clear();
            print_json(&summary)?;
            if !summary.ok() {
                bail!(
                    "replay incomplete: {} expired, {} malformed, {} failed (see problems above)",
                    summary.expired,
                    summary.malformed,
                    summary.failed
                );
            }
            Ok(())
        }
        Command::Reconcile {
            repair,
            segments,
            max_writes_per_second,
            json,
        } => {
            let bar = spinner("reconcile: {pos} items read ({elapsed})");
            let users = crate::reconcile::scan_users(&store, segments, &|n| bar.inc(n)).await?;
            bar.finish_and_clear();
            let bar = spinner("repair: {pos} writes ({elapsed})");
            let report = crate::reconcile::reconcile(
                &store,
                &users,
                repair,
                max_writes_per_second,
                Utc::now(),
                &|| bar.inc(1),
            )
            .await;
            bar.finish_and_clear();
            if json {
                print_json(&report)?;
            } else {
                println!("users: {}", report.users);
                for (class, count) in &report.counts {
                    let name = serde_json::to_value(class)?;
                    println!("{:<16} {count}", name.as_str().unwrap_or_default());
                }
                for (class, ids) in &report.user_ids {
                    let name = serde_json::to_value(class)?;
                    println!("{}: {}", name.as_str().unwrap_or_default(), ids.join(" "));
                }
                if let Some(r) = &report.repaired {
                    println!("repaired: {}", serde_json::to_string(r)?);
                }
            }
            if report.repaired.as_ref().is_some_and(|r| r.failed > 0) {
                bail!("some repair writes failed; run it again");
            }
            Ok(())
        }
        Command::Migrate { dry_run, segments } => {
            let bar = spinner("migrate: {pos} items read ({elapsed})");
            let users = crate::reconcile::scan_users(&store, segments, &|n| bar.inc(n)).await?;
            bar.finish_and_clear();
            let counts = crate::reconcile::migrate(&store, &users, dry_run, Utc::now()).await;
            print_json(&serde_json::json!({"dry_run": dry_run, "counts": counts}))?;
            if counts.failed > 0 {
                bail!(
                    "{} migration writes failed; run it again (it is idempotent)",
                    counts.failed
                );
            }
            Ok(())
        }
    }
}

/// A spinner on stderr (hidden when stderr is not a terminal).
fn spinner(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{{spinner}} {template}"))
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn read_event(path: &PathBuf) -> Result<StreamEvent> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse().with_context(|| {
        format!(
            "{} is not a Lambda DynamoDB event ({{\"Records\": [...]}})",
            path.display()
        )
    })
}

fn sync_dry_run(event: &PathBuf, table: &str) -> Result<()> {
    let raw = read_event(event)?;
    let plan = handler::plan(table, &raw);
    for w in &plan.writes {
        print_json(w)?;
    }
    tracing::info!(counts = ?plan.counts, "dry run: nothing written");
    print_json(&handler::batch_response(Vec::new()))
}

async fn run_worker(
    args: WorkerArgs,
    aws: &aws_config::SdkConfig,
    store: DynamoStore,
    table: &str,
) -> Result<()> {
    let stream_arn = store.stream_arn().await?.with_context(|| {
        format!("table {table} has no stream; create it with `tiersync table create`")
    })?;
    let mut cfg = WorkerConfig::new(
        args.state_file
            .unwrap_or_else(|| PathBuf::from(format!(".tiersync/{table}.checkpoint.json"))),
    );
    cfg.batch_size = args.batch_size as usize;
    cfg.max_retries = args.max_retries;
    cfg.retry_min_delay = Duration::from_millis(args.retry_delay_ms);
    cfg.once = args.once;
    cfg.from_start = args.from_start;
    cfg.poll_interval = Duration::from_millis(args.poll_interval_ms);
    cfg.on_failure = match (args.on_failure_queue, args.on_failure_file) {
        (Some(url), _) => Some(OnFailureTarget::Queue {
            client: aws_sdk_sqs::Client::new(aws),
            url,
        }),
        (None, Some(path)) => Some(OnFailureTarget::File(path)),
        (None, None) => None,
    };
    if cfg.on_failure.is_none() {
        tracing::warn!("no --on-failure-queue or --on-failure-file: batches whose retries run out are only logged");
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing the batch in hand");
        let _ = tx.send(true);
    });
    let worker = Worker::new(
        aws_sdk_dynamodbstreams::Client::new(aws),
        SyncHandler::new(store, args.concurrency),
        stream_arn,
        cfg,
    );
    let summary = worker.run(rx).await?;
    print_json(&summary)?;
    if summary.on_failure > 0 {
        bail!(
            "{} batch(es) went to the on-failure destination",
            summary.on_failure
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
