//! `sluice scheduler --schedules DIR`: fire the runs of every schedule in a directory on
//! time, locally or on a cluster (`--kube`), with /healthz and /metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::connect::ConnectArgs;
use crate::exit::worst_exit;
use crate::schedule::daemon::{Scheduler, SystemClock};
use crate::schedule::fire::{self, Executor};
use crate::schedule::leader::LeaseLock;
use crate::schedule::metrics::{self, Metrics};

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The directory of schedule files (`kind: Schedule`; other files are ignored).
    #[arg(long, value_name = "DIR")]
    pub schedules: PathBuf,
    /// Start what is due now (missed fires included), wait for it, and exit.
    #[arg(long)]
    pub once: bool,
    /// Serve /healthz and /metrics on this address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Run on the cluster (kubeconfig or in-cluster credentials) through the submit path,
    /// instead of on this machine.
    #[arg(long)]
    pub kube: bool,
    /// The namespace of the runs and of the Lease (default: each job's own, else `sluice`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The sluice image of the runs' pods (default: each job's `kubernetes.image`).
    #[arg(long)]
    pub image: Option<String>,
    /// Elect a leader through this Lease (with --kube): only the holder fires runs.
    #[arg(long, value_name = "NAME")]
    pub leader_election: Option<String>,
    /// This replica's name in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: i32,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The daemon exits 0 when stopped; `--once` exits with the worst exit code of the runs it
/// started (0 when each succeeded or none was due).
pub fn run(args: SchedulerArgs) -> anyhow::Result<u8> {
    let schedules = fire::load_dir(&args.schedules)?;
    if schedules.is_empty() {
        tracing::warn!(dir = %args.schedules.display(), "no schedule files; nothing will fire");
    }
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(None).await?;
        if conn.embedded.is_some() {
            for schedule in &schedules {
                fire::create_embedded_buckets(&conn.storage, schedule).await?;
            }
        }
        let (executor, client) = if args.kube {
            let client = kube::Client::try_default().await?;
            let executor = Executor::Cluster {
                client: client.clone(),
                image: args.image.clone(),
                namespace: args.namespace.clone(),
                poll: Duration::from_secs(5),
            };
            (executor, Some(client))
        } else {
            let executor = Executor::Local {
                program: std::env::current_exe()?,
                env: conn.endpoint.env.clone(),
            };
            (executor, None)
        };
        let metrics = Arc::new(Metrics::default());
        let mut scheduler =
            Scheduler::new(schedules, conn.storage.clone(), executor, metrics.clone());
        if let (Some(lease), Some(client)) = (&args.leader_election, client) {
            let identity = args.identity.clone().unwrap_or_else(host_name);
            let namespace = args
                .namespace
                .as_deref()
                .unwrap_or(crate::kubernetes::render::DEFAULT_NAMESPACE);
            scheduler = scheduler.with_lease(LeaseLock::new(
                client,
                namespace,
                lease,
                &identity,
                args.lease_duration,
            ));
        } else if args.leader_election.is_some() {
            anyhow::bail!("--leader-election needs --kube");
        }
        if args.once {
            let started = scheduler.run_once(chrono::Utc::now()).await?;
            for run in &started {
                println!("{}", run.run_id);
            }
            // A run stopped by `Replace` gave way to a newer one, and is no failure.
            return Ok(worst_exit(started.iter().filter_map(|r| r.exit)));
        }
        let (bound, _server) = metrics::serve(args.listen, metrics).await?;
        tracing::info!(listen = %bound, "serving /healthz and /metrics");
        scheduler
            .run(Arc::new(SystemClock), async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(0)
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("sluice-scheduler-{}", std::process::id()))
}
