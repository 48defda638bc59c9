#!/usr/bin/env python3
"""Small-object latency of an S3 endpoint, as a client sees it: the median and 95th percentile
of PUT, GET and HEAD of a 1 KiB object, one request at a time over one kept-alive connection
(boto3), then GET+PUT pairs per second with 16 threads.

    python3 tests/bench/small_object_latency.py http://127.0.0.1:9000 [REQUESTS] [--json]

With --json the figures go to stderr and one JSON line to stdout (for `sluice bench server`).

Talks only to the endpoint given (loopback); credentials are the embedded server's defaults
unless AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are set.
"""

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import json  # noqa: E402

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "sluice"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "sluice-local-secret"),
        config=Config(max_pool_connections=32, retries={"max_attempts": 1}),
    )


def timed(f, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        f(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    as_json = "--json" in sys.argv[1:]
    out = sys.stderr if as_json else sys.stdout
    endpoint = args[0]
    n = int(args[1]) if len(args) > 1 else 200
    figures = {"tool": "boto3", "version": boto3.__version__, "requests": n}
    s3 = client(endpoint)
    bucket = "latency"
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        pass
    body = b"x" * 1024
    results = {
        "PUT": timed(lambda i: s3.put_object(Bucket=bucket, Key=f"k/{i}", Body=body), n),
        "GET": timed(lambda i: s3.get_object(Bucket=bucket, Key=f"k/{i}")["Body"].read(), n),
        "HEAD": timed(lambda i: s3.head_object(Bucket=bucket, Key=f"k/{i}"), n),
    }
    for name, ms in results.items():
        ms.sort()
        median, p95 = statistics.median(ms), ms[int(len(ms) * 0.95)]
        figures[name] = {"median_ms": median, "p95_ms": p95}
        print(f"{name:4} 1 KiB: median {median:6.2f} ms, p95 {p95:6.2f} ms ({n} requests)", file=out)

    def pair(i):
        s3.get_object(Bucket=bucket, Key=f"k/{i % n}")["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"copy/{i}", Body=body)

    pairs = n * 5
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(pair, range(pairs)))
    took = time.perf_counter() - t
    figures["pairs_per_second"] = pairs / took
    print(f"GET+PUT pairs, 16 threads: {pairs / took:7.1f} per second ({pairs} pairs in {took:.2f} s)", file=out)
    if as_json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
