//! The waiting room: a sale with one sells only to buyers it admitted, in queue order, at its
//! rate; joining twice is one ticket; an abandoned ticket gives its slot away; a sold-out sale
//! answers `sold_out` to every ticket; distributed instances share one queue.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_error, rfc3339_in, TestServer};
use crate::requests::{get_with, post};

/// Creates a sale with a waiting room; `starts_in` seconds from now, or open at once.
async fn room_sale(app: &TestServer, stock: u64, rate: u32, mode: &str, ttl: u32, starts_in: Option<i64>) -> i64 {
    let mut body = json!({
        "name": "queued item",
        "stock": stock,
        "waiting_room": { "admit_per_sec": rate, "mode": mode, "ticket_ttl_secs": ttl },
    });
    if let Some(seconds) = starts_in {
        body["starts_at"] = json!(rfc3339_in(seconds));
    }
    let (status, sale) = app.create_sale(body).await;
    assert_eq!(status, 201, "{sale}");
    assert_eq!(sale["waiting_room"]["mode"], mode, "{sale}");
    sale["id"].as_i64().expect("id")
}

async fn join(app: &TestServer, sale: i64, user: &str) -> (u16, Value) {
    let (status, _, body) = post(app, &format!("/api/sales/{sale}/queue"), &[("x-user-id", user)]).await;
    (status, body)
}

async fn joined(app: &TestServer, sale: i64, user: &str) -> String {
    let (status, body) = join(app, sale, user).await;
    assert_eq!(status, 200, "{body}");
    body["ticket"].as_str().expect("ticket").to_owned()
}

async fn poll(app: &TestServer, sale: i64, ticket: &str, user: &str) -> Value {
    let (status, _, body) = get_with(
        app,
        &format!("/api/sales/{sale}/queue/{ticket}"),
        &[("x-user-id", user)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn buy(app: &TestServer, sale: i64, user: &str, admission: Option<&str>) -> (u16, Value) {
    let mut headers = vec![("x-user-id", user)];
    if let Some(token) = admission {
        headers.push(("x-admission-token", token));
    }
    let (status, _, body) = post(app, &format!("/api/sales/{sale}/purchase"), &headers).await;
    (status, body)
}

/// Polls the ticket until it is admitted; its admission token.
async fn admitted(app: &TestServer, sale: i64, ticket: &str, user: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let answer = poll(app, sale, ticket, user).await;
        if answer["state"] == "admitted" {
            return answer["admission_token"].as_str().expect("admission token").to_owned();
        }
        assert_eq!(answer["state"], "waiting", "{answer}");
        assert!(Instant::now() < deadline, "not admitted within {within:?}: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Purchase without admission, with another buyer's or another sale's token, with junk: 403;
/// with its own admission: 201.
pub async fn admission_is_required_and_bound_to_buyer_and_sale(app: &TestServer) {
    let sale = room_sale(app, 5, 100, "fifo", 30, None).await;
    let other = room_sale(app, 5, 100, "fifo", 30, None).await;
    let (status, body) = buy(app, sale, "alice", None).await;
    assert_error(status, &body, 403, "admission_required");

    let ticket = joined(app, sale, "alice").await;
    let token = admitted(app, sale, &ticket, "alice", Duration::from_secs(20)).await;
    let (status, body) = buy(app, sale, "bob", Some(&token)).await;
    assert_error(status, &body, 403, "invalid_admission");
    let (status, body) = buy(app, other, "alice", Some(&token)).await;
    assert_error(status, &body, 403, "invalid_admission");
    for junk in [
        "",
        "x",
        "1.AAAA",
        "99999999999999.q3Jx0rX4m1oYk1y0cW8Kq2m9sQb1dE5vT7nHfLzA0pQ",
    ] {
        let (status, body) = buy(app, sale, "alice", Some(junk)).await;
        assert_error(status, &body, 403, "invalid_admission");
    }
    let (status, body) = buy(app, sale, "alice", Some(&token)).await;
    assert_eq!(status, 201, "{body}");

    // A sale without a room has no queue, and its purchases need no admission.
    let plain = app.live_sale(5, 1).await;
    let (status, body) = join(app, plain, "alice").await;
    assert_error(status, &body, 404, "no_waiting_room");
    let (status, body) = buy(app, plain, "alice", None).await;
    assert_eq!(status, 201, "{body}");
}

/// Each scenario runs against the embedded engine and, with the feature, the distributed one.
macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let app = crate::helpers::TestServer::spawn().await;
                    super::$scenario(&app).await;
                }
            )*
        }

        #[cfg(feature = "distributed")]
        mod distributed_mode {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let services = crate::helpers::Services::start().await;
                    let app = crate::helpers::TestServer::spawn_with(super::distributed::shared(&services)).await;
                    super::$scenario(&app).await;
                }
            )*
        }
    };
}

in_both_modes!(
    admission_is_required_and_bound_to_buyer_and_sale,
    one_ticket_per_buyer_and_admission_at_the_rate,
    pre_start_joiners_are_admitted_before_later_ones,
    abandoned_tickets_expire_without_slowing_the_queue,
    a_sold_out_sale_answers_sold_out_to_every_ticket,
    a_sold_out_sales_queue_is_let_go,
    tickets_tell_their_place_and_admission_time,
);

