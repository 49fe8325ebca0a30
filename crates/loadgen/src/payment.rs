//! Paying for holds as a payment provider would: each hold won is paid through the engine's
//! signed webhook after a random delay inside its window, or left to expire.
//!
//! [`Payer::take`] gets every hold as it is won and spawns one task for it; [`Payer::finish`]
//! waits for them all and hands back what the provider saw: which orders it was told are paid,
//! which payments came too late, and the webhook's latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use hyper::{Method, StatusCode};
use seckill_api::{Confirmation, ErrorBody};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::Target;
use crate::fire::{latency_histogram, MAX_LATENCY_US};

/// The header the engine reads the signature from.
const SIGNATURE_HEADER: &str = "seckill-signature";
const WEBHOOK_PATH: &str = "/api/payments/webhook";

/// Signs webhook bodies as the engine's payment provider does:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
#[derive(Clone)]
pub(crate) struct Signer {
    key: Hmac<Sha256>,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Signer {
            // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
            key: Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    /// The `Seckill-Signature` value for `body` sent at `unix_secs`.
    pub fn sign(&self, unix_secs: u64, body: &[u8]) -> String {
        let t = unix_secs.to_string();
        let mut mac = self.key.clone();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let mut header = format!("t={t},v1=");
        for byte in tag {
            header.push_str(&format!("{byte:02x}"));
        }
        header
    }
}

/// The provider's notice that `order_id` is paid.
pub(crate) fn notice(order_id: &str, payment_id: &str) -> String {
    serde_json::json!({"order_id": order_id, "payment_id": payment_id, "amount": "1.00"}).to_string()
}

/// What the provider does with one hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plan {
    /// Pay this long after the hold was won.
    Pay(Duration),
    /// Never pay: the hold expires and its unit goes back on sale.
    Expire,
}

/// The plan for one hold from two uniform random numbers: pay with probability `ratio`, after
/// a delay uniform in `[0, window)`.
pub(crate) fn plan(ratio: f64, window: Duration, draw: u64, delay: u64) -> Plan {
    if unit(draw) < ratio {
        // In integer nanoseconds: a float product may round up to the window itself.
        let nanos = (window.as_nanos() * u128::from(delay >> 11)) >> 53;
        Plan::Pay(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    } else {
        Plan::Expire
    }
}

/// A uniform number in `[0, 1)` from 64 random bits (the top 53, as many as an f64 holds).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What the webhook answered one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200: the order is paid.
    Paid,
    /// 409 `payment_window_closed`: the hold had expired; the engine keeps it as a late payment.
    TooLate,
    /// 409 `already_paid`.
    AlreadyPaid,
    /// Anything else, or no answer.
    Error,
}

fn classify(status: StatusCode, body: &[u8]) -> Answer {
    match status.as_u16() {
        200 => Answer::Paid,
        409 => match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) if e.error.code == "payment_window_closed" => Answer::TooLate,
            Ok(e) if e.error.code == "already_paid" => Answer::AlreadyPaid,
            _ => Answer::Error,
        },
        _ => Answer::Error,
    }
}

/// One hold the load won: the order, and its buyer (who may read it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    pub order_id: String,
    pub buyer: String,
    /// Its deadline, in unix milliseconds.
    pub pay_by_ms: Option<i64>,
}

/// What the provider did and was answered, over the whole run.
pub(crate) struct Ledger {
    pub holds: u64,
    pub let_expire: u64,
    /// Orders the webhook answered 200 (paid).
    pub paid: Vec<Hold>,
    /// Orders the webhook refused as too late.
    pub too_late: Vec<Hold>,
    pub already_paid: u64,
    pub errors: u64,
    /// The webhook's latency from when each payment was due, in microseconds.
    pub latency: Histogram<u64>,
    /// From the first payment due to the last answered; `None` when nothing was paid.
    pub span: Option<Duration>,
    /// The latest `pay_by` of a hold that was not paid, in unix milliseconds: when the last
    /// unit should go back on sale.
    pub last_unpaid_pay_by_ms: Option<i64>,
}

