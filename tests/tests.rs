//! The integration test binary: one binary keeps link time down. Each module below is one area.

mod bad_data; // bad source data: exit 4 naming the object; zstd sources end to end
mod cluster; // submit, status, cancel, resume against an in-memory Kubernetes API
mod crash; // SIGKILL at seeded points of a run, then resume: the clean result, exactly once
mod faults; // S3 faults through a fault-injecting proxy: survived, or failing fast
mod format; // the format module: CSV/JSONL decoding, bad records, inference, encoders, counts
mod jobs; // whole jobs through the binary: outputs, rejects, manifests, exit codes
mod kubernetes_e2e; // a real cluster, when SLUICE_TEST_KUBECONFIG is set
mod layers; // runner/src as layers: imports only go down, no file past 700 lines
mod local_pods; // the local pod runner executing rendered worker Jobs
mod manifests; // manifests/: every object passes the Kubernetes 1.33 strict schema
mod pipelines; // pipelines: DAG order and bound, results into params, failures, resume, check, launcher, cluster, schedules
mod render; // rendered Kubernetes objects: golden files and the strict schema
mod report; // report.html, `sluice report`, and run metrics to a file or a Pushgateway
mod run_state; // across runs: the incremental ledger, gc of abandoned run state
mod scheduled_tasks; // schedules of task definitions: templated args, catch-up, exit codes, CronJob, check
mod scheduler_failover; // a new scheduler leader adopts the runs in flight on a cluster
mod schedules; // schedules: scheduler --once, catch-up, concurrency policies, backfill, Lease, CronJob
mod spec; // job file loading and error reporting
mod split; // large objects split into ranges: quote-safe cuts, split runs equal whole runs
mod storage; // the storage module: listing, ranged reads, multipart uploads, aborts
mod strict_cluster; // the cluster path against a strict API layer: names, RBAC from manifests/, cleanup with the Job
mod support; // S3 servers for tests: embedded and moto
mod tables; // partitioned outputs: Hive paths, escaping, bounded open partitions, verify, check errors
mod tasks; // task definitions: local runs, sidecars, errors, the rendered Job, --kube
mod transformer_python; // the Python example transformer in all three modes
mod transformer_serve; // the built-in transformer server: health, hpush, hpull
mod transformers; // container steps through `sluice run`: accounting and misbehaving transformers
mod unique_keys; // key spills and the run-wide duplicate merge
mod validation; // data validation rules: every rule, every scope, rejects, check-time errors
mod verify; // `sluice verify`: published runs re-checked for lost, changed and extra objects
