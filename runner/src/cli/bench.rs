//! `sluice bench [SCENARIO]`: performance figures next to their anchors (docs/performance.md).

use crate::bench;
use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// CSV -> typed Parquet: decode + encode alone and end to end, next to DuckDB and polars.
    Convert,
    /// The cost of a transformer: the same run directly and through an identity transformer.
    Transformer,
    /// The embedded S3 server alone: large GET and PUT per server CPU, small-object latency.
    Server,
    /// Many small objects through `sluice run`, next to boto3 with 16 threads.
    Small,
    /// Listing and planning many keys.
    List,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = Scenario::Convert)]
    pub scenario: Scenario,
    /// Size in MiB of the generated data (convert, transformer: CSV; server: the large object).
    #[arg(long, default_value_t = 1024)]
    pub mib: usize,
    /// Objects of the small-objects scenario.
    #[arg(long, default_value_t = 5000)]
    pub objects: usize,
    /// Keys of the listing scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// convert: skip the end-to-end runs (measure decode + encode alone).
    #[arg(long)]
    pub no_end_to_end: bool,
    /// Skip the anchors (the Python scripts under tests/bench/).
    #[arg(long)]
    pub no_anchors: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let anchors = !args.no_anchors;
    crate::cli::runtime()?.block_on(async {
        if args.scenario == Scenario::Server {
            // A server process of its own: no connection here.
            return bench::server::report(&args.connect.embedded_dir, args.mib, anchors).await;
        }
        let conn = args.connect.connect(None).await?;
        let target = bench::Target {
            storage: conn.storage.clone(),
            endpoint: conn.endpoint.clone(),
            embedded: conn.embedded.is_some(),
            dir: args.connect.embedded_dir.clone(),
        };
        match args.scenario {
            Scenario::Convert => {
                let options = bench::convert::ConvertOptions {
                    mib: args.mib,
                    end_to_end: !args.no_end_to_end,
                    anchors,
                };
                bench::convert::run(&target, &options).await
            }
            Scenario::Transformer => bench::transformer::run(&target, args.mib).await,
            Scenario::Small => bench::small::run(&target, args.objects, anchors).await,
            Scenario::List => bench::listing::run(&target, args.keys).await,
            Scenario::Server => unreachable!("handled above"),
        }
    })?;
    Ok(ExitCode::Done)
}