/// One payment sent: its answer, when it was sent and when answered.
struct Attempt {
    answer: Answer,
    sent: Instant,
    done: Instant,
}

/// A hold's task: the hold, and its payment if the provider paid.
type PaymentTask = JoinHandle<(Hold, Option<Attempt>)>;

/// The provider: signs and sends payments, one task per hold.
pub(crate) struct Payer {
    target: Arc<Target>,
    signer: Signer,
    ratio: f64,
    window: Duration,
    tasks: Mutex<Vec<PaymentTask>>,
    let_expire: AtomicU64,
    /// Payments in flight at once: as many as the load's buyers, so that a slow webhook queues
    /// payments here rather than opening a connection for each.
    in_flight: Semaphore,
}

impl Payer {
    pub fn new(target: Arc<Target>, signer: Signer, ratio: f64, window: Duration, in_flight: usize) -> Self {
        Payer {
            target,
            signer,
            ratio,
            window,
            tasks: Mutex::new(Vec::new()),
            let_expire: AtomicU64::new(0),
            in_flight: Semaphore::new(in_flight.max(1)),
        }
    }

    /// Takes a hold just won (the purchase's 201 body): pays it later, or lets it expire.
    /// `false` when the answer is not a confirmation with an order to pay.
    pub fn take(self: &Arc<Self>, confirmation: &[u8]) -> bool {
        let Ok(won) = serde_json::from_slice::<Confirmation>(confirmation) else {
            return false;
        };
        let hold = Hold {
            pay_by_ms: won.pay_by.as_deref().and_then(unix_millis),
            order_id: won.order_id,
            buyer: won.user_id,
        };
        let (draw, delay) = uuid::Uuid::new_v4().as_u64_pair();
        let payer = Arc::clone(self);
        let task = tokio::spawn(async move {
            match plan(payer.ratio, payer.window, draw, delay) {
                Plan::Expire => {
                    payer.let_expire.fetch_add(1, Ordering::Relaxed);
                    (hold, None)
                }
                Plan::Pay(after) => {
                    tokio::time::sleep(after).await;
                    // Latency counts from when the payment was due, a wait for a permit included,
                    // so a webhook that cannot keep up shows in it (as in the open loop).
                    let sent = Instant::now();
                    // Never closed, so a permit always comes.
                    let _permit = payer.in_flight.acquire().await;
                    let answer = payer.pay(&hold.order_id).await;
                    let done = Instant::now();
                    (hold, Some(Attempt { answer, sent, done }))
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
        true
    }

    /// Sends one signed payment notice for `order_id`.
    async fn pay(&self, order_id: &str) -> Answer {
        let body = notice(order_id, &format!("bench-{}", uuid::Uuid::new_v4().simple()));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let signature = self.signer.sign(now.as_secs(), body.as_bytes());
        let headers = [
            ("content-type", "application/json"),
            (SIGNATURE_HEADER, signature.as_str()),
        ];
        match self
            .target
            .send_body(Method::POST, WEBHOOK_PATH, &headers, Bytes::from(body))
            .await
        {
            Ok((status, answer)) => classify(status, &answer),
            Err(_) => Answer::Error,
        }
    }

    /// Waits for every payment to be answered; what the provider saw.
    pub async fn finish(&self) -> Ledger {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let mut ledger = Ledger {
            holds: tasks.len() as u64,
            let_expire: 0,
            paid: Vec::new(),
            too_late: Vec::new(),
            already_paid: 0,
            errors: 0,
            latency: latency_histogram(),
            span: None,
            last_unpaid_pay_by_ms: None,
        };
        let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
        for task in tasks {
            let Ok((hold, answered)) = task.await else {
                ledger.errors += 1;
                continue;
            };
            let unpaid = !matches!(
                answered,
                Some(Attempt {
                    answer: Answer::Paid | Answer::AlreadyPaid,
                    ..
                })
            );
            if let (true, Some(pay_by)) = (unpaid, hold.pay_by_ms) {
                ledger.last_unpaid_pay_by_ms = Some(ledger.last_unpaid_pay_by_ms.map_or(pay_by, |l| l.max(pay_by)));
            }
            let Some(Attempt { answer, sent, done }) = answered else {
                continue;
            };
            let micros = (done.duration_since(sent).as_micros().max(1) as u64).min(MAX_LATENCY_US);
            // In bounds by construction: the only error `record` has.
            let _ = ledger.latency.record(micros);
            first = Some(first.map_or(sent, |f| f.min(sent)));
            last = Some(last.map_or(done, |l| l.max(done)));
            match answer {
                Answer::Paid => ledger.paid.push(hold),
                Answer::TooLate => ledger.too_late.push(hold),
                Answer::AlreadyPaid => ledger.already_paid += 1,
                Answer::Error => ledger.errors += 1,
            }
        }
        ledger.let_expire = self.let_expire.load(Ordering::Relaxed);
        ledger.span = first.zip(last).map(|(f, l)| l.duration_since(f));
        ledger
    }
}

/// An RFC 3339 time (the engine's `pay_by`) in unix milliseconds.
pub(crate) fn unix_millis(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_timestamp_and_hex_hmac_of_timestamp_dot_body() {
        let body = br#"{"order_id":"x","payment_id":"p1"}"#;
        // HMAC-SHA256("whsec", "1000000.<body>"), computed apart (Python's hmac module).
        assert_eq!(
            Signer::new(b"whsec").sign(1_000_000, body),
            "t=1000000,v1=ac17064bf1b365290446c7ac15802263df4ed4a69e7f5a93bc76175f3a36c31c"
        );
        let other = Signer::new(b"other").sign(1_000_000, body);
        assert!(other.starts_with("t=1000000,v1=") && other.len() == "t=1000000,v1=".len() + 64);
        assert_ne!(other, Signer::new(b"whsec").sign(1_000_000, body));
    }

    #[test]
    fn the_notice_names_the_order_and_the_payment() {
        let body: serde_json::Value = serde_json::from_str(&notice("o-1", "p-1")).expect("JSON");
        assert_eq!(
            (body["order_id"].as_str(), body["payment_id"].as_str()),
            (Some("o-1"), Some("p-1"))
        );
    }

    #[test]
    fn a_plan_pays_with_the_ratio_inside_the_window() {
        let window = Duration::from_secs(2);
        assert_eq!(plan(0.5, window, 0, 0), Plan::Pay(Duration::ZERO));
        assert_eq!(plan(0.5, window, u64::MAX, 0), Plan::Expire);
        assert_eq!(
            plan(1.0, window, u64::MAX, 0),
            Plan::Pay(Duration::ZERO),
            "ratio 1 always pays"
        );
        assert_eq!(plan(0.0, window, 0, 0), Plan::Expire, "ratio 0 never pays");
        match plan(1.0, window, 0, u64::MAX) {
            Plan::Pay(delay) => assert!(delay < window, "{delay:?}"),
            Plan::Expire => panic!("ratio 1 pays"),
        }
        assert_eq!(plan(1.0, window, 0, 1 << 63), Plan::Pay(Duration::from_secs(1)));
    }

    #[test]
    fn webhook_answers_are_classified_by_status_and_code() {
        let conflict = |code: &str| {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            classify(StatusCode::CONFLICT, body.as_bytes())
        };
        assert_eq!(classify(StatusCode::OK, b"{}"), Answer::Paid);
        assert_eq!(conflict("payment_window_closed"), Answer::TooLate);
        assert_eq!(conflict("already_paid"), Answer::AlreadyPaid);
        assert_eq!(conflict("other"), Answer::Error);
        assert_eq!(classify(StatusCode::UNAUTHORIZED, b"{}"), Answer::Error);
    }

    #[test]
    fn pay_by_reads_as_unix_milliseconds() {
        assert_eq!(unix_millis("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(unix_millis("2026-11-25T09:57:33.551Z"), Some(1_795_600_653_551));
        assert_eq!(unix_millis("yesterday"), None);
    }
}
