//! What the join's proof of work costs (`--altcha-difficulty`): the server's issue and check
//! per join, and a script's solve per try (one SHA-256 with the `altcha` crate, the fastest a
//! script short of a GPU gets), from which difficulty N costs 16^N tries on average.
//!
//! `cargo run --release --example altcha`

use std::time::Instant;

use altcha::{Payload, SolveChallengeOptions};
use base64::Engine as _;
use seckill::domain::{now_millis, SaleId, UserId};
use seckill::http::challenge::Challenges;

fn main() -> anyhow::Result<()> {
    let difficulty = 5;
    let challenges = Challenges::new(b"bench-key", difficulty);
    let user = UserId::parse("bench-buyer").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (mut tries, mut solving) = (0u64, 0f64);
    let mut payloads = Vec::new();
    for _ in 0..8 {
        let challenge = challenges
            .issue(SaleId(1), &user, now_millis())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        let solution = altcha::solve_challenge(SolveChallengeOptions::new(&challenge))?
            .ok_or_else(|| anyhow::anyhow!("not solved in time"))?;
        solving += started.elapsed().as_secs_f64();
        tries += u64::from(solution.counter) + 1;
        let json = serde_json::to_vec(&Payload { challenge, solution })?;
        payloads.push(base64::engine::general_purpose::STANDARD.encode(json));
    }
    let per_try_us = solving * 1e6 / tries as f64;
    let started = Instant::now();
    let issued = 20_000;
    for _ in 0..issued {
        challenges
            .issue(SaleId(1), &user, now_millis())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let issue_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(issued);
    let started = Instant::now();
    let rounds = 2_500;
    for _ in 0..rounds {
        for payload in &payloads {
            challenges
                .check(Some(payload), SaleId(1), &user)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let check_us = started.elapsed().as_secs_f64() * 1e6 / (rounds * payloads.len()) as f64;
    println!("server: issue {issue_us:.1} µs, check {check_us:.1} µs per join");
    println!("script: {per_try_us:.2} µs per try ({tries} tries over 8 difficulty-{difficulty} solves)");
    for n in 3..=6 {
        println!(
            "  difficulty {n}: 16^{n} = {} tries on average, {:.2} s for a script on one core",
            16u64.pow(n),
            16f64.powi(n as i32) * per_try_us / 1e6
        );
    }
    Ok(())
}