/// Joining twice is one ticket; concurrent joiners each get their own; tickets are admitted no
/// faster than the rate (plus the burst), and all of them in the end.
pub async fn one_ticket_per_buyer_and_admission_at_the_rate(app: &TestServer) {
    let rate = 5;
    let before_creation = Instant::now();
    let sale = room_sale(app, 100, rate, "fifo", 30, None).await;
    let users: Vec<String> = (0..30).map(|i| format!("buyer{i}")).collect();
    let tickets: Vec<String> = futures::future::join_all(users.iter().map(|u| joined(app, sale, u))).await;
    assert_eq!(
        tickets.iter().collect::<HashSet<_>>().len(),
        users.len(),
        "a ticket each"
    );
    for (user, ticket) in users.iter().zip(&tickets).take(5) {
        assert_eq!(&joined(app, sale, user).await, ticket, "joining again: the same ticket");
    }
    let mut admitted: HashSet<usize> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while admitted.len() < users.len() {
        assert!(Instant::now() < deadline, "only {} admitted", admitted.len());
        let answers = futures::future::join_all(
            users
                .iter()
                .zip(&tickets)
                .map(|(user, ticket)| poll(app, sale, ticket, user)),
        )
        .await;
        // The sale opened after `before_creation`: no more can be in than that time allows.
        let allowed = (before_creation.elapsed().as_secs_f64() * f64::from(rate)).ceil() as usize + rate as usize + 1;
        for (i, answer) in answers.iter().enumerate() {
            match answer["state"].as_str() {
                Some("admitted") => {
                    assert!(answer["admission_token"].is_string(), "{answer}");
                    admitted.insert(i);
                }
                Some("waiting") => {
                    assert!(!admitted.contains(&i), "admitted, then waiting again: {answer}");
                    assert!(answer["poll_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{answer}");
                }
                _ => panic!("{answer}"),
            }
        }
        assert!(
            admitted.len() <= allowed,
            "{} admitted, at most {allowed} allowed",
            admitted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queued = format!("seckill_queue_admitted_total{{sale=\"{sale}\"}}");
    assert_eq!(app.metric(&queued).await, Some(users.len() as f64));
}

/// Tickets taken before the start have no place until it; then every one of them is admitted
/// before any ticket taken after the start.
pub async fn pre_start_joiners_are_admitted_before_later_ones(app: &TestServer) {
    let sale = room_sale(app, 100, 5, "random_at_start", 30, Some(3)).await;
    let mut tickets: Vec<(String, String, bool)> = Vec::new();
    for i in 0..15 {
        let user = format!("early{i}");
        let (status, answer) = join(app, sale, &user).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["state"], "waiting", "{answer}");
        assert!(answer["ahead"].is_null(), "no place before the start: {answer}");
        tickets.push((user, answer["ticket"].as_str().expect("ticket").to_owned(), true));
    }
    let sale_view = app.get(&format!("/api/sales/{sale}")).await.1;
    while app.get(&format!("/api/sales/{sale}")).await.1["status"] == "upcoming" {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sale_view["waiting_room"]["admit_per_sec"], 5);
    for i in 0..5 {
        let user = format!("late{i}");
        let ticket = joined(app, sale, &user).await;
        tickets.push((user, ticket, false));
    }
    // Poll in rounds: a ticket placed earlier is admitted in the same round or an earlier one.
    let mut round_admitted: HashMap<usize, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0.. {
        if round_admitted.len() == tickets.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {} admitted", round_admitted.len());
        let answers =
            futures::future::join_all(tickets.iter().map(|(user, ticket, _)| poll(app, sale, ticket, user))).await;
        for (i, answer) in answers.iter().enumerate() {
            if answer["state"] == "admitted" {
                round_admitted.entry(i).or_insert(round);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_early = (0..15).map(|i| round_admitted[&i]).max();
    let first_late = (15..20).map(|i| round_admitted[&i]).min();
    assert!(
        last_early <= first_late,
        "a later joiner was admitted before an early one: {round_admitted:?}"
    );
}

/// Tickets that stop polling expire, and their slots go to the next tickets: a buyer behind 30
/// abandoned tickets, at one admission a second, gets in long before 30 seconds.
pub async fn abandoned_tickets_expire_without_slowing_the_queue(app: &TestServer) {
    let sale = room_sale(app, 100, 1, "fifo", 5, None).await;
    let mut gone = Vec::new();
    for i in 0..30 {
        let user = format!("gone{i}");
        gone.push((user.clone(), joined(app, sale, &user).await));
    }
    let started = Instant::now();
    let ticket = joined(app, sale, "patient").await;
    admitted(app, sale, &ticket, "patient", Duration::from_secs(20)).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let (user, ticket) = &gone[gone.len() - 1];
    assert_eq!(poll(app, sale, ticket, user).await["state"], "expired");
    let expired = format!("seckill_queue_expired_total{{sale=\"{sale}\"}}");
    let at_least = app.wait_metric(&expired, Duration::from_secs(5), |n| n >= 25.0).await;
    assert!(at_least.is_some_and(|n| n >= 25.0), "{at_least:?}");
    // Joining again after expiry: a new ticket, at the back.
    let (user, old) = &gone[0];
    assert_ne!(&joined(app, sale, user).await, old);
}

/// Once the last unit is sold every waiting ticket answers `sold_out`, and nobody new may join.
pub async fn a_sold_out_sale_answers_sold_out_to_every_ticket(app: &TestServer) {
    let sale = room_sale(app, 1, 1, "fifo", 30, None).await;
    let first = joined(app, sale, "first").await;
    let waiting: Vec<(String, String)> = {
        let mut w = Vec::new();
        for i in 0..3 {
            let user = format!("waiting{i}");
            w.push((user.clone(), joined(app, sale, &user).await));
        }
        w
    };
    let token = admitted(app, sale, &first, "first", Duration::from_secs(20)).await;
    let (status, body) = buy(app, sale, "first", Some(&token)).await;
    assert_eq!(status, 201, "{body}");
    for (user, ticket) in &waiting {
        let answer = poll(app, sale, ticket, user).await;
        assert_eq!(answer["state"], "sold_out", "{answer}");
        assert!(answer.get("admission_token").is_none(), "{answer}");
    }
    let (status, body) = join(app, sale, "latecomer").await;
    assert_error(status, &body, 410, "sold_out");
}

/// A ticket time to live after the last unit is sold, the sale's queue is let go (embedded: its
/// memory dropped; distributed: its Redis keys expired), and its counters leave `/metrics`.
pub async fn a_sold_out_sales_queue_is_let_go(app: &TestServer) {
    let sale = room_sale(app, 1, 100, "fifo", 5, None).await;
    let ticket = joined(app, sale, "only").await;
    let token = admitted(app, sale, &ticket, "only", Duration::from_secs(20)).await;
    let (status, body) = buy(app, sale, "only", Some(&token)).await;
    assert_eq!(status, 201, "{body}");
    let counted = format!("seckill_queue_admitted_total{{sale=\"{sale}\"}}");
    assert_eq!(app.metric(&counted).await, Some(1.0));
    // Five seconds of time to live, and a sweep every second: gone well within a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.metric(&counted).await.is_some() {
        assert!(Instant::now() < deadline, "the sold-out sale's queue is still there");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(poll(app, sale, &ticket, "only").await["state"], "sold_out");
}

/// Every answer with a place tells it; an admitted ticket tells when the front reached it, the
/// same on every poll, no later than the poll that admitted it; places are handed out once.
pub async fn tickets_tell_their_place_and_admission_time(app: &TestServer) {
    let before = chrono::Utc::now().timestamp_millis();
    let sale = room_sale(app, 100, 2, "fifo", 30, None).await;
    let mut places = Vec::new();
    for i in 0..4 {
        let user = format!("placed{i}");
        let ticket = joined(app, sale, &user).await;
        let first = poll(app, sale, &ticket, &user).await;
        places.push(first["place"].as_u64().expect("a place"));
        admitted(app, sale, &ticket, &user, Duration::from_secs(30)).await;
        let seen = chrono::Utc::now().timestamp_millis();
        let answer = poll(app, sale, &ticket, &user).await;
        let at = answer["admitted_at_ms"].as_i64().expect("admitted_at_ms");
        assert!(before <= at && at <= seen, "{before} <= {at} <= {seen}: {answer}");
        assert_eq!(
            poll(app, sale, &ticket, &user).await["admitted_at_ms"],
            at,
            "the same on every poll"
        );
    }
    assert_eq!(places, vec![1, 2, 3, 4], "arrival order in fifo");
}

/// Polls follow the server's pace, so the per-buyer rate limit does not refuse them.
#[tokio::test]
async fn polls_are_not_held_to_the_per_buyer_rate_limit() {
    let app = TestServer::spawn_with(crate::helpers::Options {
        extra_args: ["--rate-limit-user", "1", "--rate-limit-user-burst", "1"]
            .map(String::from)
            .to_vec(),
        ..crate::helpers::Options::new()
    })
    .await;
    let sale = room_sale(&app, 5, 1, "fifo", 30, Some(60)).await;
    let ticket = joined(&app, sale, "alice").await;
    for _ in 0..5 {
        assert_eq!(poll(&app, sale, &ticket, "alice").await["state"], "waiting");
    }
}

/// Solves `sale`'s join challenge for `user` as a script would (the `altcha` crate): the
/// `X-Altcha` payload.
async fn solved_challenge(app: &TestServer, sale: i64, user: &str) -> String {
    use base64::Engine as _;
    let (status, _, challenge) = get_with(app, &format!("/api/sales/{sale}/challenge"), &[("x-user-id", user)]).await;
    assert_eq!(status, 200, "{challenge}");
    let challenge: altcha::Challenge = serde_json::from_value(challenge).expect("an ALTCHA challenge");
    let solution = altcha::solve_challenge(altcha::SolveChallengeOptions::new(&challenge))
        .expect("solvable")
        .expect("solved in time");
    let payload = serde_json::to_vec(&altcha::Payload { challenge, solution }).expect("json");
    base64::engine::general_purpose::STANDARD.encode(payload)
}

/// With `--altcha-difficulty`, joining needs a solved challenge for that buyer and sale, checked
/// before the queue: none is 403 `challenge_required`; another buyer's, another sale's or a
/// forged one is 403 `invalid_challenge`; the buyer's own joins. Without it nothing is asked.
#[tokio::test]
async fn a_join_needs_a_solved_proof_of_work_bound_to_its_buyer_and_sale() {
    let app = TestServer::spawn_with(crate::helpers::Options {
        extra_args: ["--altcha-difficulty", "3"].map(String::from).to_vec(),
        ..crate::helpers::Options::new()
    })
    .await;
    let sale = room_sale(&app, 5, 1, "fifo", 30, Some(60)).await;
    let other = room_sale(&app, 5, 1, "fifo", 30, Some(60)).await;
    let (status, body) = join(&app, sale, "alice").await;
    assert_error(status, &body, 403, "challenge_required");

    let alices = solved_challenge(&app, sale, "alice").await;
    let join_with = |sale: i64, user: &'static str, altcha: String| {
        let app = &app;
        async move {
            let (status, _, body) = post(
                app,
                &format!("/api/sales/{sale}/queue"),
                &[("x-user-id", user), ("x-altcha", altcha.as_str())],
            )
            .await;
            (status, body)
        }
    };
    for (sale, user, altcha) in [
        (sale, "bob", alices.clone()),
        (other, "alice", alices.clone()),
        (sale, "alice", alices.replace('A', "B")),
        (sale, "alice", "bm90IGEgcGF5bG9hZA==".to_owned()),
    ] {
        let (status, body) = join_with(sale, user, altcha).await;
        assert_error(status, &body, 403, "invalid_challenge");
    }
    let (status, body) = join_with(sale, "alice", alices.clone()).await;
    assert_eq!(status, 200, "{body}");
    // Joining again with the same answer gives the ticket already held, nothing more.
    let (status, again) = join_with(sale, "alice", alices).await;
    assert_eq!((status, &again["ticket"]), (200, &body["ticket"]), "{again}");

    let plain = TestServer::spawn().await;
    let sale = room_sale(&plain, 5, 1, "fifo", 30, Some(60)).await;
    let (status, _, body) = get_with(
        &plain,
        &format!("/api/sales/{sale}/challenge"),
        &[("x-user-id", "alice")],
    )
    .await;
    assert_error(status, &body, 404, "no_challenge");
    assert_eq!(join(&plain, sale, "alice").await.0, 200);
}

/// The embedded queue lives in the process: a restarted engine knows no ticket, and its buyers
/// join again (stock and orders are in SQLite and survive).
#[tokio::test]
async fn an_embedded_restart_forgets_the_queue() {
    let app = TestServer::spawn().await;
    let sale = room_sale(&app, 5, 1, "fifo", 30, None).await;
    let ticket = joined(&app, sale, "alice").await;
    let app = app.restart(crate::helpers::Options::new()).await;
    let (status, _, body) = get_with(
        &app,
        &format!("/api/sales/{sale}/queue/{ticket}"),
        &[("x-user-id", "alice")],
    )
    .await;
    assert_error(status, &body, 404, "ticket_not_found");
    assert_ne!(joined(&app, sale, "alice").await, ticket);
}

#[cfg(feature = "distributed")]
mod distributed {
    use std::sync::Arc;

    use futures::future::join_all;

    use super::*;
    use crate::helpers::{Options, Services};

    /// Instances that verify each other's admission tokens.
    pub fn shared(services: &Services) -> Options {
        Options {
            env: vec![("SECKILL_PURCHASE_TOKEN_SECRET".into(), "shared-by-instances".into())],
            ..Options::distributed(services)
        }
    }

    /// Two instances, one queue: the same buyer gets the same ticket on either, a ticket taken
    /// on one is polled on the other, and an admission from one buys on the other.
    #[tokio::test]
    async fn two_instances_share_one_queue() {
        let services = Services::start().await;
        let a = TestServer::spawn_with(shared(&services)).await;
        let b = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&a, 10, 1, "fifo", 30, None).await;
        let alice = joined(&a, sale, "alice").await;
        assert_eq!(joined(&b, sale, "alice").await, alice);
        let bob = joined(&b, sale, "bob").await;
        assert_ne!(bob, alice);
        let carol = joined(&a, sale, "carol").await;
        let answer = poll(&a, sale, &bob, "bob").await;
        assert!(
            answer["state"] == "admitted" || answer["ahead"].as_u64().is_some(),
            "bob's ticket, taken on b, is known on a: {answer}"
        );
        let token = admitted(&a, sale, &alice, "alice", Duration::from_secs(20)).await;
        let (status, body) = buy(&b, sale, "alice", Some(&token)).await;
        assert_eq!(status, 201, "{body}");
        // Places are shared: carol joined after bob, whichever instance each used.
        let token = admitted(&b, sale, &carol, "carol", Duration::from_secs(30)).await;
        assert!(!token.is_empty());
        assert_eq!(poll(&a, sale, &bob, "bob").await["state"], "admitted");
    }

    /// Spearman's rank correlation of two permutations of 1..=n given as pairs.
    fn rank_correlation(pairs: &[(f64, f64)]) -> f64 {
        let n = pairs.len() as f64;
        let d2: f64 = pairs.iter().map(|(a, b)| (a - b).powi(2)).sum();
        1.0 - 6.0 * d2 / (n * (n * n - 1.0))
    }

    /// Buyers who join before the start are placed at the start by a permutation Redis keys
    /// with a seed picked then: places 1..=N, each once; uncorrelated with the order they
    /// arrived in; and another for a second sale the same buyers joined in the same order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_shuffle_at_the_start_is_a_fresh_permutation_uncorrelated_with_arrival() {
        const JOINERS: usize = 200;
        let services = Services::start().await;
        let app = Arc::new(TestServer::spawn_with(shared(&services)).await);
        let sales = [
            room_sale(&app, 10, 1, "random_at_start", 60, Some(8)).await,
            room_sale(&app, 10, 1, "random_at_start", 60, Some(8)).await,
        ];
        // One at a time, each buyer into both sales: the same arrival in each.
        let mut joins = Vec::new();
        for i in 0..JOINERS {
            for sale in sales {
                let user = format!("early-{i}");
                let (status, body) = join(&app, sale, &user).await;
                assert_eq!(
                    (status, body["ahead"].is_null()),
                    (200, true),
                    "no place before the start: {body}"
                );
                joins.push((sale, user, body["ticket"].as_str().expect("ticket").to_owned()));
            }
        }
        while app.get(&format!("/api/sales/{}", sales[1])).await.1["status"] == "upcoming" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A ticket is placed at its first poll after the start.
        join_all(joins.iter().map(|(sale, user, ticket)| poll(&app, *sale, ticket, user))).await;

        // user → (the order they joined in, place), from the buyers' records Redis keeps:
        // `place|arrival|…`.
        let mut placed: Vec<HashMap<String, (f64, f64)>> = Vec::new();
        for sale in sales {
            let key = format!("{}:{{s{sale}}}:q:users", services.redis_prefix);
            let records: HashMap<String, String> = services.redis(redis::cmd("HGETALL").arg(&key)).await;
            let by_user: HashMap<String, (f64, f64)> = records
                .into_iter()
                .map(|(user, raw)| {
                    let fields: Vec<&str> = raw.split('|').collect();
                    let place = fields[0].parse::<f64>().expect("a number");
                    let joined: f64 = user["early-".len()..].parse().expect("early-<i>");
                    (user, (joined + 1.0, place))
                })
                .collect();
            let mut places: Vec<f64> = by_user.values().map(|&(_, place)| place).collect();
            places.sort_by(f64::total_cmp);
            let every_place: Vec<f64> = (1..=JOINERS).map(|p| p as f64).collect();
            assert_eq!(places, every_place, "each place once");
            let by_arrival: Vec<(f64, f64)> = by_user.values().copied().collect();
            let rho = rank_correlation(&by_arrival);
            assert!(rho.abs() < 0.3, "places follow arrivals: Spearman {rho:.3}");
            placed.push(by_user);
        }
        let across: Vec<(f64, f64)> = placed[0]
            .iter()
            .map(|(user, &(_, place))| (place, placed[1][user].1))
            .collect();
        let rho = rank_correlation(&across);
        assert!(rho.abs() < 0.3, "two sales shuffled alike: Spearman {rho:.3}");
    }

    /// Waits until `user` is written into the sale's `early` set (joins before a `random_at_start`
    /// start are answered first, written a moment later).
    async fn written_early(services: &Services, sale: i64, user: &str) -> bool {
        let key = format!("{}:{{s{sale}}}:q:early", services.redis_prefix);
        for _ in 0..100 {
            let there: bool = services.redis(redis::cmd("SISMEMBER").arg(&key).arg(user)).await;
            if there {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Before a `random_at_start` start, a join is answered without asking Redis which ticket:
    /// a buyer's ticket is derived from them and the queue's key. Joining on two instances gives
    /// one ticket, counted once; at the start each buyer has one place.
    #[tokio::test]
    async fn a_buyer_joining_before_the_start_on_two_instances_holds_one_ticket_counted_once() {
        let services = Services::start().await;
        let a = TestServer::spawn_with(shared(&services)).await;
        let b = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&a, 10, 1, "random_at_start", 60, Some(6)).await;
        let alice = joined(&a, sale, "alice").await;
        assert_eq!(joined(&b, sale, "alice").await, alice);
        assert_eq!(joined(&a, sale, "alice").await, alice);
        let bob = joined(&b, sale, "bob").await;
        assert_ne!(bob, alice);
        assert!(written_early(&services, sale, "alice").await && written_early(&services, sale, "bob").await);
        let key = format!("{}:{{s{sale}}}:q:early", services.redis_prefix);
        let counted: u64 = services.redis(redis::cmd("SCARD").arg(&key)).await;
        assert_eq!(counted, 2, "alice once, bob once");
        // Another buyer's ticket is nobody else's.
        let (status, _, _) = get_with(&a, &format!("/api/sales/{sale}/queue/{alice}"), &[("x-user-id", "bob")]).await;
        assert_eq!(status, 404);
        while a.get(&format!("/api/sales/{sale}")).await.1["status"] == "upcoming" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut places = vec![
            poll(&b, sale, &alice, "alice").await["place"].as_u64(),
            poll(&a, sale, &bob, "bob").await["place"].as_u64(),
        ];
        places.sort();
        assert_eq!(places, vec![Some(1), Some(2)], "one place each");
    }

    /// A join before the start answered but never written (its instance killed first; here its
    /// entry is removed by hand) is written by the buyer's next poll before the start, and the
    /// buyer is placed at the start like everyone who joined before it.
    #[tokio::test]
    async fn a_join_before_the_start_never_written_is_written_by_the_next_poll() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 10, 1, "random_at_start", 60, Some(5)).await;
        let ticket = joined(&app, sale, "alice").await;
        joined(&app, sale, "bob").await;
        assert!(written_early(&services, sale, "alice").await);
        let key = format!("{}:{{s{sale}}}:q:early", services.redis_prefix);
        let _: i64 = services.redis(redis::cmd("SREM").arg(&key).arg("alice")).await;
        let answer = poll(&app, sale, &ticket, "alice").await;
        assert_eq!(answer["state"], "waiting", "{answer}");
        assert!(written_early(&services, sale, "alice").await, "written again");
        while app.get(&format!("/api/sales/{sale}")).await.1["status"] == "upcoming" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let answer = poll(&app, sale, &ticket, "alice").await;
        let place = answer["place"].as_u64();
        assert!(
            matches!(place, Some(1 | 2)),
            "placed among the two who joined before: {answer}"
        );
    }

    /// Buyers who joined before a `random_at_start` start and never ask again are counted at the
    /// start with no record of theirs in Redis; the sweep expires them a time to live after
    /// their join and hands their slots on, so the one who stays is admitted at once.
    #[tokio::test]
    async fn buyers_who_joined_before_the_start_and_left_expire_without_slowing_the_queue() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 100, 1, "random_at_start", 5, Some(3)).await;
        let mut gone = Vec::new();
        for i in 0..60 {
            let user = format!("gone{i}");
            gone.push((user.clone(), joined(&app, sale, &user).await));
        }
        let ticket = joined(&app, sale, "patient").await;
        while app.get(&format!("/api/sales/{sale}")).await.1["status"] == "upcoming" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = Instant::now();
        // The first request after the start counts everyone who joined before it.
        assert_ne!(poll(&app, sale, &ticket, "patient").await["state"], "expired");
        let expired = format!("seckill_queue_expired_total{{sale=\"{sale}\"}}");
        let all = app.wait_metric(&expired, Duration::from_secs(15), |n| n >= 60.0).await;
        assert!(
            all.is_some_and(|n| n >= 60.0),
            "every slot of those gone handed on: {all:?}"
        );
        admitted(&app, sale, &ticket, "patient", Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(20));
        let (user, ticket) = &gone[0];
        assert_eq!(poll(&app, sale, ticket, user).await["state"], "expired");
    }

    /// A `random_at_start` queue an older version started (its pre-start tickets ranked in a
    /// sorted set, no seed kept) keeps the places that set gives them.
    #[tokio::test]
    async fn a_queue_an_older_version_started_keeps_its_places() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 10, 1, "random_at_start", 60, Some(3)).await;
        let users = ["first", "second", "third"];
        let mut tickets = Vec::new();
        for user in users {
            tickets.push(joined(&app, sale, user).await);
        }
        // Joins before the start are written a moment after their answer: all of them first.
        for user in users {
            assert!(written_early(&services, sale, user).await);
        }
        // As the older version leaves it: ranked second, third, first; started with 3 placed.
        let key = |name: &str| format!("{}:{{s{sale}}}:q:{name}", services.redis_prefix);
        let ranked = redis::cmd("ZADD")
            .arg(key("pre"))
            .arg(3)
            .arg(&tickets[0])
            .arg(1)
            .arg(&tickets[1])
            .arg(2)
            .arg(&tickets[2])
            .clone();
        let _: i64 = services.redis(&ranked).await;
        let _: i64 = services
            .redis(redis::cmd("HSET").arg(key("meta")).arg("placed").arg(3))
            .await;

        while app.get(&format!("/api/sales/{sale}")).await.1["status"] == "upcoming" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut places = Vec::new();
        for (user, ticket) in users.iter().zip(&tickets) {
            places.push(poll(&app, sale, ticket, user).await["place"].as_u64());
        }
        assert_eq!(places, [Some(3), Some(1), Some(2)]);
    }

    /// A queue an older version kept (each ticket in a `tickets` hash, the buyer's entry naming
    /// it, its last poll in `seen` under its id, its admission time in `at`) goes on: each
    /// buyer keeps their ticket, place and admission time, a stale ticket is swept, the next
    /// joiner queues behind, and the older records are gone once read.
    #[tokio::test]
    async fn a_queue_an_older_version_kept_goes_on() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 100, 1, "fifo", 5, None).await;
        let key = |name: &str| format!("{}:{{s{sale}}}:q:{name}", services.redis_prefix);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        // As the older version leaves three buyers who joined after the start: the first
        // admitted at `admitted_at`, the second polled just now, the third a minute ago.
        let admitted_at = now - 500;
        let tickets = [
            "0123456789abcdef0123456789abcde1",
            "0123456789abcdef0123456789abcde2",
            "0123456789abcdef0123456789abcde3",
        ];
        let users = ["old1", "old2", "old3"];
        let mut meta = redis::cmd("HSET");
        meta.arg(key("meta")).arg(&[
            "arrivals", "3", "placed", "0", "seed", "s", "after", "3", "admitted", "1", "expired", "0",
        ]);
        let _: i64 = services.redis(&meta).await;
        for (i, (user, ticket)) in users.iter().zip(tickets).enumerate() {
            let admitted = u8::from(i == 0);
            let record = format!("{}|{}|{admitted}|0|{user}", i + 1, i + 1);
            let _: i64 = services
                .redis(redis::cmd("HSET").arg(key("tickets")).arg(ticket).arg(record))
                .await;
            let _: i64 = services
                .redis(redis::cmd("HSET").arg(key("users")).arg(user).arg(ticket))
                .await;
            let seen = if i == 2 { now - 60_000 } else { now };
            let _: i64 = services
                .redis(redis::cmd("ZADD").arg(key("seen")).arg(seen).arg(ticket))
                .await;
        }
        let _: i64 = services
            .redis(redis::cmd("HSET").arg(key("at")).arg(tickets[0]).arg(admitted_at))
            .await;

        let first = poll(&app, sale, tickets[0], users[0]).await;
        assert_eq!(first["state"], "admitted", "{first}");
        assert_eq!(first["place"], 1, "{first}");
        assert_eq!(first["admitted_at_ms"], admitted_at, "{first}");
        let second = poll(&app, sale, tickets[1], users[1]).await;
        assert_eq!(second["place"], 2, "{second}");
        assert_eq!(
            joined(&app, sale, users[1]).await,
            tickets[1],
            "joining again: the same ticket"
        );
        let expired = format!("seckill_queue_expired_total{{sale=\"{sale}\"}}");
        let swept = app.wait_metric(&expired, Duration::from_secs(10), |n| n >= 1.0).await;
        assert_eq!(swept, Some(1.0), "the stale ticket is swept");
        assert_eq!(poll(&app, sale, tickets[2], users[2]).await["state"], "expired");
        let newcomer = joined(&app, sale, "new").await;
        assert_eq!(poll(&app, sale, &newcomer, "new").await["place"], 4);
        let left: i64 = services.redis(redis::cmd("HLEN").arg(key("tickets"))).await;
        assert_eq!(left, 0, "every older record moved into its buyer's");
    }

    /// Once the sale sells out, every key of its queue is set to expire (a ticket time to live
    /// later), so finished sales leave nothing behind in Redis.
    #[tokio::test]
    async fn a_sold_out_sales_queue_keys_get_an_expiry() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 1, 100, "fifo", 30, None).await;
        let ticket = joined(&app, sale, "only").await;
        let token = admitted(&app, sale, &ticket, "only", Duration::from_secs(20)).await;
        let base = format!("{}:{{s{sale}}}:q", services.redis_prefix);
        let pttl = |key: &str| {
            let out = std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "PTTL", &format!("{base}:{key}")])
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<i64>()
                .expect("PTTL")
        };
        // -1: the key exists with no expiry; -2: it does not exist.
        assert_eq!(pttl("meta"), -1, "a live sale's queue does not expire");
        let (status, body) = buy(&app, sale, "only", Some(&token)).await;
        assert_eq!(status, 201, "{body}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while pttl("meta") == -1 {
            assert!(Instant::now() < deadline, "no expiry set on the sold-out sale's queue");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for key in ["meta", "users", "seen", "joined"] {
            let ms = pttl(key);
            assert!(ms > 0 && ms <= 30_000, "{key}: PTTL {ms}");
        }
    }

    /// Many buyers join one sale's queue at once on one instance, each twice at the same time,
    /// then poll their tickets at once, with strangers and other buyers polling tickets not
    /// theirs: each buyer gets one ticket and one place of their own (places 1..=N, none skipped
    /// or given twice), both joins the same; each poll answers its own ticket; and `/metrics`
    /// shows more than one request per queue script call (one per call, as without grouping,
    /// fails the test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_joins_and_polls_answer_each_buyer_as_if_alone() {
        let services = Services::start().await;
        let app = Arc::new(TestServer::spawn_with(shared(&services)).await);
        let sale = room_sale(&app, 100, 1, "fifo", 60, None).await;
        let calls = r#"seckill_redis_calls_total{script="queue"}"#;
        let items = r#"seckill_redis_call_items_total{script="queue"}"#;
        let (calls_before, items_before) = (
            app.metric(calls).await.expect("queue calls exported"),
            app.metric(items).await.expect("queue items exported"),
        );

        let buyers = 300;
        let joins = join_all((0..buyers).flat_map(|i| [i, i]).map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let user = format!("crowd-{i}");
                let (status, body) = join(&app, sale, &user).await;
                (user, status, body)
            })
        }))
        .await;
        let mut held: HashMap<String, (String, u64)> = HashMap::new();
        for answer in joins {
            let (user, status, body) = answer.expect("joiner task");
            assert_eq!(status, 200, "{user}: {body}");
            let ticket = body["ticket"].as_str().expect("ticket").to_owned();
            let place = body["place"].as_u64().expect("a place in a started queue");
            if let Some(first) = held.insert(user.clone(), (ticket.clone(), place)) {
                assert_eq!(first, (ticket, place), "{user} joined twice: two tickets or places");
            }
        }
        assert_eq!(held.len(), buyers);
        let tickets: HashSet<&String> = held.values().map(|(ticket, _)| ticket).collect();
        assert_eq!(tickets.len(), buyers, "a ticket each");
        let mut places: Vec<u64> = held.values().map(|&(_, place)| place).collect();
        places.sort_unstable();
        assert_eq!(
            places,
            (1..=buyers as u64).collect::<Vec<_>>(),
            "a place each, none skipped"
        );

        // Each buyer polls their own ticket and, at the same time, a stranger polls it, and so
        // does another buyer, who holds a ticket of their own.
        let crowd: Vec<&String> = held.keys().collect();
        let polls = join_all(
            held.iter()
                .enumerate()
                .flat_map(|(i, (user, (ticket, place)))| {
                    [
                        (user.clone(), ticket.clone(), Some(*place)),
                        (format!("stranger-{user}"), ticket.clone(), None),
                        (crowd[(i + 1) % crowd.len()].clone(), ticket.clone(), None),
                    ]
                })
                .map(|(user, ticket, place)| {
                    let app = Arc::clone(&app);
                    tokio::spawn(async move {
                        let path = format!("/api/sales/{sale}/queue/{ticket}");
                        let (status, _, body) = get_with(&app, &path, &[("x-user-id", &user)]).await;
                        (ticket, place, status, body)
                    })
                }),
        )
        .await;
        for answer in polls {
            let (ticket, place, status, body) = answer.expect("poller task");
            match place {
                Some(place) => {
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["ticket"], ticket.as_str(), "{body}");
                    assert_eq!(body["place"].as_u64(), Some(place), "{body}");
                    assert!(body["state"] == "waiting" || body["state"] == "admitted", "{body}");
                }
                None => assert_error(status, &body, 404, "ticket_not_found"),
            }
        }
        for (user, (ticket, place)) in held.iter().take(5) {
            let (status, body) = join(&app, sale, user).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                (body["ticket"].as_str(), body["place"].as_u64()),
                (Some(ticket.as_str()), Some(*place))
            );
        }

        let calls = app.metric(calls).await.expect("queue calls") - calls_before;
        let items = app.metric(items).await.expect("queue items") - items_before;
        assert!(items >= (4 * buyers) as f64, "{items} joins and polls counted");
        assert!(
            items / calls > 1.0,
            "{items} joins and polls went to Redis in {calls} script calls: not grouped"
        );
    }

    /// An instance answers most polls from what Redis said of the ticket a moment ago, and
    /// those polls still keep the ticket alive: a ticket polled every 200 ms on one instance
    /// for twice its time to live (5 s) never expires, while Redis hears of it about once per
    /// third of the time to live (every poll going to Redis fails the test). The 20 tickets
    /// ahead of it, never polled, expire after 5 s, and their slots reach the polls answered
    /// locally: it is admitted well before the rate alone (one a second) would admit it (20 s).
    #[tokio::test]
    async fn polls_answered_without_redis_keep_the_ticket_alive() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 100, 1, "fifo", 5, None).await;
        for i in 0..20 {
            joined(&app, sale, &format!("ahead{i}")).await;
        }
        let ticket = joined(&app, sale, "steady").await;
        let calls = r#"seckill_redis_call_items_total{script="queue"}"#;
        let before = app.metric(calls).await.expect("queue items exported");
        let started = Instant::now();
        let (mut polls, mut admitted_after) = (0, None);
        // Ten seconds at least, and on to fifteen while not admitted.
        while started.elapsed() < Duration::from_secs(if admitted_after.is_some() { 10 } else { 15 }) {
            let answer = poll(&app, sale, &ticket, "steady").await;
            polls += 1;
            match answer["state"].as_str() {
                Some("waiting") => {}
                Some("admitted") => {
                    admitted_after.get_or_insert(started.elapsed());
                }
                _ => panic!("a ticket polled every 200 ms left the queue: {answer}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let asked = app.metric(calls).await.expect("queue items") - before;
        assert!(polls >= 30, "{polls} polls");
        assert!(
            asked <= f64::from(polls) / 3.0,
            "{asked} of {polls} polls went to Redis"
        );
        let admitted_after = admitted_after.expect("admitted once the tickets ahead expired");
        assert!(
            admitted_after < Duration::from_secs(14),
            "admitted after {admitted_after:?}: the expired slots did not reach the local answers"
        );

        // Back-to-back polls share one read of the units left per 50 ms.
        let reads = r#"seckill_redis_calls_total{script="remaining"}"#;
        let before = app.metric(reads).await.expect("remaining reads exported");
        let started = Instant::now();
        for _ in 0..100 {
            assert_eq!(poll(&app, sale, &ticket, "steady").await["state"], "admitted");
        }
        let read = app.metric(reads).await.expect("remaining reads") - before;
        let most = 3.0 + started.elapsed().as_millis() as f64 / 50.0;
        assert!(
            read <= most,
            "{read} reads of the units left for 100 polls (at most {most})"
        );
    }

    /// The queue is in Redis: a restarted instance answers for the tickets taken before.
    #[tokio::test]
    async fn a_distributed_restart_keeps_the_queue() {
        let services = Services::start().await;
        let app = TestServer::spawn_with(shared(&services)).await;
        let sale = room_sale(&app, 5, 1, "fifo", 30, None).await;
        let ticket = joined(&app, sale, "alice").await;
        let app = app.restart(shared(&services)).await;
        assert_eq!(joined(&app, sale, "alice").await, ticket);
        let token = admitted(&app, sale, &ticket, "alice", Duration::from_secs(20)).await;
        let (status, body) = buy(&app, sale, "alice", Some(&token)).await;
        assert_eq!(status, 201, "{body}");
    }
}
