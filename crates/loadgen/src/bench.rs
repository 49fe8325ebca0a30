//! `seckill bench`: the classic scenario built in (2,000 buyers at 1,000 stock by default, as
//! miaosha-go's JMeter plan fires it). Fires purchases at a running engine, prints throughput
//! and latency, then checks the invariants through the API: [`execute`] is fire → merge → check.
//! With `--pay-ratio` the bench also plays the payment provider (see `payment.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use jsonwebtoken::EncodingKey;

use crate::check::{self, PaidVerdict, Verdict};
use crate::client::Target;
use crate::fire::{self, Buyers, Identity, Load};
use crate::merge::{self, Merged};
use crate::payment::{Ledger, Payer, Signer};
use crate::plot;
use crate::report::{Latency, Payments, Report};
use crate::seconds;

#[derive(Debug, Clone, Args)]
pub struct BenchConfig {
    /// Base URL of the engine.
    #[arg(long, env = "SECKILL_BENCH_URL", default_value = "http://127.0.0.1:3030")]
    pub url: String,
    /// Purchase requests to send (the classic scenario: 2000).
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub requests: u64,
    /// Requests in flight at once (closed loop), or the most in flight (open loop).
    #[arg(long, short = 'c', default_value_t = 2000)]
    pub concurrency: u64,
    /// Use the per-user API with this many distinct buyers (`X-User-Id`), cycling through them.
    /// Without it, every request is a new anonymous buyer of the demo sale (`POST /seckill/seckill`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: Option<u64>,
    /// Sale to buy from with `--users` (default: the demo sale).
    #[arg(long)]
    pub sale: Option<i64>,
    /// Stop sending after this many seconds even if `--requests` are not all sent.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Open loop: requests per second, latency corrected for coordinated omission.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Draw every request's latency over the run's time as an SVG scatter plot here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// How long to wait for every success to be stored before failing the drain check.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// Skip the invariant checks (pure load).
    #[arg(long)]
    pub no_check: bool,
    /// With `--users`: identify each buyer by an HS256 JWT signed with this key (an engine run
    /// with `--auth jwt` and the same `SECKILL_JWT_SECRET`) instead of `X-User-Id`.
    #[arg(long, env = "SECKILL_BENCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// With `--users`: fetch a purchase token (`GET /api/sales/{id}/token`) before each purchase
    /// and send it, as a buyer must on an engine run with `--require-purchase-token`.
    #[arg(long)]
    pub purchase_token: bool,
    /// With `--users`: each winner pays through the signed webhook with this probability, after
    /// a delay uniform in the payment window, or lets the hold expire. Each buyer buys until it
    /// holds a unit, trying again after `sold_out` while held units may still come back
    /// (`-n` is not used).
    #[arg(long, value_parser = probability, requires = "users")]
    pub pay_ratio: Option<f64>,
    /// With `--pay-ratio`: the payment window, in seconds, of the sale the bench creates (with
    /// `--sale`: the sale's own, which must match if given).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub payment_window: Option<u32>,
    /// The stock of the sale the bench creates: with `--pay-ratio` and no `--sale` (default
    /// 1000), or with `--waiting-room` (default: every pre-start joiner and half the post-start
    /// ones, so the sale sells out while some still wait).
    #[arg(long)]
    pub stock: Option<u64>,
    /// The engine's webhook secret, to sign payments as its provider does.
    #[arg(long, env = "SECKILL_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub payment_webhook_secret: Option<String>,
    /// The engine's admin token: creates the sale with `--pay-ratio` or `--waiting-room`, and
    /// is sent on the audit, on order reads and on the queue's counters.
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bench a waiting room instead: create a `random_at_start` sale starting `--start-delay`
    /// from now, with `--pre-start` buyers joining before the start and `--post-start` after
    /// it, each polling as told and buying once admitted; then check the queue from the
    /// server's answers (admission required, rate, order, shuffle, once, not after sell-out).
    #[arg(long, conflicts_with_all = ["pay_ratio", "sale", "users"])]
    pub waiting_room: bool,
    /// With `--waiting-room`: the room's admissions per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub admit_per_sec: u32,
    /// With `--waiting-room`: buyers joining before the start (the shuffle is judged over them,
    /// so at least 1,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(crate::waiting_room::MIN_PRE_START..))]
    pub pre_start: u64,
    /// With `--waiting-room`: buyers joining after the start, one after another.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub post_start: u64,
    /// With `--waiting-room`: milliseconds between two post-start joins.
    #[arg(long, default_value_t = 10)]
    pub post_start_interval_ms: u64,
    /// With `--waiting-room`: seconds from the sale's creation to its start, in which every
    /// pre-start buyer must join.
    #[arg(long, default_value_t = 5.0)]
    pub start_delay: f64,
    /// With `--waiting-room`: the room's ticket time to live, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(5..=3600))]
    pub ticket_ttl: u32,
}

