#!/usr/bin/env python3
"""Anchor for the end-to-end benchmark: Polars reads a taxi CSV from an S3 endpoint and writes it
back as zstd Parquet, with the same typed columns as `sluice bench`.

    python3 -m pip install polars boto3
    python3 tests/bench/polars_s3_csv_to_parquet.py ENDPOINT s3://BUCKET/KEY.csv s3://BUCKET/OUT.parquet

e.g. python3 tests/bench/polars_s3_csv_to_parquet.py http://127.0.0.1:9000 \\
         s3://bench/taxi-1024mib.csv s3://bench/out/taxi-polars.parquet

The CSV is read with `polars.scan_csv` and written with `sink_parquet(compression="zstd")`, both
straight through the endpoint (storage_options). Only if Polars cannot sink to S3 is the Parquet
written to a local temporary file and uploaded with boto3; the output then says so (a line on
stderr and "sink": "local+boto3" in the JSON).

The CSV header must be: vendor_id,pickup_at,dropoff_at,passenger_count,trip_distance,rate_code,
store_and_fwd,pickup_location,dropoff_location,payment_type,fare,extra,mta_tax,tip,tolls,
improvement_surcharge,total,congestion_surcharge. No type is inferred: pickup_at / dropoff_at are
parsed with %Y-%m-%d %H:%M:%S into Datetime(us), store_and_fwd is a string, the ids and counts are
Int32, the rest Float64.

stdout gets exactly one JSON line at the end:
    {"tool": "polars", "version": ..., "seconds": ..., "input_bytes": ..., "rows": ...,
     "peak_rss_mib": ...}
where seconds is the wall time of read + convert + write, and rows is read back from the written
Parquet's metadata. Everything else goes to stderr. Credentials default to the embedded server's
(sluice / sluice-local-secret, us-east-1); AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_REGION override them. Talks only to the endpoint given.
"""

import json
import os
import resource
import sys
import tempfile
import time
from urllib.parse import urlparse

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import boto3  # noqa: E402
import polars as pl  # noqa: E402
from botocore.config import Config  # noqa: E402

ACCESS_KEY = os.environ.get("AWS_ACCESS_KEY_ID", "sluice")
SECRET_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "sluice-local-secret")
REGION = os.environ.get("AWS_REGION", "us-east-1")

TIMESTAMPS = ("pickup_at", "dropoff_at")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
INT32 = ("vendor_id", "passenger_count", "rate_code", "pickup_location", "dropoff_location", "payment_type")
STRING = ("store_and_fwd",)
COLUMNS = (
    "vendor_id,pickup_at,dropoff_at,passenger_count,trip_distance,rate_code,store_and_fwd,"
    "pickup_location,dropoff_location,payment_type,fare,extra,mta_tax,tip,tolls,"
    "improvement_surcharge,total,congestion_surcharge"
).split(",")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def csv_schema():
    """The schema the CSV is read with; the timestamps are read as text and parsed with the format."""
    schema = {}
    for name in COLUMNS:
        if name in INT32:
            schema[name] = pl.Int32
        elif name in STRING or name in TIMESTAMPS:
            schema[name] = pl.String
        else:
            schema[name] = pl.Float64
    return schema


def split_uri(uri):
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise SystemExit(f"not an s3://BUCKET/KEY URI: {uri}")
    return parsed.netloc, parsed.path.lstrip("/")


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    endpoint, src, dst = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    src_bucket, src_key = split_uri(src)
    dst_bucket, dst_key = split_uri(dst)

    storage_options = {
        "aws_endpoint_url": endpoint,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_region": REGION,
        "aws_allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    input_bytes = s3.head_object(Bucket=src_bucket, Key=src_key)["ContentLength"]
    log(f"polars {pl.__version__}: {src} ({input_bytes / 1e6:.1f} MB) -> {dst} via {endpoint}")

    def plan():
        return pl.scan_csv(
            src,
            has_header=True,
            schema=csv_schema(),
            storage_options=storage_options,
        ).with_columns(
            [pl.col(name).str.strptime(pl.Datetime("us"), TIMESTAMP_FORMAT, strict=True) for name in TIMESTAMPS]
        )

    sink = "s3"
    started = time.perf_counter()
    try:
        plan().sink_parquet(dst, compression="zstd", storage_options=storage_options)
    except Exception as exc:  # noqa: BLE001 - any failure of the cloud sink selects the fallback
        failed_after = time.perf_counter() - started
        log(f"polars could not sink to S3 ({type(exc).__name__}: {exc}) after {failed_after:.2f}s;")
        log("FALLBACK: writing the Parquet to a local temporary file and uploading it with boto3")
        sink = "local+boto3"
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="polars-bench-") as tmp:
            local = os.path.join(tmp, "out.parquet")
            plan().sink_parquet(local, compression="zstd")
            s3.upload_file(local, dst_bucket, dst_key)
    seconds = time.perf_counter() - started
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # rows from the Parquet footer of what was written (metadata only, read back through the endpoint)
    rows = pl.scan_parquet(dst, storage_options=storage_options).select(pl.len()).collect().item()
    output_bytes = s3.head_object(Bucket=dst_bucket, Key=dst_key)["ContentLength"]
    log(
        f"polars {pl.__version__}: {rows} rows, {input_bytes / 1e6 / seconds:.1f} MB/s "
        f"({seconds:.2f}s, {output_bytes / 2**20:.1f} MiB of Parquet, sink {sink}, "
        f"peak RSS {peak_rss_mib:.0f} MiB)"
    )
    result = {
        "tool": "polars",
        "version": pl.__version__,
        "seconds": round(seconds, 4),
        "input_bytes": input_bytes,
        "rows": rows,
        "peak_rss_mib": round(peak_rss_mib, 1),
    }
    if sink != "s3":
        result["sink"] = sink
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
