//! The Python `deltalake` package as an independent reader of the Delta tables sluice
//! writes: the machine's own copy, else one installed with pip into
//! `target/tmp/deltalake-site/`.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::support::TestServer;
use crate::support::python::{Package, command};

const CHECK: &str = "import deltalake; from deltalake import QueryBuilder";

const DELTALAKE: Package = Package {
    name: "deltalake",
    site: "deltalake",
    requirement: "deltalake>=1.0",
    needed_by: "the Delta table tests",
    check: CHECK,
    check_args: &[],
    install_hint: "install it with `python3 -m pip install deltalake`",
};

fn site() -> Result<Option<PathBuf>, String> {
    static SITE: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    SITE.get_or_init(|| DELTALAKE.site()).clone()
}

/// Reads the table at `uri` on `server` with the Python package: its version, its number of
/// data files, its partition columns, and the rows and distinct values of `column` that a
/// query over the table finds.
pub fn read(server: &TestServer, uri: &str, column: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from deltalake import DeltaTable, QueryBuilder
uri, column, endpoint, key, secret = sys.argv[1:6]
options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
table = DeltaTable(uri, storage_options=options)
rows = QueryBuilder().register("t", table).execute(
    f'select count(*) as n, count(distinct "{column}") as d from t').read_all()
row = rows.to_pylist()[0] if hasattr(rows, "to_pylist") else None
if row is None:
    n = rows.column("n")[0].as_py(); d = rows.column("d")[0].as_py()
else:
    n, d = row["n"], row["d"]
print(json.dumps({"version": table.version(), "files": len(table.file_uris()),
                  "partitions": table.metadata().partition_columns, "rows": n, "distinct": d}))
"#;
    let out = command(site().unwrap().as_deref())
        .args(["-c", script, uri, column])
        .arg(&server.url)
        .arg(&server.access_key)
        .arg(&server.secret_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "the deltalake reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
