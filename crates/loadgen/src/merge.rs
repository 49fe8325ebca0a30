//! Merging the workers' results into the run's: counts, latency, units per buyer, samples.

use std::collections::HashMap;

use hdrhistogram::Histogram;

use crate::fire::{latency_histogram, Sample, WorkerResult};
use crate::report::Counts;

/// The whole run, as if one worker had sent every request.
pub(crate) struct Merged {
    pub counts: Counts,
    /// Latency of each request, in microseconds.
    pub latency: Histogram<u64>,
    /// Units bought by each named buyer (by number).
    pub per_user: HashMap<u64, u32>,
    pub samples: Vec<Sample>,
}

impl Merged {
    /// Requests sent: each has exactly one outcome.
    pub fn sent(&self) -> u64 {
        let c = &self.counts;
        c.success + c.sold_out + c.already_purchased + c.not_started_or_ended + c.overloaded + c.errors
    }
}

pub(crate) fn merge(workers: Vec<WorkerResult>) -> Result<Merged, hdrhistogram::errors::AdditionError> {
    let mut merged = Merged {
        counts: Counts::default(),
        latency: latency_histogram(),
        per_user: HashMap::new(),
        samples: Vec::new(),
    };
    for worker in workers {
        merged.counts.add(&worker.counts);
        merged.latency.add(&worker.latency)?;
        merged.samples.extend(worker.samples);
        for (buyer, units) in worker.per_user {
            *merged.per_user.entry(buyer).or_insert(0) += units;
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fire::Outcome;

    fn worker(outcomes: &[Outcome], latencies_us: &[u64], per_user: &[(u64, u32)]) -> WorkerResult {
        let mut counts = Counts::default();
        for &outcome in outcomes {
            counts.record(outcome);
        }
        let mut latency = latency_histogram();
        for &us in latencies_us {
            latency.record(us).expect("in bounds");
        }
        WorkerResult {
            counts,
            latency,
            per_user: per_user.iter().copied().collect(),
            samples: latencies_us.iter().map(|&us| (0.0, us as f32 / 1000.0)).collect(),
        }
    }

    #[test]
    fn the_workers_results_add_up() {
        let merged = merge(vec![
            worker(&[Outcome::Success, Outcome::SoldOut], &[100, 200], &[(0, 1)]),
            worker(
                &[Outcome::Success, Outcome::Success, Outcome::Error],
                &[300, 400, 50_000],
                &[(0, 1), (1, 1)],
            ),
        ])
        .expect("same bounds");
        assert_eq!(
            merged.counts,
            Counts {
                success: 3,
                sold_out: 1,
                errors: 1,
                ..Counts::default()
            }
        );
        assert_eq!(merged.sent(), 5);
        assert_eq!(merged.latency.len(), 5);
        assert_eq!(merged.latency.max(), merged.latency.highest_equivalent(50_000));
        assert_eq!(merged.per_user, HashMap::from([(0, 2), (1, 1)]));
        assert_eq!(merged.samples.len(), 5);
    }

    #[test]
    fn no_worker_is_an_empty_run() {
        let merged = merge(Vec::new()).expect("nothing to add");
        assert_eq!(merged.sent(), 0);
        assert!(merged.per_user.is_empty());
    }
}
