//! Timing an object's phases as its pipeline runs (see `state::phases`): a clock per object,
//! shared by the threads of its pipeline, and stream wrappers that time their own polls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;

use crate::state::phases::PhaseTimes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Get,
    Decode,
    Transform,
    Validate,
    Encode,
    Upload,
    ReadBack,
}

const PHASES: usize = 7;

/// Nanoseconds per phase, added to from any thread.
#[derive(Debug, Default)]
pub struct PhaseClock {
    nanos: [AtomicU64; PHASES],
}

impl PhaseClock {
    pub fn new() -> Arc<PhaseClock> {
        Arc::new(PhaseClock::default())
    }

    pub fn add(&self, phase: Phase, elapsed: Duration) {
        self.nanos[phase as usize].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Runs `f`, adding its time to `phase`.
    pub fn time<T>(&self, phase: Phase, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.add(phase, started.elapsed());
        out
    }

    fn seconds(&self, phase: Phase) -> f64 {
        self.nanos[phase as usize].load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The phases so far. Decoding's own time excludes the GET waits inside it, and the
    /// validation wrapper's excludes the steps it polls.
    pub fn times(&self) -> PhaseTimes {
        let get = self.seconds(Phase::Get);
        let transform = self.seconds(Phase::Transform);
        PhaseTimes {
            get,
            decode: (self.seconds(Phase::Decode) - get).max(0.0),
            transform,
            validate: (self.seconds(Phase::Validate) - transform).max(0.0),
            encode: (self.seconds(Phase::Encode) - self.seconds(Phase::Upload)).max(0.0),
            upload: self.seconds(Phase::Upload),
            read_back: self.seconds(Phase::ReadBack),
            commit: 0.0,
        }
    }
}

/// A stream that adds the time spent inside its polls to a phase: the work of the operators
/// it wraps (a channel it ends in returns at once when empty).
pub struct TimedPolls<S> {
    inner: S,
    clock: Arc<PhaseClock>,
    phase: Phase,
}

impl<S> TimedPolls<S> {
    pub fn new(inner: S, clock: Arc<PhaseClock>, phase: Phase) -> TimedPolls<S> {
        TimedPolls {
            inner,
            clock,
            phase,
        }
    }
}

impl<S: Stream + Unpin> Stream for TimedPolls<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let started = Instant::now();
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        self.clock.add(self.phase, started.elapsed());
        polled
    }
}

impl RecordBatchStream for TimedPolls<SendableRecordBatchStream> {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

/// Times the polls of a record batch stream (see [`TimedPolls`]).
pub fn timed_batches(
    inner: SendableRecordBatchStream,
    clock: Arc<PhaseClock>,
    phase: Phase,
) -> SendableRecordBatchStream {
    Box::pin(TimedPolls::new(inner, clock, phase))
}

/// A byte stream that adds to `Get` the time its reader waited: from a poll that found no
/// data to the poll that got it.
pub struct WaitedBytes<S> {
    inner: S,
    clock: Arc<PhaseClock>,
    waiting_since: Option<Instant>,
}

impl<S> WaitedBytes<S> {
    pub fn new(inner: S, clock: Arc<PhaseClock>) -> WaitedBytes<S> {
        WaitedBytes {
            inner,
            clock,
            waiting_since: None,
        }
    }
}

impl<S: Stream + Unpin> Stream for WaitedBytes<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if polled.is_ready() {
            self.clock.add(Phase::Get, since.elapsed());
            self.waiting_since = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn phases_inside_others_are_not_counted_twice() {
        let clock = PhaseClock::new();
        clock.add(Phase::Get, Duration::from_millis(300));
        clock.add(Phase::Decode, Duration::from_millis(1000));
        clock.add(Phase::Transform, Duration::from_millis(200));
        clock.add(Phase::Validate, Duration::from_millis(250));
        clock.add(Phase::Encode, Duration::from_millis(900));
        clock.add(Phase::Upload, Duration::from_millis(400));
        let t = clock.times();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(t.get, 0.3) && close(t.decode, 0.7), "{t:?}");
        assert!(close(t.transform, 0.2) && close(t.validate, 0.05), "{t:?}");
        assert!(close(t.encode, 0.5) && close(t.upload, 0.4), "{t:?}");
    }

    #[tokio::test]
    async fn a_waited_stream_counts_the_wait_for_each_item() {
        let clock = PhaseClock::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
        let mut stream = WaitedBytes::new(tokio_stream_of(rx), clock.clone());
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(1).await.unwrap();
        });
        assert_eq!(stream.next().await, Some(1));
        sender.await.unwrap();
        assert_eq!(stream.next().await, None);
        let waited = clock.times().get;
        assert!(waited >= 0.045, "{waited}");
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::Receiver<u8>,
    ) -> Pin<Box<dyn Stream<Item = u8> + Send>> {
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
