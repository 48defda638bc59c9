//! Run state in a test bucket, at the places `sluice::state` names, and the JSON documents
//! read back from it.

use serde_json::Value;
use sluice::state::RunLayout;
use sluice::state::ledger::Ledger;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

/// The state prefix of a job that names none: `_sluice/` in its sink's bucket.
pub fn root(bucket: &str) -> S3Uri {
    S3Uri::new(bucket, "_sluice/")
}

/// The state of run `run_id` of job `job`, under [`root`].
pub fn run(bucket: &str, job: &str, run_id: &str) -> RunLayout {
    RunLayout::new(&root(bucket), job, run_id)
}

/// The ledger of incremental job `job`, under [`root`].
pub fn ledger(bucket: &str, job: &str) -> Ledger {
    Ledger::new(&root(bucket), job)
}

/// The JSON document at `uri`; `None` when there is no object.
pub async fn json(storage: &Storage, uri: &S3Uri) -> Option<Value> {
    let bytes = storage.get_bytes(uri).await.unwrap()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}
