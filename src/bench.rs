//! `seckill bench`: the seed's JMeter scenario built in. Fires purchases at a running engine,
//! prints throughput and latency, then checks the invariants through the API.
//!
//! Closed loop by default (`--concurrency` workers, each sends its next request when the last is
//! answered). With `--rate` it is open loop: request *i* is due at `start + i/rate`, and its
//! latency is measured from when it was due, so a stalled server cannot hide its queueing
//! (coordinated omission).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub struct BenchConfig {
    /// Base URL of the engine.
    #[arg(long, env = "SECKILL_BENCH_URL", default_value = "http://127.0.0.1:3030")]
    pub url: String,
    /// Purchase requests to send (the seed: 2000).
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub requests: u64,
    /// Requests in flight at once (closed loop), or the most in flight (open loop).
    #[arg(long, short = 'c', default_value_t = 2000)]
    pub concurrency: u64,
    /// Use the per-user API with this many distinct buyers (`X-User-Id`), cycling through them.
    /// Without it, every request is a new anonymous buyer of the demo sale (`POST /seckill/seckill`).
    #[arg(long)]
    pub users: Option<u64>,
    /// Sale to buy from with `--users` (default: the demo sale).
    #[arg(long)]
    pub sale: Option<i64>,
    /// Stop sending after this many seconds even if `--requests` are not all sent.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Open loop: requests per second, latency corrected for coordinated omission.
    #[arg(long)]
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
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    pub success: u64,
    pub sold_out: u64,
    pub already_purchased: u64,
    pub not_started_or_ended: u64,
    pub overloaded: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub mode: String,
    pub sale: i64,
    pub requests: u64,
    pub concurrency: u64,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    pub counts: Counts,
    pub latency: Latency,
    pub drain_s: Option<f64>,
    pub invariants: Vec<Check>,
    pub passed: bool,
}

