//! Why the daemon (or a reload, or a check) did not start: the configuration, with every problem, or anything else.

use crate::config::ConfigErrors;

/// Why the daemon did not start (or a reload was refused).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong: the operator must fix it.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Anything else (a port in use, an engine that cannot start, an unreadable store).
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}
