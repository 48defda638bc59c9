//! Bounded retries of sluice's own around the SDK's, for the small requests that keep a run's
//! books (state documents, listings, aborts): a fault that outlasts the SDK's attempts is
//! tried again after a pause instead of failing a plan, a publish or a resume.

use std::future::Future;
use std::time::Duration;

use rand::Rng as _;

use super::StorageError;

/// Rounds after the first (each round is the SDK's own attempts).
const ROUNDS: u32 = 4;

/// The pause before round `round` (1-based): 0.5 s, 1 s, 2 s, 4 s, each with up to half
/// of it again as jitter, so workers that failed together do not retry together.
fn backoff(round: u32) -> Duration {
    let base = 500u64 << (round.saturating_sub(1)).min(6);
    let jitter = rand::rng().random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

/// Runs `op` until it succeeds, fails for good, or has failed transiently `ROUNDS + 1` times.
pub(crate) async fn retrying<T, F, Fut>(what: &str, op: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    retrying_with(what, backoff, op).await
}

async fn retrying_with<T, F, Fut>(
    what: &str,
    pause_before: fn(u32) -> Duration,
    mut op: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut round = 0;
    loop {
        match op().await {
            Err(error) if error.is_transient() && round < ROUNDS => {
                round += 1;
                let pause = pause_before(round);
                tracing::warn!(
                    %error,
                    round,
                    "{what} failed after the client's own retries; trying again in {pause:?}"
                );
                tokio::time::sleep(pause).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::S3Uri;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_with_jitter() {
        for round in 1..=ROUNDS {
            let base = Duration::from_millis(500 << (round - 1));
            let pause = backoff(round);
            assert!(pause >= base && pause <= base * 3 / 2, "{round}: {pause:?}");
        }
    }

    fn failure(transient: bool) -> StorageError {
        let (status, code) = if transient {
            (503, "SlowDown")
        } else {
            (403, "AccessDenied")
        };
        StorageError::GetObject {
            uri: S3Uri::new("b", "k"),
            source: crate::storage::S3Failure {
                kind: crate::storage::FailureKind::Service,
                status: Some(status),
                code: Some(code.into()),
                message: "".into(),
            },
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retrying_with(
            "reading",
            |_| Duration::ZERO,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failure(true))
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ROUNDS + 1);

        let calls = AtomicU32::new(0);
        let result = retrying_with(
            "reading",
            |_| Duration::ZERO,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 { Err(failure(true)) } else { Ok(n) }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 2);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retrying_with(
            "reading",
            |_| Duration::ZERO,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failure(false))
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
