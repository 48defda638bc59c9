//! The crash harness: `sluice run` is killed with SIGKILL (its whole process group, the
//! workers included) at seeded points of its request stream, as the fault proxy sees it:
//! halfway through the GET of a source object, before an UploadPart reaches the server,
//! after a CompleteMultipartUpload succeeded but before the client heard of it, around the
//! PUT of a done marker and of `_SUCCESS.json`. `sluice resume RUN --local JOB` then
//! finishes the run, and the result must be the clean run's: the same output keys and
//! bytes, the same record counts, no upload left open, `_SUCCESS.json` exactly once. The
//! big output takes three 5 MiB parts, so a kill mid-upload leaves parts stored; the trials
//! run on the embedded server and on moto.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::faults::{
    JOB, assert_no_open_uploads, assert_same_outputs, clean_run, env_for, inputs, job_file,
    last_lines, open_uploads, outputs, put_inputs, sluice,
};
use crate::support::fault_proxy::{Point, Trap};
use crate::support::state::{self, json};
use crate::support::{self, TestServer, fault_proxy::FaultProxy, fault_proxy::FaultRates};

/// Trials on the embedded server, and on moto (slower; each point is still killed at).
const TRIALS: usize = 20;
const MOTO_TRIALS: usize = 10;
const SEED: u64 = 20261201;

#[derive(Debug, Default)]
struct Tally {
    trials: u32,
    killed: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_killed_at_any_point_resume_to_the_clean_result() {
    crash_trials(support::embedded(), TRIALS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_killed_at_any_point_resume_to_the_clean_result_on_moto() {
    let Some(moto) = support::moto() else { return };
    crash_trials(moto, MOTO_TRIALS).await;
}

async fn crash_trials(server: &'static TestServer, trials: usize) {
    let started = Instant::now();
    let (clean, clean_records) = clean_run(server).await;
    let proxy = FaultProxy::start(&server.url, "in/", FaultRates::none()).await;
    let through_proxy = env_for(server, proxy.url());
    let direct = server.env();

    // How often each point occurs in one undisturbed run through the proxy.
    let (storage, bucket) = server.fresh().await;
    put_inputs(&storage, &bucket, &inputs()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), &bucket);
    proxy.reset_points();
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", "observed"],
        &through_proxy,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let occurrences: BTreeMap<Point, u64> =
        Point::ALL.iter().map(|p| (*p, proxy.seen(*p))).collect();
    println!("points in one run: {occurrences:?}");
    for (point, n) in &occurrences {
        assert!(*n > 0, "{point:?} never occurs in a run");
    }
    assert!(occurrences[&Point::UploadPart] >= 2, "{occurrences:?}");

    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut tally: BTreeMap<Point, Tally> = BTreeMap::new();
    let mut left_open = 0;
    for trial in 0..trials {
        let point = Point::ALL[trial % Point::ALL.len()];
        let occurrence = rng.random_range(1..=occurrences[&point]);
        let after = rng.random_bool(0.5);
        let context = format!(
            "{} trial {trial}: {point:?} #{occurrence} (after: {after})",
            server.name
        );

        let (storage, bucket) = server.fresh().await;
        put_inputs(&storage, &bucket, &inputs()).await;
        let job = job_file(dir.path(), &bucket);
        let run_id = format!("t{trial}");

        let pgid = Arc::new(AtomicI32::new(0));
        let target = pgid.clone();
        proxy.arm(Trap {
            point,
            occurrence,
            after,
            action: Box::new(move || {
                let pgid = target.load(Ordering::SeqCst);
                if pgid > 0 {
                    // SAFETY: kill(2) on a process group we started.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
            }),
        });
        let log = std::fs::File::create(dir.path().join(format!("{run_id}.log"))).unwrap();
        let mut child = Command::new(support::sluice_bin())
            .args(["run", job.to_str().unwrap(), "--run-id", &run_id])
            .envs(through_proxy.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "sluice=info,warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        pgid.store(child.id() as i32, Ordering::SeqCst);
        let status = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await
        .unwrap_or_else(|_| panic!("{context}: the run did not end"))
        .unwrap()
        .unwrap();
        let killed = status.signal() == Some(libc::SIGKILL);
        assert_eq!(killed, proxy.fired(), "{context}: {status:?}");
        if !killed {
            assert_eq!(
                status.code(),
                Some(0),
                "{context}: the undisturbed run failed"
            );
        }
        let entry = tally.entry(point).or_default();
        entry.trials += 1;
        entry.killed += u32::from(killed);

        // What the kill left open; resume must abort it.
        left_open += open_uploads(&storage, &bucket).await.len();

        // Finish the run on this machine, as an operator would.
        proxy.reset_points();
        let resumed = sluice(
            &["resume", &run_id, "--local", job.to_str().unwrap()],
            &direct,
            dir.path(),
        );
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{context}: resume failed\nrun log:\n{}",
            last_lines(
                &std::fs::read(dir.path().join(format!("{run_id}.log"))).unwrap(),
                30
            )
        );

        let manifest = json(&storage, &state::run(&bucket, JOB, &run_id).success())
            .await
            .unwrap_or_else(|| panic!("{context}: not published after resume"));
        assert_eq!(manifest["records"], clean_records, "{context}");
        let listed = manifest["outputs"].as_array().unwrap().len();
        assert_eq!(
            listed,
            clean.len(),
            "{context}: manifest lists {listed} outputs"
        );
        assert_same_outputs(&outputs(&storage, &bucket).await, &clean, &context);
        assert_no_open_uploads(&storage, &bucket, &context).await;
        let published: Vec<String> = storage
            .list(&state::root(&bucket))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with("_SUCCESS.json"))
            .collect();
        assert_eq!(
            published,
            [state::run(&bucket, JOB, &run_id).success().key],
            "{context}"
        );
    }

    let killed: u32 = tally.values().map(|t| t.killed).sum();
    println!(
        "crash harness on {}: {trials} trials, {killed} kills survived, {left_open} uploads \
         left open by the kills and none after resume, in {:.1}s",
        server.name,
        started.elapsed().as_secs_f64()
    );
    for (point, t) in &tally {
        println!(
            "  {point:?}: {} trials, {} killed and resumed",
            t.trials, t.killed
        );
    }
    assert!(
        killed as usize >= trials * 3 / 4,
        "only {killed} of {trials} trials hit their kill point"
    );
    for point in Point::ALL {
        assert!(tally[&point].killed > 0, "{point:?} was never killed at");
    }
    assert!(
        left_open > 0,
        "no kill left an upload open: the clean-up went untested"
    );
}
