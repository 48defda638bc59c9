//! Which S3 to talk to: the configured endpoint and credentials, or the embedded server.

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use std::time::Duration;

use super::embedded::{EMBEDDED_ACCESS_KEY, EMBEDDED_REGION, EMBEDDED_SECRET_KEY, EmbeddedServer};
use super::{Storage, StorageError};

/// Where the embedded server keeps its buckets unless told otherwise.
pub const DEFAULT_EMBEDDED_DIR: &str = ".sluice/s3";

/// Attempts per request (the first one included) before an error reaches the caller.
const MAX_ATTEMPTS: u32 = 4;

/// How to reach S3.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// An explicit endpoint URL; wins over `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The directory the embedded server serves when nothing else is configured.
    pub embedded_dir: PathBuf,
    /// Why the embedded server must not stand in for S3 here (a worker, the launcher), if
    /// it must not; inside a pod it never does.
    pub refuse_embedded: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            endpoint: None,
            embedded_dir: PathBuf::from(DEFAULT_EMBEDDED_DIR),
            refuse_embedded: None,
        }
    }
}

/// The sources of the AWS default credential chain, in its order, as an error names them.
const CREDENTIAL_SOURCES: &str = "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), shared config and credentials files (AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, ~/.aws), web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, as IRSA sets them), container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI, as EKS Pod Identity and ECS set them), EC2 instance metadata (an instance profile or node IAM role)";

/// The S3 endpoint in use, and the environment a child process needs to reach the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint URL; empty when the AWS default endpoints are used.
    pub url: String,
    /// Variables to set in a child's environment (`AWS_ENDPOINT_URL`, and for the embedded
    /// server also its credentials and region).
    pub env: Vec<(String, String)>,
}

impl Endpoint {
    fn embedded(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_string(),
            env: vec![
                ("AWS_ENDPOINT_URL".into(), url.to_string()),
                ("AWS_ACCESS_KEY_ID".into(), EMBEDDED_ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY".into(), EMBEDDED_SECRET_KEY.into()),
                ("AWS_REGION".into(), EMBEDDED_REGION.into()),
            ],
        }
    }
}

/// What the environment says about S3, read once so the decision below is a pure function.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct S3Environment {
    endpoint: Option<String>,
    has_credentials: bool,
    /// `KUBERNETES_SERVICE_HOST` is set: this process runs in a pod.
    in_pod: bool,
    /// `AWS_EC2_METADATA_DISABLED=true`: the chain skips instance metadata.
    metadata_disabled: bool,
}

