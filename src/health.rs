//! Readiness checks: what `/readyz` asks each backend.

use crate::error::ApiError;

/// One dependency's answer.
pub struct Check {
    pub name: &'static str,
    /// A required dependency that fails makes the instance not ready (503): it cannot sell.
    /// An optional one only makes it `degraded` (it can sell; something else waits).
    pub required: bool,
    pub result: Result<(), ApiError>,
}

impl Check {
    pub fn required(name: &'static str, result: Result<(), ApiError>) -> Self {
        Check {
            name,
            required: true,
            result,
        }
    }

    pub fn optional(name: &'static str, result: Result<(), ApiError>) -> Self {
        Check {
            name,
            required: false,
            result,
        }
    }
}
