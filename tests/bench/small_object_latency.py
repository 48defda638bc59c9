#!/usr/bin/env python3
"""Small-object latency of an S3 endpoint, as a client sees it: the median and 95th percentile
of PUT, GET and HEAD of a 1 KiB object, one request at a time over one kept-alive connection
(boto3), then GET+PUT pairs per second with 16 threads.

    python3 tests/bench/small_object_latency.py http://127.0.0.1:9000 [REQUESTS]

Talks only to the endpoint given (loopback); credentials are the embedded server's defaults
unless AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are set.
"""

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

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
    endpoint = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
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
        print(f"{name:4} 1 KiB: median {statistics.median(ms):6.2f} ms, p95 {ms[int(len(ms) * 0.95)]:6.2f} ms ({n} requests)")

    def pair(i):
        s3.get_object(Bucket=bucket, Key=f"k/{i % n}")["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"copy/{i}", Body=body)

    pairs = n * 5
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(pair, range(pairs)))
    took = time.perf_counter() - t
    print(f"GET+PUT pairs, 16 threads: {pairs / took:7.1f} per second ({pairs} pairs in {took:.2f} s)")


if __name__ == "__main__":
    main()