impl S3Environment {
    fn read(var: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> S3Environment {
        let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|name| var(name).filter(|v| !v.is_empty()));
        let env_credentials = [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .into_iter()
        .any(set);
        let file_exists =
            |explicit: &str, default: &str| match var(explicit).filter(|v| !v.is_empty()) {
                Some(path) => Path::new(&path).exists(),
                None => home.is_some_and(|h| h.join(".aws").join(default).exists()),
            };
        let file_credentials = file_exists("AWS_SHARED_CREDENTIALS_FILE", "credentials")
            || file_exists("AWS_CONFIG_FILE", "config");
        S3Environment {
            endpoint,
            has_credentials: env_credentials || file_credentials,
            in_pod: set("KUBERNETES_SERVICE_HOST"),
            metadata_disabled: var("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }

    fn current() -> S3Environment {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        S3Environment::read(|name| std::env::var(name).ok(), home.as_deref())
    }
}

/// What to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// The embedded server: nothing is configured and it may stand in.
    Embedded,
    /// The AWS default chain; `Some(why)` when nothing is configured but the embedded
    /// server may not stand in, so the chain must find credentials (an instance profile,
    /// say) or the connection fails saying `why`.
    Chain { must_find: Option<String> },
}

/// Starts the embedded server only when neither an endpoint nor any source of credentials
/// is configured, and never inside a pod or where the command refuses it: there an
/// instance profile or node role, invisible to this check, is the likely source, and a
/// local empty disk would make an empty run.
fn choose(opts: &ConnectOptions, env: &S3Environment) -> Choice {
    if opts.endpoint.is_some() || env.endpoint.is_some() || env.has_credentials {
        return Choice::Chain { must_find: None };
    }
    if let Some(why) = &opts.refuse_embedded {
        return Choice::Chain {
            must_find: Some(why.clone()),
        };
    }
    if env.in_pod {
        return Choice::Chain {
            must_find: Some("running in a pod (KUBERNETES_SERVICE_HOST is set)".into()),
        };
    }
    Choice::Embedded
}

impl Storage {
    /// Connects with the standard AWS chain (environment, profile, web identity, container
    /// credentials, instance metadata), the endpoint override (explicit option, then
    /// `AWS_ENDPOINT_URL`), path-style addressing and standard retries. With nothing
    /// configured at all, outside a pod, starts the embedded server on `opts.embedded_dir`
    /// and says why in one line on stderr; inside a pod (or where `opts` refuses it) the
    /// chain must find credentials, else the error names the sources it tried.
    pub async fn connect(
        opts: &ConnectOptions,
    ) -> Result<(Storage, Option<EmbeddedServer>, Endpoint), StorageError> {
        let env = S3Environment::current();
        let must_find = match choose(opts, &env) {
            Choice::Embedded => {
                let server = EmbeddedServer::start(&opts.embedded_dir, None).await?;
                eprintln!(
                    "sluice: no S3 endpoint (--endpoint, AWS_ENDPOINT_URL, the job's `endpoint`) and no AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws, web identity, container credentials) are configured, so sluice serves {} as S3 at {} (an instance profile is not looked for here; set one of those to use real S3)",
                    opts.embedded_dir.display(),
                    server.url()
                );
                let storage =
                    Storage::with_endpoint(server.url(), EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY)
                        .await;
                let endpoint = Endpoint::embedded(server.url());
                return Ok((storage, Some(server), endpoint));
            }
            Choice::Chain { must_find } => must_find,
        };

        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = &opts.endpoint {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        if let Some(why) = must_find {
            let provider =
                shared
                    .credentials_provider()
                    .ok_or_else(|| StorageError::NoCredentials {
                        why: why.clone(),
                        tried: CREDENTIAL_SOURCES.into(),
                        source: "no credentials provider is configured".into(),
                    })?;
            if let Err(error) = provider.provide_credentials().await {
                let mut tried = CREDENTIAL_SOURCES.to_string();
                if env.metadata_disabled {
                    tried.push_str("; instance metadata is off (AWS_EC2_METADATA_DISABLED=true)");
                }
                return Err(StorageError::NoCredentials {
                    why,
                    tried,
                    source: Box::new(error),
                });
            }
        }
        let url = opts
            .endpoint
            .clone()
            .or_else(|| shared.endpoint_url().map(str::to_string))
            .or(env.endpoint)
            .unwrap_or_default();
        let mut config = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            // A custom endpoint rarely cares about the region, but signing needs one.
            config = config.region(Region::new(EMBEDDED_REGION));
        }
        let storage = Storage::from_config(tune(config), &url, shared.credentials_provider());
        let mut child_env = Vec::new();
        if let Some(explicit) = &opts.endpoint {
            child_env.push(("AWS_ENDPOINT_URL".to_string(), explicit.clone()));
        }
        Ok((
            storage,
            None,
            Endpoint {
                url,
                env: child_env,
            },
        ))
    }

    /// A client for one endpoint with static credentials (tests, the embedded server).
    pub async fn with_endpoint(url: &str, access_key: &str, secret: &str) -> Storage {
        let credentials = aws_sdk_s3::config::SharedCredentialsProvider::new(Credentials::new(
            access_key, secret, None, None, "sluice",
        ));
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(Region::new(EMBEDDED_REGION))
            .credentials_provider(credentials.clone());
        Storage::from_config(tune(config), url, Some(credentials))
    }

    /// The settings of an `object_store` S3 client (as Delta Lake's writer takes them) that
    /// reaches the same endpoint, in the same region, with this client's credentials as they
    /// resolve now.
    pub async fn object_store_options(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StorageError> {
        use aws_sdk_s3::config::ProvideCredentials as _;
        let config = self.client().config();
        let mut options = std::collections::HashMap::new();
        if !self.endpoint.is_empty() {
            options.insert("AWS_ENDPOINT_URL".to_string(), self.endpoint.clone());
            if self.endpoint.starts_with("http://") {
                options.insert("AWS_ALLOW_HTTP".to_string(), "true".to_string());
            }
        }
        if let Some(region) = config.region() {
            options.insert("AWS_REGION".to_string(), region.to_string());
        }
        if let Some(provider) = &self.credentials {
            let credentials =
                provider
                    .provide_credentials()
                    .await
                    .map_err(|e| StorageError::NoCredentials {
                        why: "resolving the credentials for the Delta Lake writer failed".into(),
                        tried: "the client's own provider".into(),
                        source: Box::new(e),
                    })?;
            options.insert(
                "AWS_ACCESS_KEY_ID".to_string(),
                credentials.access_key_id().to_string(),
            );
            options.insert(
                "AWS_SECRET_ACCESS_KEY".to_string(),
                credentials.secret_access_key().to_string(),
            );
            if let Some(token) = credentials.session_token() {
                options.insert("AWS_SESSION_TOKEN".to_string(), token.to_string());
            }
        }
        Ok(options)
    }
}

/// The settings every client gets, whatever the endpoint.
fn tune(config: aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder {
    config
        // S3-compatible servers (the embedded one, moto, MinIO) need path-style addressing.
        .force_path_style(true)
        // We send our own CRC32C with every part and PUT; the SDK's default trailer checksums
        // (aws-chunked bodies) are not understood by every S3-compatible server.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // Adaptive: besides retrying, a throttled client (503 SlowDown) lowers its own
        // request rate instead of spending its attempts at full speed.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)], home: Option<&Path>) -> S3Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3Environment::read(|name| map.get(name).cloned(), home)
    }

    #[test]
    fn embedded_only_when_nothing_is_configured() {
        let empty_home = tempfile::tempdir().unwrap();
        let opts = ConnectOptions::default();
        let wants_embedded =
            |opts: &ConnectOptions, env: &S3Environment| choose(opts, env) == Choice::Embedded;
        assert!(wants_embedded(&opts, &env_of(&[], Some(empty_home.path()))));
        assert!(wants_embedded(&opts, &env_of(&[], None)));
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_ENDPOINT_URL",
        ] {
            let env = env_of(&[(var, "x")], Some(empty_home.path()));
            assert!(
                !wants_embedded(&opts, &env),
                "{var} should disable the embedded server"
            );
        }
        let explicit = ConnectOptions {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..ConnectOptions::default()
        };
        assert!(!wants_embedded(&explicit, &env_of(&[], None)));
    }

    #[test]
    fn never_embedded_in_a_pod_or_where_refused() {
        let in_pod = env_of(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")], None);
        let Choice::Chain {
            must_find: Some(why),
        } = choose(&ConnectOptions::default(), &in_pod)
        else {
            panic!("a pod must not get the embedded server");
        };
        assert!(why.contains("KUBERNETES_SERVICE_HOST"), "{why}");
        let refused = ConnectOptions {
            refuse_embedded: Some("a worker".into()),
            ..ConnectOptions::default()
        };
        assert_eq!(
            choose(&refused, &env_of(&[], None)),
            Choice::Chain {
                must_find: Some("a worker".into())
            }
        );
        // Configured credentials are used as they are, in a pod too.
        let keys = env_of(
            &[("KUBERNETES_SERVICE_HOST", "x"), ("AWS_ACCESS_KEY_ID", "k")],
            None,
        );
        assert_eq!(choose(&refused, &keys), Choice::Chain { must_find: None });
    }

    #[test]
    fn aws_files_in_home_count_as_credentials() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/config"), "[default]\n").unwrap();
        let env = env_of(&[], Some(home.path()));
        assert!(env.has_credentials);
        assert_eq!(
            choose(&ConnectOptions::default(), &env),
            Choice::Chain { must_find: None }
        );
    }
}