/// A probability: a number from 0 to 1.
fn probability(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{raw}` is not a probability from 0 to 1")),
    }
}

/// A rate of requests per second: a positive number.
fn positive_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("`{raw}` is not a positive number of requests per second")),
    }
}

/// Runs the bench and prints the summary; `Ok(false)` when an invariant is violated.
pub async fn run(config: BenchConfig) -> anyhow::Result<bool> {
    if config.waiting_room {
        let report = crate::waiting_room::execute(&config).await?;
        println!("{report}");
        if let Some(path) = &config.report {
            std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(report.passed);
    }
    let report = execute(&config).await?;
    println!("{report}");
    if let Some(path) = &config.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.passed)
}

/// Fires the load, merges what the workers saw, and checks the invariants; the summary is
/// returned, not printed.
pub async fn execute(config: &BenchConfig) -> anyhow::Result<Report> {
    let target =
        Arc::new(Target::new(&config.url, config.concurrency as usize).with_admin(config.admin_token.as_deref()));
    if let Some(ratio) = config.pay_ratio {
        return execute_paying(config, target, ratio).await;
    }
    let sale = match config.sale {
        Some(id) => id,
        None => demo_sale(&target).await?,
    };
    let before = target.sale(sale).await.context("reading the sale before the load")?;

    let fired = fire::fire(Arc::clone(&target), load(config, sale)).await?;
    let run = merge::merge(fired.workers)?;
    if let Some(path) = &config.plot {
        plot::latency_over_time(path, &run.samples).with_context(|| format!("plotting to {}", path.display()))?;
    }
    let verdict = if config.no_check {
        None
    } else {
        let drain_timeout = seconds(config.drain_timeout);
        Some(check::check(&target, &before, config.users, &run, drain_timeout).await?)
    };
    Ok(report(config, sale, fired.elapsed, &run, verdict))
}

/// A run with payments: the sale (created with the window, or the one named), the load with
/// the payer taking every hold, then the sale judged at rest.
async fn execute_paying(config: &BenchConfig, target: Arc<Target>, ratio: f64) -> anyhow::Result<Report> {
    let secret = config
        .payment_webhook_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .context("--pay-ratio needs the engine's webhook secret (SECKILL_PAYMENT_WEBHOOK_SECRET)")?;
    let before = paying_sale(config, &target).await?;
    let window = before.payment_window_secs;
    let audit_before = target
        .audit(before.id)
        .await
        .context("auditing the sale before the load")?;
    let payer = Arc::new(Payer::new(
        Arc::clone(&target),
        Signer::new(secret.as_bytes()),
        ratio,
        Duration::from_secs(u64::from(window)),
        config.concurrency as usize,
    ));
    let mut load = load(config, before.id);
    load.payer = Some(Arc::clone(&payer));
    let fired = fire::fire(Arc::clone(&target), load).await?;
    let ledger = payer.finish().await;
    let run = merge::merge(fired.workers)?;
    if let Some(path) = &config.plot {
        plot::latency_over_time(path, &run.samples).with_context(|| format!("plotting to {}", path.display()))?;
    }
    let verdict = if config.no_check {
        None
    } else {
        // Long enough for the last hold to expire, then the drain allowance.
        let timeout = Duration::from_secs(u64::from(window)).saturating_add(seconds(config.drain_timeout));
        let concurrency = config.concurrency.clamp(1, 256) as usize;
        Some(check::check_paying(&target, &before, &audit_before, &run, &ledger, timeout, concurrency).await?)
    };
    let mut summary = report(config, before.id, fired.elapsed, &run, None);
    summary.payments = Some(payments(ratio, window, &before, &ledger, verdict.as_ref()));
    if let Some(verdict) = verdict {
        summary.passed = verdict.invariants.iter().all(|check| check.passed);
        summary.invariants = verdict.invariants;
    }
    Ok(summary)
}

/// The sale of a run with payments: `--sale` if named (it must have a payment window), else a
/// new one of `--stock` units, one per buyer, with `--payment-window`.
async fn paying_sale(config: &BenchConfig, target: &Target) -> anyhow::Result<seckill_api::SaleView> {
    if let Some(id) = config.sale {
        let sale = target.sale(id).await.context("reading the sale before the load")?;
        anyhow::ensure!(
            sale.payment_window_secs > 0,
            "sale {id} has no payment window: nothing to pay"
        );
        if let Some(window) = config.payment_window {
            anyhow::ensure!(
                window == sale.payment_window_secs,
                "sale {id} has a payment window of {} s, not {window} s",
                sale.payment_window_secs
            );
        }
        return Ok(sale);
    }
    let window = config
        .payment_window
        .context("--pay-ratio without --sale needs --payment-window to create the sale")?;
    let request = serde_json::json!({
        "name": format!("seckill bench, pay ratio {}", config.pay_ratio.unwrap_or_default()),
        "stock": config.stock.unwrap_or(1000),
        "per_user_limit": 1,
        "payment_window_secs": window,
    });
    target
        .create_sale(&request)
        .await
        .context("creating the sale (is SECKILL_ADMIN_TOKEN the engine's?)")
}

/// The payment figures of the summary.
fn payments(
    ratio: f64,
    window: u32,
    before: &seckill_api::SaleView,
    ledger: &Ledger,
    verdict: Option<&PaidVerdict>,
) -> Payments {
    let answered = ledger.paid.len() as u64 + ledger.too_late.len() as u64 + ledger.already_paid + ledger.errors;
    let span = ledger.span.map_or(0.0, |s| s.as_secs_f64());
    Payments {
        window_secs: window,
        pay_ratio: ratio,
        holds: ledger.holds,
        let_expire: ledger.let_expire,
        paid: ledger.paid.len() as u64,
        too_late: ledger.too_late.len() as u64,
        already_paid: ledger.already_paid,
        webhook_errors: ledger.errors,
        payments_per_s: if span > 0.0 { answered as f64 / span } else { 0.0 },
        webhook_latency: (!ledger.latency.is_empty()).then(|| Latency::of(&ledger.latency)),
        expired: verdict.map_or(0, |v| v.audit.expired),
        stock: before.stock,
        remaining_at_rest: verdict.map_or(0, |v| v.at_rest.remaining),
        paid_at_rest: verdict.map_or(0, |v| v.at_rest.paid),
        at_rest_after_last_deadline_s: verdict
            .zip(ledger.last_unpaid_pay_by_ms)
            .map(|(v, last)| (v.at_rest_unix_ms - last) as f64 / 1000.0),
    }
}

/// The load the flags describe.
fn load(config: &BenchConfig, sale: i64) -> Load {
    let buyers = match config.users {
        None => Buyers::Classic,
        Some(users) => Buyers::PerUser {
            users,
            identity: match config.jwt_secret.as_deref().filter(|key| !key.is_empty()) {
                Some(key) => Identity::Jwt(EncodingKey::from_secret(key.as_bytes())),
                None => Identity::Header,
            },
            purchase_token: config.purchase_token,
        },
    };
    Load {
        sale,
        buyers,
        requests: config.requests,
        concurrency: config.concurrency,
        rate: config.rate,
        duration: config.duration.map(seconds),
        keep_samples: config.plot.is_some(),
        payer: None,
    }
}

/// The sale the classic API sells.
async fn demo_sale(target: &Target) -> anyhow::Result<i64> {
    let list = target.sales().await.context("listing sales (is the engine running?)")?;
    list.sales
        .iter()
        .find(|sale| sale.demo)
        .map(|sale| sale.id)
        .context("the engine has no demo sale; pass --sale")
}

fn report(config: &BenchConfig, sale: i64, elapsed: Duration, run: &Merged, verdict: Option<Verdict>) -> Report {
    let (invariants, drain_s) = match verdict {
        Some(Verdict { invariants, drain }) => (invariants, Some(drain.as_secs_f64())),
        None => (Vec::new(), None),
    };
    let (sent, elapsed_s) = (run.sent(), elapsed.as_secs_f64());
    Report {
        url: config.url.clone(),
        mode: mode(config),
        sale,
        requests: sent,
        concurrency: config.concurrency,
        elapsed_s,
        throughput_rps: sent as f64 / elapsed_s.max(1e-9),
        counts: run.counts,
        latency: Latency::of(&run.latency),
        drain_s,
        payments: None,
        passed: invariants.iter().all(|check| check.passed),
        invariants,
    }
}

/// Who bought, for the summary's first line.
fn mode(config: &BenchConfig) -> String {
    match config.users {
        // The wording scripts and past reports know; it is the classic API's anonymous buyers.
        None => "classic (anonymous buyers)".into(),
        Some(users) => format!(
            "per-user ({users} users{}{}{})",
            if config.jwt_secret.is_some() { ", JWT" } else { "" },
            if config.purchase_token { ", purchase tokens" } else { "" },
            if config.pay_ratio.is_some() { ", paying" } else { "" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchConfig,
    }

    fn parse(args: &[&str]) -> Result<BenchConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|cli| cli.bench)
    }

    #[test]
    fn the_defaults_are_the_classic_scenario() {
        let config = parse(&[]).expect("parses");
        assert_eq!((config.requests, config.concurrency, config.users), (2000, 2000, None));
        assert!(matches!(load(&config, 1).buyers, Buyers::Classic));
        assert_eq!(mode(&config), "classic (anonymous buyers)");
    }

    #[test]
    fn named_buyers_identify_by_header_or_jwt() {
        let config = parse(&["--users", "20", "--purchase-token"]).expect("parses");
        assert!(matches!(
            load(&config, 1).buyers,
            Buyers::PerUser {
                users: 20,
                identity: Identity::Header,
                purchase_token: true
            }
        ));
        assert_eq!(mode(&config), "per-user (20 users, purchase tokens)");
        let jwt = BenchConfig {
            jwt_secret: Some("k".into()),
            ..config
        };
        assert!(matches!(
            load(&jwt, 1).buyers,
            Buyers::PerUser {
                identity: Identity::Jwt(_),
                ..
            }
        ));
        assert_eq!(mode(&jwt), "per-user (20 users, JWT, purchase tokens)");
    }

    #[test]
    fn a_pay_ratio_is_a_probability_and_needs_named_buyers() {
        let config = parse(&["--users", "200", "--pay-ratio", "0.5", "--payment-window", "2"]).expect("parses");
        assert_eq!((config.pay_ratio, config.payment_window), (Some(0.5), Some(2)));
        assert_eq!(mode(&config), "per-user (200 users, paying)");
        assert!(parse(&["--pay-ratio", "0.5"]).is_err(), "needs --users");
        for ratio in ["-0.1", "1.5", "x", "NaN"] {
            assert!(parse(&["--users", "2", "--pay-ratio", ratio]).is_err(), "{ratio}");
        }
        assert!(parse(&["--users", "2", "--pay-ratio", "1", "--payment-window", "0"]).is_err());
    }

    #[test]
    fn a_waiting_room_run_judges_at_least_a_thousand_pre_start_joiners() {
        let config = parse(&["--waiting-room"]).expect("parses");
        assert_eq!(
            (config.admit_per_sec, config.pre_start, config.post_start),
            (1000, 1000, 200)
        );
        assert_eq!(crate::waiting_room::default_stock(1000, 200), 1100);
        assert!(parse(&["--waiting-room", "--pre-start", "999"]).is_err());
        assert!(parse(&["--waiting-room", "--admit-per-sec", "0"]).is_err());
        assert!(parse(&["--waiting-room", "--users", "5"]).is_err());
    }

    #[test]
    fn zero_users_and_non_positive_rates_are_refused() {
        assert!(parse(&["--users", "0"]).is_err());
        for rate in ["0", "-5", "inf", "x"] {
            assert!(parse(&["--rate", rate]).is_err(), "{rate}");
        }
        assert_eq!(parse(&["--rate", "2.5"]).expect("parses").rate, Some(2.5));
    }
}
