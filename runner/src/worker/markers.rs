//! Committing finished objects: their done markers are written in batches by one task, a
//! group commit. A batch is written [`LINGER`] after its first marker arrived (or once it
//! is full), and the objects that finish meanwhile, or while it is being written, join it
//! or the next one. An object counts as done only once the batch holding its marker is
//! stored, so resume is exactly as safe as with a PUT per object: a worker killed before a
//! batch is stored does its objects again. Many small objects cost a PUT per batch; a
//! large object waits [`LINGER`] for its own, which is nothing beside its processing.
//! Waiting for a commit holds no share of the worker's memory budget.

use tokio::sync::{mpsc, oneshot};

use crate::exit::{ExitCode, error_chain};
use crate::state::RunLayout;
use crate::state::marker::{DoneMarker, MarkerBatch, write_batch};
use crate::storage::Storage;

/// Markers in one batch, at most (a marker is one to a few KiB of JSON).
const MAX_BATCH: usize = 256;
/// How long a batch waits for more markers after its first.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// Why a marker was not stored: the exit code and the error.
pub type CommitError = (ExitCode, String);

type Ack = oneshot::Sender<Result<DoneMarker, CommitError>>;

/// The task writing one shard attempt's done markers.
pub struct MarkerWriter {
    queue: mpsc::UnboundedSender<(DoneMarker, Ack)>,
    task: tokio::task::JoinHandle<()>,
}

impl MarkerWriter {
    /// Starts the writer of shard `shard`; `attempt` names this attempt's batches apart
    /// from an earlier attempt's.
    pub fn spawn(storage: Storage, layout: RunLayout, shard: u32, attempt: String) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<(DoneMarker, Ack)>();
        let task = tokio::spawn(async move {
            let mut sequence = 0u64;
            while let Some(first) = pending.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, pending.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        // Closed (the shard is ending) or time is up.
                        Ok(None) | Err(_) => break,
                    }
                }
                let (markers, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let markers = MarkerBatch { markers };
                let name = format!("{attempt}-{sequence:06}");
                sequence += 1;
                let written = write_batch(&storage, &layout, shard, &name, &markers).await;
                let written = written.map_err(|e| (e.exit_code(), error_chain(&e)));
                for (marker, ack) in markers.markers.into_iter().zip(acks) {
                    // The object may have stopped waiting (its shard is ending): nothing to tell.
                    let _ = ack.send(written.clone().map(|()| marker));
                }
            }
        });
        MarkerWriter { queue, task }
    }

    /// Stores `marker` with the next batch and returns it once it is stored.
    pub async fn commit(&self, marker: DoneMarker) -> Result<DoneMarker, CommitError> {
        let (ack, stored) = oneshot::channel();
        let stopped = || {
            (
                ExitCode::Transient,
                "the done-marker writer stopped".to_string(),
            )
        };
        self.queue.send((marker, ack)).map_err(|_| stopped())?;
        stored.await.map_err(|_| stopped())?
    }

    /// Waits for the batches queued so far to be written.
    pub async fn close(self) {
        drop(self.queue);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::marker::{RecordCounts, read_marker_map};
    use crate::storage::uri::S3Uri;

    fn marker(key: &str, seconds_after: i64) -> DoneMarker {
        DoneMarker {
            key: key.to_string(),
            etag: "\"e\"".into(),
            range: None,
            fingerprint: "f".into(),
            size: 1,
            outputs: Vec::new(),
            rejects: None,
            records: RecordCounts::default(),
            checks: Vec::new(),
            steps: Vec::new(),
            seconds: 0.0,
            phases: Default::default(),
            finished: chrono::DateTime::from_timestamp(1_800_000_000 + seconds_after, 0)
                .expect("a valid time"),
        }
    }

    #[tokio::test]
    async fn markers_committed_together_share_batches_and_the_newest_of_a_task_counts() {
        let dir = tempfile::tempdir().unwrap();
        use crate::storage::embedded::{EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, EmbeddedServer};
        let server = EmbeddedServer::start(dir.path(), None).await.unwrap();
        let storage =
            Storage::with_endpoint(server.url(), EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY).await;
        storage.create_bucket("state").await.unwrap();
        let root: S3Uri = "s3://state/_sluice/".parse().unwrap();
        let layout = RunLayout::new(&root, "j", "r");

        let writer = MarkerWriter::spawn(storage.clone(), layout.clone(), 2, "a".into());
        let commits = (0..300).map(|i| writer.commit(marker(&format!("k{i}"), 0)));
        let stored = futures::future::join_all(commits).await;
        assert!(stored.iter().all(|s| s.is_ok()));
        writer.close().await;
        // A later attempt redoes k7.
        let writer = MarkerWriter::spawn(storage.clone(), layout.clone(), 2, "b".into());
        let redone = writer.commit(marker("k7", 60)).await.unwrap();
        writer.close().await;

        let batches = storage.list(&layout.shard_done_prefix(2)).await.unwrap();
        // 300 at once fill two batches, the third is the later attempt's.
        assert_eq!(batches.len(), 3, "{batches:?}");
        let markers = read_marker_map(&storage, &layout.done_prefix())
            .await
            .unwrap();
        assert_eq!(markers.len(), 300);
        assert_eq!(markers["k7"], redone);
        assert_eq!(markers["k299"].finished, marker("k299", 0).finished);
    }
}
