#!/usr/bin/env python3
"""Anchor for the small-objects benchmark: copies every object under an S3 prefix to another
prefix with boto3, GET then PUT of the same bytes, from a pool of threads.

    python3 -m pip install boto3
    python3 tests/bench/boto3_get_put.py ENDPOINT s3://BUCKET/PREFIX/ s3://BUCKET2/OUTPREFIX/ [--threads 16]

e.g. python3 tests/bench/boto3_get_put.py http://127.0.0.1:9000 s3://small/in/ s3://small/out/

The objects under PREFIX are listed first (list_objects_v2, timed on its own as list_seconds).
Then each of THREADS threads, with a boto3 client of its own (max_pool_connections >= threads),
GETs objects fully and PUTs the same bytes at OUTPREFIX + the key relative to PREFIX; "seconds"
is the wall time of all the GETs and PUTs. Any failed GET or PUT ends the run with an error.

stdout gets exactly one JSON line at the end:
    {"tool": "boto3", "version": ..., "threads": 16, "objects": N, "bytes": total,
     "seconds": ..., "list_seconds": ...}
Everything else goes to stderr. Credentials default to the embedded server's (sluice /
sluice-local-secret, us-east-1); AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION override
them. Talks only to the endpoint given.
"""

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

ACCESS_KEY = os.environ.get("AWS_ACCESS_KEY_ID", "sluice")
SECRET_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "sluice-local-secret")
REGION = os.environ.get("AWS_REGION", "us-east-1")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def split_prefix(uri):
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SystemExit(f"not an s3://BUCKET/PREFIX/ URI: {uri}")
    return parsed.netloc, parsed.path.lstrip("/")


def make_client(endpoint, pool):
    # a session per client: boto3's default session is not meant to be shared across threads
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint", help="S3 endpoint URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("source", help="s3://BUCKET/PREFIX/ to read")
    parser.add_argument("dest", help="s3://BUCKET2/OUTPREFIX/ to write")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    endpoint = args.endpoint.rstrip("/")
    src_bucket, src_prefix = split_prefix(args.source)
    dst_bucket, dst_prefix = split_prefix(args.dest)
    threads = max(1, args.threads)
    pool = max(threads, 10)

    lister = make_client(endpoint, pool)
    started = time.perf_counter()
    keys = []
    for page in lister.get_paginator("list_objects_v2").paginate(Bucket=src_bucket, Prefix=src_prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    list_seconds = time.perf_counter() - started
    log(f"boto3 {boto3.__version__}: {len(keys)} objects under s3://{src_bucket}/{src_prefix} listed in {list_seconds:.3f}s")

    # clients are made before the clock starts; each worker thread takes one for itself
    clients = [make_client(endpoint, pool) for _ in range(threads)]
    free = list(clients)
    lock = threading.Lock()
    local = threading.local()

    def take_client():
        with lock:
            local.s3 = free.pop()

    def copy(key):
        s3 = local.s3
        body = s3.get_object(Bucket=src_bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=dst_bucket, Key=dst_prefix + key[len(src_prefix):], Body=body)
        return len(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, initializer=take_client) as executor:
        total = sum(executor.map(copy, keys))
    seconds = time.perf_counter() - started

    log(
        f"boto3 {boto3.__version__}, {threads} threads: {len(keys)} objects, {total / 1e6:.1f} MB GET+PUT "
        f"in {seconds:.2f}s = {len(keys) / seconds if seconds else 0:.0f} objects/s, "
        f"{total / 1e6 / seconds if seconds else 0:.1f} MB/s"
    )
    print(
        json.dumps(
            {
                "tool": "boto3",
                "version": boto3.__version__,
                "threads": threads,
                "objects": len(keys),
                "bytes": total,
                "seconds": round(seconds, 4),
                "list_seconds": round(list_seconds, 4),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
