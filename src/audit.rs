//! `seckill audit`: the auditor against a running deployment. For every sale it compares the
//! gate with the store (remaining + stored + open reservations == stock, no duplicate) and prints
//! a verdict; an inconsistent sale is a non-zero exit.

use std::time::{Duration, Instant};

use clap::Args;

use crate::bench::Target;

#[derive(Debug, Clone, Args)]
pub struct AuditConfig {
    /// Base URL of any engine instance.
    #[arg(long, env = "SECKILL_AUDIT_URL", default_value = "http://127.0.0.1:3030")]
    pub url: String,
    /// Audit only this sale.
    #[arg(long)]
    pub sale: Option<i64>,
    /// Distributed mode stores orders shortly after confirming them: wait up to this many
    /// seconds for the store to catch up before judging.
    #[arg(long, default_value_t = 0.0)]
    pub wait: f64,
}

/// Prints a verdict per sale; `Ok(false)` when any sale is inconsistent.
pub async fn run(config: AuditConfig) -> anyhow::Result<bool> {
    let target = Target::new(&config.url, 4);
    let ids: Vec<i64> = match config.sale {
        Some(id) => vec![id],
        None => target.json("/api/sales").await?["sales"]
            .as_array()
            .map(|all| all.iter().filter_map(|s| s["id"].as_i64()).collect())
            .unwrap_or_default(),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(config.wait);
    let mut all_consistent = true;
    for id in ids {
        let audit = loop {
            let audit = target.json(&format!("/api/sales/{id}/audit")).await?;
            if audit["consistent"] == true || Instant::now() >= deadline {
                break audit;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let consistent = audit["consistent"] == true;
        all_consistent &= consistent;
        println!(
            "sale {id}: stock {} remaining {} sold {} stored {} open {} duplicates {} → {}",
            audit["stock"],
            audit["remaining"],
            audit["sold"],
            audit["stored"],
            audit["open_reservations"],
            audit["duplicates"],
            if consistent { "consistent" } else { "INCONSISTENT" }
        );
    }
    Ok(all_consistent)
}
