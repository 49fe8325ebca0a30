//! What the backends (stock gate, order store, order log) share: their error, the answer each
//! gives `/readyz`, and how their group tasks gather a group (`next_group`).
//!
//! A backend error says what happened in terms the engine acts on (retry later, do not undo,
//! shed, a fault of ours) and keeps its cause as `source`, for the log. It never says anything
//! about HTTP: the HTTP layer maps it to a status once, at the edge.

use std::fmt;

/// A cause of any kind, kept for the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The backend roles of the engine; an unavailable one is named by its role, never by its
/// internals (a buyer's 503 says "the order log is unavailable", the log says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Decides who gets a unit (in process, or Redis).
    Gate,
    /// Keeps orders and the sale catalogue (SQLite, or MySQL).
    Store,
    /// The durable hand-off of orders in the distributed mode (Kafka).
    Log,
    /// The sales' queues (in process, or Redis).
    WaitingRoom,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Gate => "stock gate",
            Role::Store => "order store",
            Role::Log => "order log",
            Role::WaitingRoom => "waiting room",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend did not do it (refused, unreachable, no answer before anything was sent):
    /// nothing changed, the caller may undo what it did and retry later.
    #[error("the {role} is unavailable")]
    Unavailable {
        role: Role,
        #[source]
        cause: Cause,
    },
    /// The backend may have done it (a timeout after the request left): the caller must not
    /// undo it; the reconciler settles it.
    #[error("the {role} did not confirm in time; the outcome is unknown")]
    OutcomeUnknown {
        role: Role,
        #[source]
        cause: Cause,
    },
    /// Too much is queued: shed load now rather than queue without bound.
    #[error("the {role} is overloaded")]
    Overloaded { role: Role },
    /// The backend's disk is full: nothing was written; it recovers when space is freed.
    #[error("the {role} is out of disk space")]
    Full {
        role: Role,
        #[source]
        cause: Cause,
    },
    /// A fault of ours (a broken invariant, data we cannot read): never the caller's to fix.
    #[error("{role} fault")]
    Fault {
        role: Role,
        #[source]
        cause: Cause,
    },
}

impl BackendError {
    pub fn unavailable(role: Role, cause: impl Into<Cause>) -> Self {
        BackendError::Unavailable {
            role,
            cause: cause.into(),
        }
    }

    pub fn outcome_unknown(role: Role, cause: impl Into<Cause>) -> Self {
        BackendError::OutcomeUnknown {
            role,
            cause: cause.into(),
        }
    }

    pub fn full(role: Role, cause: impl Into<Cause>) -> Self {
        BackendError::Full {
            role,
            cause: cause.into(),
        }
    }

    pub fn fault(role: Role, cause: impl Into<Cause>) -> Self {
        BackendError::Fault {
            role,
            cause: cause.into(),
        }
    }

    pub fn role(&self) -> Role {
        match self {
            BackendError::Unavailable { role, .. }
            | BackendError::OutcomeUnknown { role, .. }
            | BackendError::Overloaded { role }
            | BackendError::Full { role, .. }
            | BackendError::Fault { role, .. } => *role,
        }
    }

    /// The whole cause chain on one line, for logs and `/readyz`'s detail.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// One dependency's answer to `/readyz`.
pub struct Check {
    pub name: &'static str,
    /// A required dependency that fails makes the instance not ready (503): it cannot sell.
    /// An optional one only makes it `degraded` (it can sell; something else waits).
    pub required: bool,
    pub result: Result<(), BackendError>,
}

impl Check {
    pub fn required(name: &'static str, result: Result<(), BackendError>) -> Self {
        Check {
            name,
            required: true,
            result,
        }
    }

    pub fn optional(name: &'static str, result: Result<(), BackendError>) -> Self {
        Check {
            name,
            required: false,
            result,
        }
    }
}

/// Waits for a group task's next group: the first ask, then whatever other tasks ask within one
/// scheduler turn, up to `max` in `group`. The turn matters because tokio runs a task just woken
/// before the others already runnable: without it, the first ask of a burst (the buyers one
/// answer woke, say) would go alone. No timer: an idle task's ask goes out at once. Returns the
/// group's size, 0 once every sender is gone.
#[cfg(feature = "distributed")]
pub(crate) async fn next_group<T>(
    asks: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    group: &mut Vec<T>,
    max: usize,
) -> usize {
    if asks.recv_many(group, max).await == 0 {
        return 0;
    }
    tokio::task::yield_now().await;
    while group.len() < max {
        match asks.try_recv() {
            Ok(more) => group.push(more),
            Err(_) => break,
        }
    }
    group.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_role_and_the_chain_keeps_the_cause() {
        let e = BackendError::unavailable(Role::Log, "broker 127.0.0.1:9092: connection refused");
        assert_eq!(e.to_string(), "the order log is unavailable");
        assert_eq!(
            e.chain(),
            "the order log is unavailable: broker 127.0.0.1:9092: connection refused"
        );
        assert_eq!(e.role(), Role::Log);
    }

    #[cfg(feature = "distributed")]
    #[tokio::test]
    async fn a_group_takes_in_what_is_asked_within_one_turn_of_its_first_ask() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(1).expect("open");
        // Runnable, not yet run: it asks during the group task's turn.
        let later = tx.clone();
        tokio::spawn(async move { later.send(2).expect("open") });
        let mut group = Vec::new();
        assert_eq!(next_group(&mut rx, &mut group, 10).await, 2);
        assert_eq!(group, [1, 2]);

        // Never more than `max`; the rest is the next group.
        group.clear();
        for i in 0..5 {
            tx.send(i).expect("open");
        }
        assert_eq!(next_group(&mut rx, &mut group, 3).await, 3);
        group.clear();
        assert_eq!(next_group(&mut rx, &mut group, 3).await, 2);

        group.clear();
        drop(tx);
        assert_eq!(next_group(&mut rx, &mut group, 3).await, 0);
    }
}
