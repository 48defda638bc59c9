//! Flags shared by every command that talks to S3.

use std::path::PathBuf;

use crate::storage::{ConnectOptions, EmbeddedServer, Endpoint, Storage};

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// S3 endpoint URL (overrides AWS_ENDPOINT_URL and the job file's `endpoint`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Directory served by the embedded S3 server when no endpoint and no credentials are
    /// configured (each sub-directory is a bucket).
    #[arg(long, value_name = "DIR", default_value = ".sluice/s3")]
    pub embedded_dir: PathBuf,
}

/// A connection, and the embedded server behind it if one was started (it stops on drop).
pub struct Connection {
    pub storage: Storage,
    pub endpoint: Endpoint,
    pub embedded: Option<EmbeddedServer>,
}

impl ConnectArgs {
    /// Connects; `job_endpoint` is the job file's `endpoint`, used when no flag or
    /// AWS_ENDPOINT_URL is set.
    pub async fn connect(&self, job_endpoint: Option<&str>) -> anyhow::Result<Connection> {
        self.connect_refusing_embedded(job_endpoint, None).await
    }

    /// Connects as [`ConnectArgs::connect`]; with `refuse` (why the embedded server must not
    /// stand in here), nothing configured means the AWS default chain must find credentials.
    pub async fn connect_refusing_embedded(
        &self,
        job_endpoint: Option<&str>,
        refuse: Option<&str>,
    ) -> anyhow::Result<Connection> {
        let from_env = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|v| !v.is_empty());
        let endpoint = self
            .endpoint
            .clone()
            .or(from_env)
            .or_else(|| job_endpoint.map(str::to_string));
        let (storage, embedded, endpoint) = Storage::connect(&ConnectOptions {
            endpoint,
            embedded_dir: self.embedded_dir.clone(),
            refuse_embedded: refuse.map(str::to_string),
        })
        .await?;
        Ok(Connection {
            storage,
            endpoint,
            embedded,
        })
    }
}
