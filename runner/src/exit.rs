//! The exit codes of the worker contract and their one order, and the one-line text of an
//! error; imports nothing of the crate.
//!
//! The codes are the contract between worker, local pod runner and the Job's
//! podFailurePolicy (which `kube::render` generates from [`ExitCode::retryable`]). Every
//! error type says its own code beside its definition; only the CLI turns an error that
//! reached it into a process exit status.

use std::cmp::Ordering;
use std::fmt;

/// The worker exit codes of the contract between worker, local runner and podFailurePolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// 0: everything done.
    Done,
    /// 1: a transient failure; a retry can help.
    Transient,
    /// 2: bad configuration or usage; a retry fails again.
    Config,
    /// 3: a validation check failed; a retry fails again.
    Validation,
    /// 4: bad source data beyond the allowed threshold; a retry fails again.
    BadData,
}

impl ExitCode {
    /// Every code, in numeric order.
    pub const ALL: [ExitCode; 5] = [
        ExitCode::Done,
        ExitCode::Transient,
        ExitCode::Config,
        ExitCode::Validation,
        ExitCode::BadData,
    ];

    pub fn code(self) -> i32 {
        match self {
            ExitCode::Done => 0,
            ExitCode::Transient => 1,
            ExitCode::Config => 2,
            ExitCode::Validation => 3,
            ExitCode::BadData => 4,
        }
    }

    pub fn from_code(code: i32) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether a retry of the same work can succeed (only transient failures).
    pub fn retryable(self) -> bool {
        matches!(self, ExitCode::Transient)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ExitCode::Done => "done",
            ExitCode::Transient => "transient failure, retried",
            ExitCode::Config => "configuration or usage error",
            ExitCode::Validation => "validation failed",
            ExitCode::BadData => "bad source data beyond the allowed threshold",
        }
    }

    /// The one order of the codes, used wherever several failures make one exit code (the
    /// objects of a shard, the shards of a run, the runs of `scheduler --once`): a failure
    /// that a retry cannot fix outranks a transient one, so an index is not retried in
    /// vain; among those, a configuration error (which fails everything) outranks a failed
    /// validation, which outranks bad source data.
    ///
    /// `0 done < 1 transient < 4 bad data < 3 validation < 2 configuration`
    pub fn severity(self) -> u8 {
        match self {
            ExitCode::Done => 0,
            ExitCode::Transient => 1,
            ExitCode::BadData => 2,
            ExitCode::Validation => 3,
            ExitCode::Config => 4,
        }
    }

    /// The more severe of two codes (see [`ExitCode::severity`]).
    pub fn worse(self, other: ExitCode) -> ExitCode {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl PartialOrd for ExitCode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Codes compare by [`ExitCode::severity`], so `max()` of several is the one to report.
impl Ord for ExitCode {
    fn cmp(&self, other: &Self) -> Ordering {
        self.severity().cmp(&other.severity())
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.describe())
    }
}

/// An exit code of a run with sluice's meaning of it, where it has one (`3 (validation
/// failed)`); a task's own code as it is.
pub fn describe_exit(exit: i32) -> String {
    match ExitCode::from_code(exit) {
        Some(code) => code.to_string(),
        None => exit.to_string(),
    }
}

/// The exit status for several runs (0 when every run succeeded): the most severe of
/// sluice's codes, in the order of [`ExitCode::severity`]; a code that is not sluice's (a
/// task container's own, such as 5 or 137) outranks all of sluice's, the highest of those
/// winning, because it is the only word of what the user's container said.
pub fn worst_exit(exits: impl IntoIterator<Item = i32>) -> u8 {
    let rank = |exit: i32| match ExitCode::from_code(exit) {
        Some(code) => (0, i64::from(code.severity())),
        None => (1, i64::from(exit)),
    };
    let worst = exits.into_iter().max_by_key(|e| rank(*e)).unwrap_or(0);
    u8::try_from(worst).unwrap_or(1)
}

/// An error and its causes on one line (`writing s3://b/k: connection reset`), as logs,
/// reports and transformer replies show it.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_order_for_every_combination() {
        use ExitCode::*;
        assert_eq!(Transient.worse(BadData), BadData);
        assert_eq!(BadData.worse(Validation), Validation);
        assert_eq!(Config.worse(Validation), Config);
        assert_eq!(Done.worse(Transient), Transient);
        assert_eq!([Transient, Config, BadData].into_iter().max(), Some(Config));
        assert_eq!(worst_exit([1, 4, 3]), 3);
        assert_eq!(worst_exit([2, 3, 1]), 2);
        assert_eq!(worst_exit([0, 0]), 0);
        assert_eq!(worst_exit([]), 0);
        // A task container's own code outranks sluice's codes.
        assert_eq!(worst_exit([2, 5]), 5);
        assert_eq!(worst_exit([137, 5]), 137);
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let retryable: Vec<i32> = ExitCode::ALL
            .into_iter()
            .filter(|c| c.retryable())
            .map(ExitCode::code)
            .collect();
        assert_eq!(retryable, vec![1]);
        assert_eq!(describe_exit(3), "3 (validation failed)");
        assert_eq!(describe_exit(5), "5");
    }
}
