//! The layout of run state in the bucket: plan, progress, done markers, report, `_SUCCESS.json`.
//!
//! ```text
//! <state>/runs/<job>/<run-id>/job.yaml          the resolved job (params applied)
//! <state>/runs/<job>/<run-id>/plan.json         shards: object keys, sizes, ETags
//! <state>/runs/<job>/<run-id>/progress/<i>.json per shard, updated while it runs
//! <state>/runs/<job>/<run-id>/done/<hash>.json  per source object: ETag, outputs, counts
//! <state>/runs/<job>/<run-id>/keys/<rule>/<hash>.keys  sorted key hashes for `unique` rules
//! <state>/runs/<job>/<run-id>/report.json       the run report
//! <state>/runs/<job>/<run-id>/_SUCCESS.json     written last: every output with size, rows, checksum
//! <state>/ledger/<job>/...                       incremental jobs: what published runs consumed
//! ```

pub mod ledger;

use sha2::{Digest, Sha256};

use crate::storage::uri::S3Uri;

/// Where one run's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: S3Uri,
}

impl RunLayout {
    pub fn new(state: &S3Uri, job: &str, run_id: &str) -> RunLayout {
        RunLayout {
            root: state.join(&format!("runs/{job}/{run_id}/")),
        }
    }

    /// The layout of the run whose plan sits at `plan` (`.../runs/<job>/<run>/plan.json`).
    pub fn from_plan_uri(plan: &S3Uri) -> RunLayout {
        let dir = plan.key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        RunLayout {
            root: S3Uri::new(plan.bucket.clone(), format!("{dir}/")),
        }
    }

    /// The layout of the run whose state directory is `root` (`.../runs/<job>/<run>/`).
    pub fn from_root(root: &S3Uri) -> RunLayout {
        RunLayout {
            root: root.as_prefix(),
        }
    }

    /// The run id: the last segment of the run's directory.
    pub fn run_id(&self) -> &str {
        let dir = self.root.key.trim_end_matches('/');
        dir.rsplit('/').next().unwrap_or(dir)
    }

    pub fn root(&self) -> &S3Uri {
        &self.root
    }

    pub fn job(&self) -> S3Uri {
        self.root.join("job.yaml")
    }

    pub fn plan(&self) -> S3Uri {
        self.root.join("plan.json")
    }

    pub fn progress(&self, shard: u32) -> S3Uri {
        self.root.join(&format!("progress/{shard:05}.json"))
    }

    /// The done marker of one source object, named by a hash of its key.
    pub fn done_marker(&self, source_key: &str) -> S3Uri {
        self.root
            .join(&format!("done/{}.json", key_hash(source_key)))
    }

    pub fn done_prefix(&self) -> S3Uri {
        self.root.join("done/")
    }

    /// Where `unique` rules spill the sorted keys of each object, per rule.
    pub fn keys(&self) -> S3Uri {
        self.root.join("keys/")
    }

    pub fn report(&self) -> S3Uri {
        self.root.join("report.json")
    }

    pub fn success(&self) -> S3Uri {
        self.root.join("_SUCCESS.json")
    }
}

/// A stable, short, path-safe name for a source key.
pub fn key_hash(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let state: S3Uri = "s3://out/_sluice/".parse().unwrap();
        let run = RunLayout::new(&state, "taxi", "taxi-20261122T020000Z");
        assert_eq!(
            run.plan().to_string(),
            "s3://out/_sluice/runs/taxi/taxi-20261122T020000Z/plan.json"
        );
        assert_eq!(RunLayout::from_plan_uri(&run.plan()), run);
        assert_eq!(RunLayout::from_root(run.root()), run);
        assert_eq!(run.run_id(), "taxi-20261122T020000Z");
        assert_eq!(
            run.progress(3).key,
            "_sluice/runs/taxi/taxi-20261122T020000Z/progress/00003.json"
        );
        let marker = run.done_marker("trips/a.csv");
        assert!(marker.key.ends_with(".json"));
        assert_eq!(marker, run.done_marker("trips/a.csv"));
        assert_ne!(marker, run.done_marker("trips/b.csv"));
    }
}
