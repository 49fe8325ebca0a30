//! `seckill audit`: the auditor against a running deployment. For every sale it compares the
//! gate with the store (remaining + stored + open reservations == stock, no duplicate) and
//! prints a verdict; an inconsistent sale is a non-zero exit.

use std::time::{Duration, Instant};

use clap::Args;
use seckill_api::Audit;

use crate::client::{ClientError, Target};
use crate::seconds;

#[derive(Debug, Clone, Args)]
pub struct AuditConfig {
    /// Base URL of any engine instance.
    #[arg(long, env = "SECKILL_AUDIT_URL", default_value = "http://127.0.0.1:3030")]
    pub url: String,
    /// The engine's admin token: the audit is an admin route.
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
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
    let target = Target::new(&config.url, 4).with_admin_token(config.admin_token.as_deref());
    let ids: Vec<i64> = match config.sale {
        Some(id) => vec![id],
        None => target.sales().await?.sales.iter().map(|sale| sale.id).collect(),
    };
    // `None`: a wait too long to count, so no deadline.
    let deadline = Instant::now().checked_add(seconds(config.wait));
    let mut all_consistent = true;
    for id in ids {
        let audit = settled(&target, id, deadline).await?;
        all_consistent &= audit.consistent;
        println!("{}", verdict(&audit));
    }
    Ok(all_consistent)
}

/// The sale's audit once it is consistent, or as it is at the deadline.
async fn settled(target: &Target, sale: i64, deadline: Option<Instant>) -> Result<Audit, ClientError> {
    loop {
        let audit = target.audit(sale).await?;
        if audit.consistent || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(audit);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sale's line: its figures and the verdict.
fn verdict(audit: &Audit) -> String {
    format!(
        "sale {}: stock {} remaining {} sold {} stored {} open {} duplicates {} → {}",
        audit.sale_id,
        audit.stock,
        audit.remaining,
        audit.sold,
        audit.stored,
        audit.open_reservations,
        audit.duplicates,
        if audit.consistent { "consistent" } else { "INCONSISTENT" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_line_shows_the_figures_and_the_judgement() {
        let mut audit = Audit {
            sale_id: 1,
            stock: 10,
            remaining: 9,
            sold: 1,
            stored: 1,
            open_reservations: 0,
            duplicates: 0,
            conflicts: 0,
            over_limit: 0,
            awaiting_payment: 0,
            paid: 0,
            expired: 0,
            cancelled: 0,
            late_payments: 0,
            consistent: true,
        };
        assert_eq!(
            verdict(&audit),
            "sale 1: stock 10 remaining 9 sold 1 stored 1 open 0 duplicates 0 → consistent"
        );
        audit.stored = 2;
        audit.consistent = false;
        assert!(verdict(&audit).ends_with("stored 2 open 0 duplicates 0 → INCONSISTENT"));
    }
}
