//! Why a delivery failed and whose fault it is: the plugin, the host, the configuration or the remote service.

use std::fmt;
use std::time::Duration;

/// Who must act for the failure to go away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The plugin misbehaved (trap, CPU deadline, memory cap, wall timeout): its author must fix it.
    Plugin,
    /// Belfry itself failed (could not instantiate, internal error).
    Host,
    /// The receiver's configuration is wrong (bad credentials, a host not allow-listed): the operator must fix it.
    Configuration,
    /// The outside service refused or failed.
    Remote,
}

impl Blame {
    /// A stable lowercase name for logs, metrics and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Plugin => "plugin",
            Blame::Host => "host",
            Blame::Configuration => "configuration",
            Blame::Remote => "remote",
        }
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin says: try again later, after `retry_after` if the service gave one.
    Retryable { retry_after: Option<Duration> },
    /// The plugin says: retrying unchanged will fail again.
    Permanent,
    /// The plugin says: the receiver's configuration is wrong.
    Misconfigured,
    /// The guest ran longer than its CPU budget.
    CpuDeadline,
    /// The guest tried to grow memory past its cap.
    MemoryLimit,
    /// The guest trapped (panic, unreachable, out-of-bounds access...).
    Trap,
    /// The whole call exceeded its wall-clock bound.
    Timeout,
    /// The host could not run the plugin at all.
    Unavailable,
}

impl FailureKind {
    /// A stable lowercase name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Retryable { .. } => "retryable",
            FailureKind::Permanent => "permanent",
            FailureKind::Misconfigured => "misconfigured",
            FailureKind::CpuDeadline => "cpu_deadline",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Unavailable => "unavailable",
        }
    }
}

/// A failed delivery: what, whose fault, and a message with every secret masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// Who must act.
    pub blame: Blame,
    /// What went wrong.
    pub kind: FailureKind,
    /// Details for the operator; secrets masked.
    pub message: String,
}

impl DeliveryFailure {
    /// Whether the dispatcher should try again (a misbehaving plugin may be transient too,
    /// e.g. a deadline hit under load, so those retry; a broken configuration does not).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, FailureKind::Retryable { .. } | FailureKind::CpuDeadline | FailureKind::Timeout | FailureKind::Unavailable)
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} at fault): {}", self.kind.as_str(), self.blame.as_str(), self.message)
    }
}

impl std::error::Error for DeliveryFailure {}