#[derive(Clone, Copy)]
enum Outcome {
    Success,
    SoldOut,
    AlreadyPurchased,
    Closed,
    Overloaded,
    Error,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A small HTTP client for one engine (shared by `bench` and `audit`).
pub(crate) struct Target {
    client: HttpClient,
    base: String,
}

impl Target {
    pub(crate) fn new(base: &str, pool: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .build(connector);
        Target {
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = self.client.request(req.body(Full::new(Bytes::new()))?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub(crate) async fn json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.send(Method::GET, path, &[]).await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

fn classify(seed: bool, status: StatusCode, body: &[u8]) -> Outcome {
    match status.as_u16() {
        201 => Outcome::Success,
        200 if seed => {
            // The seed answers 200 either way; `ok` and `code` tell them apart.
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            match (v["ok"].as_bool(), v["code"].as_str()) {
                (Some(true), _) => Outcome::Success,
                (_, Some("sold_out")) => Outcome::SoldOut,
                (_, Some("not_started" | "ended")) => Outcome::Closed,
                _ => Outcome::Error,
            }
        }
        410 => Outcome::SoldOut,
        409 => Outcome::AlreadyPurchased,
        403 => Outcome::Closed,
        429 | 503 => Outcome::Overloaded,
        _ => Outcome::Error,
    }
}

struct WorkerResult {
    counts: Counts,
    histogram: Histogram<u64>,
    per_user: HashMap<u64, u32>,
    /// (seconds since the start when the request was due, latency in ms), for `--plot`.
    samples: Vec<(f32, f32)>,
}

/// One buyer's purchase as `--jwt-secret` / `--purchase-token` say: identity by header or JWT,
/// and the token fetched first when asked.
async fn buy_as(
    target: &Target,
    path: &str,
    sale: i64,
    user: &str,
    jwt_key: Option<&jsonwebtoken::EncodingKey>,
    purchase_token: bool,
) -> Outcome {
    let bearer;
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
    match jwt_key {
        Some(key) => {
            let claims = serde_json::json!({ "sub": user, "exp": chrono::Utc::now().timestamp() + 3600 });
            match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key) {
                Ok(token) => bearer = format!("Bearer {token}"),
                Err(_) => return Outcome::Error,
            }
            headers.push(("authorization", &bearer));
        }
        None => headers.push(("x-user-id", user)),
    }
    let token;
    if purchase_token {
        match target
            .send(Method::GET, &format!("/api/sales/{sale}/token"), &headers)
            .await
        {
            Ok((status, body)) if status == StatusCode::OK => {
                let issued: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                match issued["token"].as_str() {
                    Some(t) => token = t.to_owned(),
                    None => return Outcome::Error,
                }
                headers.push(("x-purchase-token", &token));
            }
            Ok((status, body)) => return classify(false, status, &body),
            Err(_) => return Outcome::Error,
        }
    }
    match target.send(Method::POST, path, &headers).await {
        Ok((status, body)) => classify(false, status, &body),
        Err(_) => Outcome::Error,
    }
}

/// Runs the bench and prints the summary; `Ok(false)` when an invariant is violated.
pub async fn run(config: BenchConfig) -> anyhow::Result<bool> {
    let report = execute(&config).await?;
    print_summary(&report);
    if let Some(path) = &config.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.passed)
}

/// Fires the load and checks the invariants; the summary is returned, not printed.
pub async fn execute(config: &BenchConfig) -> anyhow::Result<Report> {
    let target = Arc::new(Target::new(&config.url, config.concurrency as usize));
    let seed = config.users.is_none();
    let sale = match config.sale {
        Some(id) => id,
        None => demo_sale(&target).await?,
    };
    let before = target
        .json(&format!("/api/sales/{sale}"))
        .await
        .context("reading the sale before the load")?;
    let remaining_before = before["remaining"].as_u64().context("sale has no `remaining`")?;
    let limit = before["per_user_limit"].as_u64().unwrap_or(1);

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(config.requests);
    let started = Instant::now();
    let deadline = config.duration.map(|d| started + Duration::from_secs_f64(d));
    let run_id = uuid::Uuid::new_v4().as_u64_pair().0 as u32;
    let mut workers = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let (target, next, done, progress) = (
            Arc::clone(&target),
            Arc::clone(&next),
            Arc::clone(&done),
            progress.clone(),
        );
        let (requests, users, rate) = (config.requests, config.users, config.rate);
        let keep_samples = config.plot.is_some();
        let jwt_key = config
            .jwt_secret
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(|k| jsonwebtoken::EncodingKey::from_secret(k.as_bytes()));
        let purchase_token = config.purchase_token;
        workers.push(tokio::spawn(async move {
            let mut result = WorkerResult {
                counts: Counts::default(),
                histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds"),
                per_user: HashMap::new(),
                samples: Vec::new(),
            };
            let mut user_buf = String::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let due = match rate {
                    Some(r) => {
                        let due = started + Duration::from_secs_f64(i as f64 / r);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let (path, user) = match users {
                    Some(u) => {
                        use std::fmt::Write;
                        user_buf.clear();
                        let _ = write!(user_buf, "bench-{run_id:08x}-{}", i % u);
                        (format!("/api/sales/{sale}/purchase"), Some((i % u, user_buf.as_str())))
                    }
                    None => ("/seckill/seckill".to_owned(), None),
                };
                let outcome = match user {
                    Some((_, id)) => buy_as(&target, &path, sale, id, jwt_key.as_ref(), purchase_token).await,
                    None => match target.send(Method::POST, &path, &[]).await {
                        Ok((status, body)) => classify(seed, status, &body),
                        Err(_) => Outcome::Error,
                    },
                };
                let micros = due.elapsed().as_micros().max(1) as u64;
                let _ = result.histogram.record(micros.min(3_600_000_000));
                if keep_samples {
                    result
                        .samples
                        .push(((due - started).as_secs_f32(), micros as f32 / 1000.0));
                }
                let c = &mut result.counts;
                match outcome {
                    Outcome::Success => {
                        c.success += 1;
                        if let Some((u, _)) = user {
                            *result.per_user.entry(u).or_insert(0) += 1;
                        }
                    }
                    Outcome::SoldOut => c.sold_out += 1,
                    Outcome::AlreadyPurchased => c.already_purchased += 1,
                    Outcome::Closed => c.not_started_or_ended += 1,
                    Outcome::Overloaded => c.overloaded += 1,
                    Outcome::Error => c.errors += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
                progress.inc(1);
            }
            result
        }));
    }
    let mut counts = Counts::default();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut per_user: HashMap<u64, u32> = HashMap::new();
    let mut samples = Vec::new();
    for w in workers {
        let r = w.await?;
        counts.success += r.counts.success;
        counts.sold_out += r.counts.sold_out;
        counts.already_purchased += r.counts.already_purchased;
        counts.not_started_or_ended += r.counts.not_started_or_ended;
        counts.overloaded += r.counts.overloaded;
        counts.errors += r.counts.errors;
        histogram.add(&r.histogram)?;
        samples.extend(r.samples);
        for (u, n) in r.per_user {
            *per_user.entry(u).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    if let Some(path) = &config.plot {
        plot(path, &samples).with_context(|| format!("plotting to {}", path.display()))?;
    }
    let sent = done.load(Ordering::Relaxed);

    let mut invariants = Vec::new();
    let mut drain_s = None;
    if !config.no_check {
        let buyers = match config.users {
            Some(u) => u.min(sent).saturating_mul(limit),
            None => sent,
        };
        // Buyers who were refused for a reason other than stock could have bought; with errors
        // or shed load the exact count cannot be predicted, only bounded.
        let expected = remaining_before.min(buyers);
        let clean = counts.errors == 0 && counts.overloaded == 0 && counts.not_started_or_ended == 0;
        invariants.push(if clean {
            check(
                "successes == min(stock, buyers)",
                counts.success == expected,
                format!("{} successes, expected {expected}", counts.success),
            )
        } else {
            check(
                "successes <= min(stock, buyers)",
                counts.success <= expected,
                format!("{} successes, bound {expected} (some requests failed)", counts.success),
            )
        });
        let worst = per_user.values().copied().max().unwrap_or(0);
        invariants.push(check(
            "no buyer over the per-user limit",
            u64::from(worst) <= limit,
            format!("most units to one buyer: {worst}, limit {limit}"),
        ));
        let after = target.json(&format!("/api/sales/{sale}")).await?;
        let remaining_after = after["remaining"].as_u64().unwrap_or(u64::MAX);
        invariants.push(check(
            "remaining == remaining_before − successes",
            remaining_after == remaining_before.saturating_sub(counts.success) && remaining_before >= counts.success,
            format!(
                "remaining {remaining_before} → {remaining_after}, {} successes",
                counts.success
            ),
        ));
        let drain_started = Instant::now();
        let audit = loop {
            let audit = target.json(&format!("/api/sales/{sale}/audit")).await?;
            let (sold, stored) = (
                audit["sold"].as_u64().unwrap_or(0),
                audit["stored"].as_u64().unwrap_or(0),
            );
            if stored >= sold || drain_started.elapsed().as_secs_f64() > config.drain_timeout {
                break audit;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (sold, stored) = (
            audit["sold"].as_u64().unwrap_or(0),
            audit["stored"].as_u64().unwrap_or(0),
        );
        drain_s = Some(drain_started.elapsed().as_secs_f64());
        invariants.push(check(
            "stored == sold (nothing lost, nothing extra)",
            stored == sold,
            format!("gate sold {sold}, store holds {stored}"),
        ));
        invariants.push(check(
            "store has no duplicate (sale, user, seq)",
            audit["duplicates"].as_u64() == Some(0),
            format!("duplicates: {}", audit["duplicates"]),
        ));
    }
    let passed = invariants.iter().all(|c| c.passed);
    let q = |p: f64| histogram.value_at_quantile(p) as f64 / 1000.0;
    Ok(Report {
        url: config.url.clone(),
        mode: if seed {
            "seed (anonymous buyers)".into()
        } else {
            format!(
                "per-user ({} users{}{})",
                config.users.unwrap_or(0),
                if config.jwt_secret.is_some() { ", JWT" } else { "" },
                if config.purchase_token { ", purchase tokens" } else { "" }
            )
        },
        sale,
        requests: sent,
        concurrency: config.concurrency,
        elapsed_s: elapsed,
        throughput_rps: sent as f64 / elapsed.max(1e-9),
        counts,
        latency: Latency {
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
            mean_ms: histogram.mean() / 1000.0,
        },
        drain_s,
        invariants,
        passed,
    })
}

/// Latency of every request against when it was sent: stalls show as columns, queueing as slopes.
fn plot(path: &std::path::Path, samples: &[(f32, f32)]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let max_t = samples.iter().map(|s| s.0).fold(0.001f32, f32::max);
    let max_ms = samples.iter().map(|s| s.1).fold(0.001f32, f32::max);
    let min_ms = samples.iter().map(|s| s.1).fold(max_ms, f32::min).max(0.001);
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("seckill bench: latency of each request over time", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..max_t * 1.02, (min_ms / 1.5..max_ms * 1.5).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(
            samples
                .iter()
                .map(|&(t, ms)| Circle::new((t, ms.max(min_ms)), 1, BLUE.mix(0.3).filled())),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        passed,
        detail,
    }
}

async fn demo_sale(target: &Target) -> anyhow::Result<i64> {
    let sales = target
        .json("/api/sales")
        .await
        .context("listing sales (is the engine running?)")?;
    sales["sales"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["demo"] == Value::Bool(true)))
        .and_then(|s| s["id"].as_i64())
        .context("the engine has no demo sale; pass --sale")
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style);
    }
    bar
}

fn print_summary(r: &Report) {
    println!("seckill bench: {} against {} (sale {})", r.mode, r.url, r.sale);
    println!(
        "  requests     {} in {:.3} s, concurrency {}",
        r.requests, r.elapsed_s, r.concurrency
    );
    println!("  throughput   {:.0} req/s", r.throughput_rps);
    let l = &r.latency;
    println!(
        "  latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    let c = &r.counts;
    println!(
        "  outcomes     success {}  sold_out {}  already_purchased {}  not_started/ended {}  overloaded {}  errors {}",
        c.success, c.sold_out, c.already_purchased, c.not_started_or_ended, c.overloaded, c.errors
    );
    if let Some(d) = r.drain_s {
        println!("  drain        all successes stored {d:.3} s after the last answer");
    }
    for check in &r.invariants {
        println!(
            "  [{}] {}: {}",
            if check.passed { "ok" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    println!(
        "{}",
        if r.passed {
            "PASSED"
        } else {
            "FAILED: an invariant is violated"
        }
    );
}
