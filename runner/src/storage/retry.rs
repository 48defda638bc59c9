//! Bounded retries of sluice's own around the SDK's, for the small requests that keep a run's
//! books (state documents, listings, aborts): a fault that outlasts the SDK's attempts is
//! tried again after a pause instead of failing a plan, a publish or a resume. Throttling
//! that outlasts them pauses every such request of the client, not only the throttled one.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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

/// A pause shared by the clones of one client: once S3 throttles a request beyond the SDK's
/// attempts, the client's bookkeeping requests all wait it out before they are sent, so the
/// client slows down as a whole (the SDK's adaptive mode slows each request's attempts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Throttle(Arc<Mutex<Option<Instant>>>);

impl Throttle {
    async fn wait(&self) {
        let until = *self.0.lock().expect("not poisoned");
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    fn slow_down(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut current = self.0.lock().expect("not poisoned");
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or has failed transiently `ROUNDS + 1` times.
pub(crate) async fn retrying<T, F, Fut>(
    what: &str,
    throttle: &Throttle,
    op: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    retrying_with(what, throttle, backoff, op).await
}

async fn retrying_with<T, F, Fut>(
    what: &str,
    throttle: &Throttle,
    pause_before: fn(u32) -> Duration,
    mut op: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut round = 0;
    loop {
        throttle.wait().await;
        match op().await {
            Err(error) if error.is_transient() && round < ROUNDS => {
                round += 1;
                let pause = pause_before(round);
                if error.failure().is_some_and(|f| f.is_throttling()) {
                    throttle.slow_down(pause);
                }
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

    /// Runs a request that always fails (transiently or not) without waiting; returns how
    /// many times it was sent.
    async fn attempts_of_a_failing_request(transient: bool) -> u32 {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retrying_with(
            "reading",
            &Throttle::default(),
            |_| Duration::ZERO,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failure(transient))
            },
        )
        .await;
        assert!(result.is_err());
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        assert_eq!(attempts_of_a_failing_request(true).await, ROUNDS + 1);

        let calls = AtomicU32::new(0);
        let result = retrying_with(
            "reading",
            &Throttle::default(),
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
    async fn throttling_pauses_every_request_of_the_client() {
        let throttle = Throttle::default();
        let calls = AtomicU32::new(0);
        let throttled = retrying_with(
            "reading",
            &throttle,
            |_| Duration::from_millis(300),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(failure(true)),
                    n => Ok(n),
                }
            },
        );
        let other = async {
            // Sent while the first request waits out its throttling.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            retrying_with(
                "writing",
                &throttle,
                |_| Duration::ZERO,
                || async { Ok::<_, StorageError>(()) },
            )
            .await
            .unwrap();
            started.elapsed()
        };
        let (result, waited) = tokio::join!(throttled, other);
        assert_eq!(result.unwrap(), 1);
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        assert_eq!(attempts_of_a_failing_request(false).await, 1);
    }
}
