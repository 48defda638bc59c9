#!/usr/bin/env python3
"""Conformance of an S3 endpoint against real clients (boto3 and the aws CLI), byte for byte.

    python3 -m pip install boto3 awscli
    python3 tests/conformance/s3_clients.py --sluice target/release/sluice
    python3 tests/conformance/s3_clients.py --endpoint http://127.0.0.1:9000

With --sluice, `sluice s3 serve` is started on a free loopback port over a fresh temporary
directory and stopped at the end. With --endpoint, an already running endpoint is tested instead
(the checks make their own buckets, named conf-<random>, and remove them at the end).
Credentials default to the embedded server's (sluice / sluice-local-secret, us-east-1);
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY override them.

What is checked, with random content from a fixed seed (--seed) and exact byte/sha256 comparison:
bucket creation; single PUTs of 0 B, 1 B, 1 KiB and 5 MiB+1 (round trip, ETag = quoted MD5),
PUTs with "Expect: 100-continue" after an empty one on one connection, error bodies;
range GETs (first byte, middle, suffix, open-ended, end past the size, unsatisfiable = 416);
HEAD (length, ETag, user metadata, content type); low-level multipart (create, 3 parts, list
parts, list uploads, complete, abort); high-level multipart transfers (boto3 upload_fileobj /
download_fileobj with 5 MiB parts, `aws s3 cp` both ways); listing ~2,500 keys (pagination with
continuation tokens, byte order, delimiters, StartAfter, EncodingType=url, entry fields, boto3
paginators, `aws s3 ls`, `aws s3api list-objects-v2`; keys that are also prefixes, "folder/"
markers); deletes (single, batch of 100, missing key); `aws s3 sync` up and
down; bucket deletion.

What the embedded server does differently from S3, on purpose, and is checked as such with
--sluice (or --embedded with --endpoint): a part's ETag is an opaque 128-bit digest, not its MD5
(the multipart ETag is still S3's MD5 of the parts' ETags + "-N"; a single PUT's ETag is its MD5);
a key cannot be an object and also continue with "/" into other keys (objects are files), which
is refused with a 400 naming the key; and a "folder/" marker is a directory, not an object.

Prints one line per check ("ok  <name>" or "FAIL <name>: <why>"), then a summary line
"N passed, M failed". Exits 0 only if every check passed. Talks only to the loopback endpoint.
"""

import argparse
import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
ACCESS_KEY = os.environ.get("AWS_ACCESS_KEY_ID", "sluice")
SECRET_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "sluice-local-secret")
REGION = "us-east-1"


class CheckFailed(Exception):
    pass


def ensure(cond, why):
    if not cond:
        raise CheckFailed(why)


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def byte_order(keys):
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def describe_error(exc):
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"HTTP {status} {err.get('Code')}: {err.get('Message')} ({exc})"
    return f"{type(exc).__name__}: {exc}"


def expect_client_error(fn, status, codes):
    """Runs fn, which must fail with the given HTTP status and one of the error codes."""
    try:
        fn()
    except ClientError as exc:
        got_status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        got_code = exc.response.get("Error", {}).get("Code")
        ensure(
            got_status == status and got_code in codes,
            f"expected HTTP {status} {'/'.join(codes)}, got {describe_error(exc)}",
        )
        return
    raise CheckFailed(f"expected HTTP {status} {'/'.join(codes)}, but the call succeeded")


def mismatch(what, got, want):
    def show(v):
        if isinstance(v, (bytes, bytearray)):
            return f"{len(v)} bytes sha256 {sha256_hex(bytes(v))[:16]}"
        text = repr(v)
        return text if len(text) < 300 else text[:300] + "..."

    return f"{what}: got {show(got)}, want {show(want)}"


def compare_key_lists(what, got, want):
    if got == want:
        return
    if len(got) != len(set(got)):
        seen, dups = set(), []
        for k in got:
            if k in seen:
                dups.append(k)
            seen.add(k)
        raise CheckFailed(f"{what}: {len(dups)} key(s) listed more than once, e.g. {dups[:3]!r}")
    missing = [k for k in want if k not in set(got)]
    extra = [k for k in got if k not in set(want)]
    if missing or extra:
        raise CheckFailed(
            f"{what}: {len(got)} keys, want {len(want)}; missing {len(missing)} "
            f"(e.g. {missing[:3]!r}), unexpected {len(extra)} (e.g. {extra[:3]!r})"
        )
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise CheckFailed(
                f"{what}: not in UTF-8 byte order: position {i} is {g!r}, want {w!r} "
                f"(neighbours {got[max(0, i - 1):i + 2]!r})"
            )


# ---------------------------------------------------------------------------------------------
# the endpoint


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sluice s3 serve` over a temporary directory, on a free loopback port."""

    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="sluice-s3-conformance-")
        self.log_path = os.path.join(self.dir, "serve.log")
        self.data = os.path.join(self.dir, "data")
        port = free_port()
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "s3", "serve", "--dir", self.data, "--port", str(port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.endpoint = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"sluice s3 serve exited with {self.proc.returncode}:\n{self.log_text()}")
            first = self.log_text().split("\n", 1)[0]
            m = re.search(r"(http://\S+)", first)
            if m and "\n" in self.log_text():
                self.endpoint = m.group(1)
                break
            time.sleep(0.05)
        if not self.endpoint:
            self.stop()
            raise SystemExit(f"sluice s3 serve printed no endpoint within 30 s:\n{self.log_text()}")
        host, _, port_text = self.endpoint.split("//", 1)[1].partition(":")
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port_text.rstrip("/"))), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def make_client(endpoint, pool=10, read_timeout=20):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            max_pool_connections=pool,
            connect_timeout=10,
            read_timeout=read_timeout,
        ),
    )


# ---------------------------------------------------------------------------------------------
# the checks


class Conformance:
    def __init__(self, endpoint, seed, workdir, embedded):
        self.endpoint = endpoint
        self.embedded = embedded
        self.s3 = make_client(endpoint, pool=16)
        self.rng = random.Random(seed)
        self.work = workdir
        suffix = uuid.uuid4().hex[:10]
        self.bucket = f"conf-{suffix}"
        self.cli_bucket = f"conf-cli-{suffix}"
        self.results = []
        self.objects = {}  # key -> bytes, single PUTs in self.bucket
        self.state = {}
        self.cli_env = dict(os.environ)
        self.cli_env.update(
            {
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": os.path.join(workdir, "aws-config-none"),
                "AWS_SHARED_CREDENTIALS_FILE": os.path.join(workdir, "aws-credentials-none"),
                "AWS_MAX_ATTEMPTS": "1",
                "AWS_PAGER": "",
                "PYTHONIOENCODING": "utf-8",
                "LC_ALL": "C.UTF-8",
            }
        )
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            self.cli_env.pop(var, None)

    # -- plumbing ------------------------------------------------------------------------------

    def check(self, name, fn, *args):
        started = time.perf_counter()
        try:
            fn(*args)
        except CheckFailed as exc:
            self.results.append((name, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
            detail = describe_error(exc)
            if not isinstance(exc, ClientError):
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                detail += f" [at {os.path.basename(frame.filename)}:{frame.lineno}]"
            self.results.append((name, False, detail))
        else:
            self.results.append((name, True, ""))
        _, ok, why = self.results[-1]
        took = time.perf_counter() - started
        if ok:
            print(f"ok  {name}" + (f"  ({took:.1f}s)" if took >= 2 else ""), flush=True)
        else:
            print(f"FAIL {name}: {why}", flush=True)

    def need(self, key):
        if key not in self.state:
            raise CheckFailed(f"prerequisite failed ({key} was not set up)")
        return self.state[key]

    def aws(self, *args, timeout=180):
        cmd = ["aws", "--endpoint-url", self.endpoint, "--region", REGION, "--cli-read-timeout", "20", *args]
        proc = subprocess.run(
            cmd, env=self.cli_env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            shown = " ".join(args[:4])
            raise CheckFailed(f"`aws {shown} ...` exited {proc.returncode}: {err.strip()[-600:] or out.strip()[-600:]}")
        return out, err

    def random_bytes(self, n):
        return self.rng.randbytes(n)

    def get_bytes(self, bucket, key, **kw):
        resp = self.s3.get_object(Bucket=bucket, Key=key, **kw)
        return resp, resp["Body"].read()

    # -- buckets -------------------------------------------------------------------------------

    def create_bucket(self):
        resp = self.s3.create_bucket(Bucket=self.bucket)
        ensure(resp["ResponseMetadata"]["HTTPStatusCode"] == 200, f"status {resp['ResponseMetadata']['HTTPStatusCode']}")
        self.s3.head_bucket(Bucket=self.bucket)
        names = [b["Name"] for b in self.s3.list_buckets().get("Buckets", [])]
        ensure(self.bucket in names, f"list_buckets does not list {self.bucket}: {names}")
        self.state["bucket"] = True

    def create_bucket_cli(self):
        self.aws("s3", "mb", f"s3://{self.cli_bucket}")
        self.s3.head_bucket(Bucket=self.cli_bucket)
        self.state["cli_bucket"] = True

    def missing_bucket(self):
        expect_client_error(
            lambda: self.s3.get_object(Bucket=f"{self.bucket}-missing", Key="x"), 404, ("NoSuchBucket",)
        )
        expect_client_error(lambda: self.s3.head_bucket(Bucket=f"{self.bucket}-missing"), 404, ("404", "NoSuchBucket"))

    # -- single PUT / GET ----------------------------------------------------------------------

    def put_get(self, size):
        data = self.random_bytes(size)
        key = f"single/object-{size}.bin"
        resp = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        self.objects[key] = data
        self.state[f"etag-{size}"] = resp.get("ETag")
        got_resp, got = self.get_bytes(self.bucket, key)
        ensure(got == data, mismatch("GET body", got, data))
        ensure(got_resp.get("ContentLength") == size, mismatch("ContentLength", got_resp.get("ContentLength"), size))
        ensure(got_resp["ResponseMetadata"]["HTTPStatusCode"] == 200, f"GET status {got_resp['ResponseMetadata']['HTTPStatusCode']}")
        self.state[f"single-{size}"] = key

    def put_etag(self, size):
        key = self.need(f"single-{size}")
        want = f'"{md5_hex(self.objects[key])}"'
        etag = self.state.get(f"etag-{size}")
        ensure(etag == want, mismatch("PutObject ETag", etag, want))
        got_etag = self.s3.get_object(Bucket=self.bucket, Key=key)["ETag"]
        ensure(got_etag == want, mismatch("GetObject ETag", got_etag, want))

    def cli_put_get(self):
        data = self.random_bytes(KIB + 3)
        src = os.path.join(self.work, "cli-put.bin")
        dst = os.path.join(self.work, "cli-get.bin")
        with open(src, "wb") as f:
            f.write(data)
        out, _ = self.aws("s3api", "put-object", "--bucket", self.bucket, "--key", "cli/put-object.bin", "--body", src, "--output", "json")
        etag = json.loads(out).get("ETag")
        ensure(etag == f'"{md5_hex(data)}"', mismatch("put-object ETag", etag, f'"{md5_hex(data)}"'))
        out, _ = self.aws("s3api", "get-object", "--bucket", self.bucket, "--key", "cli/put-object.bin", dst, "--output", "json")
        meta = json.loads(out)
        with open(dst, "rb") as f:
            got = f.read()
        ensure(got == data, mismatch("get-object file", got, data))
        ensure(meta.get("ContentLength") == len(data), mismatch("get-object ContentLength", meta.get("ContentLength"), len(data)))
        ensure(meta.get("ETag") == etag, mismatch("get-object ETag", meta.get("ETag"), etag))

    def expect_continue_after_empty(self):
        # a file-like body makes botocore send "Expect: 100-continue", as `aws s3 cp/sync` do;
        # an empty object first, then objects with bodies, all on one kept-alive connection
        client = make_client(self.endpoint, pool=1, read_timeout=10)
        for i, size in enumerate((0, 100, 0, 5)):
            data = self.random_bytes(size)
            key = f"expect/{i}-{size}.bin"
            started = time.perf_counter()
            try:
                client.put_object(Bucket=self.bucket, Key=key, Body=io.BytesIO(data))
            except Exception as exc:  # noqa: BLE001
                raise CheckFailed(
                    f"PUT #{i + 1} of sizes 0, 100, 0, 5 B on one connection ({size} B) "
                    f"failed after {time.perf_counter() - started:.1f}s: {describe_error(exc)}"
                )
            _, got = self.get_bytes(self.bucket, key)
            ensure(got == data, mismatch(f"GET {key}", got, data))

    def error_body(self):
        raw = {}

        def grab(response_dict, **_):
            raw["body"] = response_dict.get("body") or b""

        self.s3.meta.events.register("before-parse.s3.GetObject", grab)
        try:
            expect_client_error(lambda: self.s3.get_object(Bucket=self.bucket, Key="never/there"), 404, ("NoSuchKey",))
        finally:
            self.s3.meta.events.unregister("before-parse.s3.GetObject", grab)
        body = raw.get("body", b"").decode("utf-8", "replace")
        ensure("<Code>NoSuchKey</Code>" in body, f"error body without <Code>NoSuchKey</Code>: {body[:300]!r}")
        ensure(re.search(r"<Message>[^<]+</Message>", body), f"error body without a <Message>: {body[:300]!r}")

    # -- ranges --------------------------------------------------------------------------------

    def range_get(self, spec, start, end):
        key = self.need(f"single-{5 * MIB + 1}")
        data = self.objects[key]
        size = len(data)
        start = start if start >= 0 else size + start
        end = size - 1 if end is None else min(end, size - 1)
        resp, got = self.get_bytes(self.bucket, key, Range=spec)
        want = data[start:end + 1]
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        ensure(status == 206, f"status {status}, want 206")
        ensure(got == want, mismatch(f"body for {spec}", got, want))
        ensure(resp.get("ContentLength") == len(want), mismatch("ContentLength", resp.get("ContentLength"), len(want)))
        want_range = f"bytes {start}-{end}/{size}"
        ensure(resp.get("ContentRange") == want_range, mismatch("Content-Range", resp.get("ContentRange"), want_range))

    def range_unsatisfiable(self):
        key = self.need(f"single-{5 * MIB + 1}")
        size = len(self.objects[key])
        expect_client_error(
            lambda: self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={size}-"), 416, ("InvalidRange",)
        )
        expect_client_error(
            lambda: self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={size + 10}-{size + 20}"),
            416,
            ("InvalidRange",),
        )

    def range_cli(self):
        key = self.need(f"single-{5 * MIB + 1}")
        data = self.objects[key]
        dst = os.path.join(self.work, "cli-range.bin")
        out, _ = self.aws("s3api", "get-object", "--bucket", self.bucket, "--key", key, "--range", "bytes=10-1000", dst, "--output", "json")
        meta = json.loads(out)
        with open(dst, "rb") as f:
            got = f.read()
        ensure(got == data[10:1001], mismatch("get-object --range body", got, data[10:1001]))
        want_range = f"bytes 10-1000/{len(data)}"
        ensure(meta.get("ContentRange") == want_range, mismatch("ContentRange", meta.get("ContentRange"), want_range))

    # -- HEAD ----------------------------------------------------------------------------------

    def head_metadata(self):
        data = self.random_bytes(3 * KIB + 5)
        key = "head/with-metadata.json"
        metadata = {"color": "blue", "owner-id": "42", "note": "Two words, and: punctuation!"}
        ctype = "application/x-sluice-test; charset=utf-8"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata, ContentType=ctype)
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        ensure(head.get("ContentLength") == len(data), mismatch("ContentLength", head.get("ContentLength"), len(data)))
        ensure(head.get("ETag") == f'"{md5_hex(data)}"', mismatch("ETag", head.get("ETag"), f'"{md5_hex(data)}"'))
        ensure(head.get("Metadata") == metadata, mismatch("Metadata", head.get("Metadata"), metadata))
        ensure(head.get("ContentType") == ctype, mismatch("ContentType", head.get("ContentType"), ctype))
        self.state["head-key"] = (key, metadata, ctype, data)

    def get_metadata(self):
        key, metadata, ctype, data = self.need("head-key")
        resp, got = self.get_bytes(self.bucket, key)
        ensure(got == data, mismatch("body", got, data))
        ensure(resp.get("Metadata") == metadata, mismatch("GET Metadata", resp.get("Metadata"), metadata))
        ensure(resp.get("ContentType") == ctype, mismatch("GET ContentType", resp.get("ContentType"), ctype))

    def copy_keeps(self):
        key, metadata, ctype, data = self.need("head-key")
        source = self.s3.head_object(Bucket=self.bucket, Key=key)
        self.s3.copy_object(Bucket=self.bucket, Key="copy/kept.json", CopySource={"Bucket": self.bucket, "Key": key})
        head = self.s3.head_object(Bucket=self.bucket, Key="copy/kept.json")
        ensure(head.get("ETag") == source.get("ETag"), mismatch("ETag", head.get("ETag"), source.get("ETag")))
        ensure(head.get("Metadata") == metadata, mismatch("Metadata", head.get("Metadata"), metadata))
        ensure(head.get("ContentType") == ctype, mismatch("ContentType", head.get("ContentType"), ctype))
        _, got = self.get_bytes(self.bucket, "copy/kept.json")
        ensure(got == data, mismatch("body", got, data))

    def copy_replaces(self):
        key, _, _, data = self.need("head-key")
        self.s3.copy_object(
            Bucket=self.bucket,
            Key="copy/replaced.json",
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata={"stage": "curated"},
            ContentType="application/json",
        )
        head = self.s3.head_object(Bucket=self.bucket, Key="copy/replaced.json")
        ensure(head.get("Metadata") == {"stage": "curated"}, mismatch("Metadata", head.get("Metadata"), {"stage": "curated"}))
        ensure(head.get("ContentType") == "application/json", mismatch("ContentType", head.get("ContentType"), "application/json"))
        ensure(head.get("ContentLength") == len(data), mismatch("ContentLength", head.get("ContentLength"), len(data)))

    def copy_conditions(self):
        key, _, _, _ = self.need("head-key")
        etag = self.s3.head_object(Bucket=self.bucket, Key=key)["ETag"]
        source = {"Bucket": self.bucket, "Key": key}
        expect_client_error(
            lambda: self.s3.copy_object(Bucket=self.bucket, Key="copy/never", CopySource=source, CopySourceIfMatch='"0123"'),
            412,
            ("PreconditionFailed",),
        )
        expect_client_error(
            lambda: self.s3.copy_object(Bucket=self.bucket, Key="copy/never", CopySource=source, CopySourceIfNoneMatch=etag),
            412,
            ("PreconditionFailed",),
        )
        expect_client_error(lambda: self.s3.head_object(Bucket=self.bucket, Key="copy/never"), 404, ("404", "NoSuchKey"))
        self.s3.copy_object(Bucket=self.bucket, Key="copy/matched", CopySource=source, CopySourceIfMatch=etag)
        expect_client_error(
            lambda: self.s3.copy_object(Bucket=self.bucket, Key=key, CopySource=source),
            400,
            ("InvalidRequest",),
        )

    def copy_cli(self):
        key, _, _, data = self.need("head-key")
        self.aws("s3", "cp", f"s3://{self.bucket}/{key}", f"s3://{self.bucket}/copy/by-cli.json")
        _, got = self.get_bytes(self.bucket, "copy/by-cli.json")
        ensure(got == data, mismatch("body", got, data))

    def full_length_key(self):
        # S3's longest key, 1,024 bytes, in segments a file system takes.
        key = "long/" + "/".join(c * 200 for c in "abcd") + "/"
        key += "e" * (1024 - len(key))
        ensure(len(key) == 1024, f"the key is {len(key)} bytes")
        data = self.random_bytes(2 * KIB + 1)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="text/plain")
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        ensure(head.get("ContentType") == "text/plain", mismatch("ContentType", head.get("ContentType"), "text/plain"))
        _, got = self.get_bytes(self.bucket, key)
        ensure(got == data, mismatch("body", got, data))
        copy = key[:-1] + "f"
        self.s3.copy_object(Bucket=self.bucket, Key=copy, CopySource={"Bucket": self.bucket, "Key": key})
        listed = [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket, Prefix="long/").get("Contents", [])]
        ensure(listed == [key, copy], mismatch("listed keys", listed, [key, copy]))
        for k in (key, copy):
            self.s3.delete_object(Bucket=self.bucket, Key=k)
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="long/").get("Contents", [])
        ensure(not listed, f"left after delete: {len(listed)} keys")

    def head_sizes(self):
        for size in (0, 1, KIB, 5 * MIB + 1):
            key = self.need(f"single-{size}")
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            ensure(head.get("ContentLength") == size, mismatch(f"{key} ContentLength", head.get("ContentLength"), size))
            want = f'"{md5_hex(self.objects[key])}"'
            ensure(head.get("ETag") == want, mismatch(f"{key} ETag", head.get("ETag"), want))

    def last_modified(self):
        key = self.need(f"single-{KIB}")
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        lm = head.get("LastModified")
        ensure(lm is not None, "no LastModified")
        skew = abs(time.time() - lm.timestamp())
        ensure(skew < 300, f"LastModified {lm.isoformat()} is {skew:.0f}s away from the client's clock")

    # -- multipart, low level ------------------------------------------------------------------

    def mpu_create(self):
        key = "multipart/low-level.bin"
        resp = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType="application/x-parts")
        upload_id = resp.get("UploadId")
        ensure(upload_id, f"no UploadId in {resp}")
        ensure(resp.get("Key") == key, mismatch("Key", resp.get("Key"), key))
        self.state["mpu"] = (key, upload_id)

    def mpu_upload_parts(self):
        key, upload_id = self.need("mpu")
        parts = [self.random_bytes(5 * MIB), self.random_bytes(5 * MIB), self.random_bytes(MIB + 7)]
        etags = []
        for number, body in enumerate(parts, 1):
            resp = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
            etags.append(resp.get("ETag"))
        self.state["mpu-parts"] = (parts, etags)
        if self.embedded:
            # Opaque digests: quoted, 32 hex digits, one per distinct part.
            shaped = [e for e in etags if re.fullmatch(r'"[0-9a-f]{32}"', e or "")]
            ensure(shaped == etags, f"UploadPart ETags are not quoted 128-bit hex digests: {etags}")
            ensure(len(set(etags)) == len(etags), f"distinct parts got equal ETags: {etags}")
        else:
            want = [f'"{md5_hex(p)}"' for p in parts]
            ensure(etags == want, mismatch("UploadPart ETags", etags, want))

    def mpu_list_parts(self):
        key, upload_id = self.need("mpu")
        parts, etags = self.need("mpu-parts")
        resp = self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id)
        got = [(p.get("PartNumber"), p.get("Size"), p.get("ETag")) for p in resp.get("Parts", [])]
        want = [(i + 1, len(p), e) for i, (p, e) in enumerate(zip(parts, etags))]
        ensure(got == want, mismatch("ListParts (number, size, etag)", got, want))
        ensure(resp.get("UploadId") == upload_id, mismatch("UploadId", resp.get("UploadId"), upload_id))

    def mpu_list_uploads(self):
        key, upload_id = self.need("mpu")
        resp = self.s3.list_multipart_uploads(Bucket=self.bucket)
        got = [(u.get("Key"), u.get("UploadId")) for u in resp.get("Uploads", [])]
        ensure((key, upload_id) in got, f"open upload {upload_id} of {key} not listed: {got}")

    def mpu_complete(self):
        key, upload_id = self.need("mpu")
        parts, etags = self.need("mpu-parts")
        resp = self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
        )
        etag = resp.get("ETag", "")
        self.state["mpu-etag"] = etag
        ensure(etag.strip('"').endswith("-3"), f"completed ETag {etag!r} does not end with -3")
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        ensure(head.get("ETag") == etag, mismatch("HEAD ETag after complete", head.get("ETag"), etag))
        ensure(head.get("ContentLength") == sum(map(len, parts)), mismatch("ContentLength", head.get("ContentLength"), sum(map(len, parts))))
        self.state["mpu-done"] = True

    def mpu_object_bytes(self):
        self.need("mpu-done")
        key, _ = self.need("mpu")
        parts, _ = self.need("mpu-parts")
        want = b"".join(parts)
        _, got = self.get_bytes(self.bucket, key)
        ensure(sha256_hex(got) == sha256_hex(want), mismatch("object", got, want))
        resp, got = self.get_bytes(self.bucket, key, Range=f"bytes={5 * MIB - 3}-{5 * MIB + 2}")
        ensure(got == want[5 * MIB - 3:5 * MIB + 3], mismatch("range across the part boundary", got, want[5 * MIB - 3:5 * MIB + 3]))

    def mpu_etag_exact(self):
        _, etags = self.need("mpu-parts")
        etag = self.need("mpu-etag")
        digests = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
        want = f'"{hashlib.md5(digests).hexdigest()}-3"'
        ensure(etag == want, mismatch("multipart ETag (MD5 of the parts' ETags)", etag, want))

    def mpu_abort(self):
        key = "multipart/aborted.bin"
        upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=self.random_bytes(64 * KIB))
        listed = [u.get("UploadId") for u in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]
        ensure(upload_id in listed, f"upload {upload_id} not listed before abort: {listed}")
        resp = self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        ensure(status == 204, f"AbortMultipartUpload status {status}, want 204")
        listed = [u.get("UploadId") for u in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]
        ensure(upload_id not in listed, f"upload {upload_id} still listed after abort")
        expect_client_error(
            lambda: self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id), 404, ("NoSuchUpload",)
        )
        expect_client_error(lambda: self.s3.head_object(Bucket=self.bucket, Key=key), 404, ("404", "NoSuchKey"))

    # -- multipart, high level -----------------------------------------------------------------

    def transfer_config(self):
        return TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)

    def upload_fileobj(self):
        data = self.random_bytes(23 * MIB + 12345)
        key = "transfer/upload_fileobj.bin"
        self.s3.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=self.transfer_config())
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        ensure(head.get("ContentLength") == len(data), mismatch("ContentLength", head.get("ContentLength"), len(data)))
        ensure(head.get("ETag", "").strip('"').endswith("-5"), f"ETag {head.get('ETag')!r} does not end with -5 (5 parts)")
        self.state["transfer"] = (key, data)

    def download_fileobj(self):
        key, data = self.need("transfer")
        buf = io.BytesIO()
        self.s3.download_fileobj(self.bucket, key, buf, Config=self.transfer_config())
        got = buf.getvalue()
        ensure(sha256_hex(got) == sha256_hex(data), mismatch("download_fileobj", got, data))

    def cli_cp_up(self):
        self.need("cli_bucket")
        data = self.random_bytes(23 * MIB + 777)
        src = os.path.join(self.work, "cp-up.bin")
        with open(src, "wb") as f:
            f.write(data)
        key = "cp/big.bin"
        self.aws("s3", "cp", "--no-progress", src, f"s3://{self.cli_bucket}/{key}")
        self.state["cp"] = (key, data)
        head = self.s3.head_object(Bucket=self.cli_bucket, Key=key)
        ensure(head.get("ContentLength") == len(data), mismatch("ContentLength", head.get("ContentLength"), len(data)))
        ensure(head.get("ETag", "").strip('"').endswith("-3"), f"ETag {head.get('ETag')!r} does not end with -3 (8 MiB parts)")
        _, got = self.get_bytes(self.cli_bucket, key)
        ensure(sha256_hex(got) == sha256_hex(data), mismatch("object after aws s3 cp", got, data))

    def cli_cp_down(self):
        key, data = self.need("cp")
        dst = os.path.join(self.work, "cp-down.bin")
        self.aws("s3", "cp", "--no-progress", f"s3://{self.cli_bucket}/{key}", dst)
        with open(dst, "rb") as f:
            got = f.read()
        ensure(sha256_hex(got) == sha256_hex(data), mismatch("file after aws s3 cp down", got, data))

    # -- listing -------------------------------------------------------------------------------

    @staticmethod
    def special_keys():
        return [
            # around the "dir" list/a/: '-' and '.' sort before '/', '0' and '_' after it
            "list/a-b",
            "list/a.b",
            "list/a0",
            "list/a_b",
            "list/b-",
            "list/c.txt",
            "list/Z-upper",
            "list/z-lower",
            "list/with space/file one.txt",
            "list/with space/two  spaces",
            "list/plus+sign/a+b=c.txt",
            "list/ünïcödé/ファイル.txt",
            "list/ünïcödé/naïve",
            "list/é-top",
            "list/emoji-😀",
            "list/special/percent%20literal",
            "list/special/amp&q?x=1",
            "list/special/tilde~hash#frag",
            "list/special/semi;colon,comma",
            "list/special/quote'dq\"",
            "list/special/<angle>",
            "list/special/paren (1) [2] {3}",
        ]

    def listing_keys(self):
        keys = []
        keys += [f"list/a/{i:04d}" for i in range(1200)]
        keys += [f"list/b/x/{i:04d}" for i in range(800)]
        keys += [f"list/b/y/{i:03d}.dat" for i in range(100)]
        keys += [f"list/b/direct-{i:03d}" for i in range(50)]
        keys += [f"list/c/{i:03d}/leaf" for i in range(300)]
        return keys + self.special_keys()

    def listing_put(self):
        keys = self.listing_keys()
        clients = [make_client(self.endpoint) for _ in range(8)]

        def put(i):
            key = keys[i]
            clients[i % len(clients)].put_object(Bucket=self.bucket, Key=key, Body=key.encode("utf-8"))

        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            for fut in [pool.submit(put, i) for i in range(len(keys))]:
                fut.result()
        self.state["listing"] = byte_order(keys)

    def listing_special_bodies(self):
        self.need("listing")
        for key in self.special_keys():
            _, got = self.get_bytes(self.bucket, key)
            ensure(got == key.encode("utf-8"), mismatch(f"GET {key!r}", got, key.encode("utf-8")))
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            ensure(head.get("ContentLength") == len(key.encode("utf-8")), f"HEAD {key!r}: ContentLength {head.get('ContentLength')}")

    def list_all(self, prefix, max_keys=1000, start_after=None, delimiter=None, check_pages=True):
        """Follows continuation tokens by hand; returns (keys, prefixes, page sizes)."""
        keys, prefixes, pages = [], [], []
        token = None
        for _ in range(10000):
            kw = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
            if token:
                kw["ContinuationToken"] = token
            if start_after:
                kw["StartAfter"] = start_after
            if delimiter:
                kw["Delimiter"] = delimiter
            resp = self.s3.list_objects_v2(**kw)
            page_keys = [o["Key"] for o in resp.get("Contents", [])]
            page_prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
            count = len(page_keys) + len(page_prefixes)
            pages.append(count)
            if check_pages:
                ensure(count <= max_keys, f"page {len(pages)} has {count} entries, MaxKeys={max_keys}")
                ensure(resp.get("KeyCount") == count, f"page {len(pages)}: KeyCount {resp.get('KeyCount')} but {count} entries")
            keys += page_keys
            prefixes += page_prefixes
            if not resp.get("IsTruncated"):
                break
            token = resp.get("NextContinuationToken")
            ensure(token, f"page {len(pages)} IsTruncated without NextContinuationToken")
            if check_pages:
                ensure(count == max_keys, f"truncated page {len(pages)} has {count} entries, want MaxKeys={max_keys}")
        else:
            raise CheckFailed("more than 10000 pages")
        return keys, prefixes, pages

    def list_v2_pages(self):
        want = self.need("listing")
        keys, _, pages = self.list_all("list/", max_keys=1000)
        compare_key_lists("list_objects_v2 MaxKeys=1000", keys, want)
        n = len(want)
        want_pages = [1000] * (n // 1000) + ([n % 1000] if n % 1000 else [])
        ensure(pages == want_pages, mismatch("page sizes", pages, want_pages))

    def expected_delimited(self, prefix):
        keys, prefixes = [], set()
        for k in self.need("listing"):
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            if "/" in rest:
                prefixes.add(prefix + rest.split("/", 1)[0] + "/")
            else:
                keys.append(k)
        return byte_order(keys), byte_order(prefixes)

    def list_delimiter(self, prefix, max_keys):
        want_keys, want_prefixes = self.expected_delimited(prefix)
        keys, prefixes, _ = self.list_all(prefix, max_keys=max_keys, delimiter="/")
        compare_key_lists(f"CommonPrefixes under {prefix}", prefixes, want_prefixes)
        compare_key_lists(f"Contents under {prefix}", keys, want_keys)

    def list_start_after(self, start_after):
        want = [k for k in self.need("listing") if k.encode("utf-8") > start_after.encode("utf-8")]
        keys, _, _ = self.list_all("list/", max_keys=1000, start_after=start_after)
        compare_key_lists(f"StartAfter={start_after!r}", keys, want)

    def list_paginator_v2(self):
        want = self.need("listing")
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="list/", PaginationConfig={"PageSize": 1000}):
            keys += [o["Key"] for o in page.get("Contents", [])]
        compare_key_lists("list_objects_v2 paginator", keys, want)

    def list_paginator_v1(self):
        want = self.need("listing")
        keys = []
        for page in self.s3.get_paginator("list_objects").paginate(Bucket=self.bucket, Prefix="list/", PaginationConfig={"PageSize": 1000}):
            keys += [o["Key"] for o in page.get("Contents", [])]
        compare_key_lists("list_objects (v1) paginator", keys, want)

    def list_entry_fields(self):
        self.need("listing")
        for op in ("list_objects_v2", "list_objects"):
            for page in self.s3.get_paginator(op).paginate(Bucket=self.bucket, Prefix="list/b/y/"):
                for o in page.get("Contents", []):
                    body = o["Key"].encode("utf-8")
                    got = (o.get("Size"), o.get("ETag"), o.get("LastModified") is not None)
                    want = (len(body), f'"{md5_hex(body)}"', True)
                    ensure(got == want, mismatch(f"{op} entry {o['Key']!r} (Size, ETag, has LastModified)", got, want))

    def list_encoding_url(self):
        self.need("listing")
        raw = {}

        def grab(response_dict, **_):
            raw["body"] = response_dict.get("body") or b""

        self.s3.meta.events.register("before-parse.s3.ListObjectsV2", grab)
        try:
            self.s3.list_objects_v2(Bucket=self.bucket, Prefix="list/plus+sign/", EncodingType="url")
        finally:
            self.s3.meta.events.unregister("before-parse.s3.ListObjectsV2", grab)
        body = raw.get("body", b"").decode("utf-8", "replace")
        ensure("<EncodingType>url</EncodingType>" in body, f"no <EncodingType>url</EncodingType> in {body[:400]!r}")
        keys = re.findall(r"<Key>([^<]*)</Key>", body)
        prefixes = re.findall(r"<Prefix>([^<]*)</Prefix>", body)
        want_key = "list/plus+sign/a+b=c.txt"
        decoded = [urllib.parse.unquote_plus(k) for k in keys]
        ensure(decoded == [want_key], f"<Key> values {keys!r} url-decode to {decoded!r}, want [{want_key!r}] (keys must be url-encoded when EncodingType=url)")
        ensure(
            [urllib.parse.unquote_plus(p) for p in prefixes[:1]] == ["list/plus+sign/"],
            f"<Prefix> {prefixes[:1]!r} does not url-decode to 'list/plus+sign/'",
        )

    def list_cli_ls(self):
        want = self.need("listing")
        out, _ = self.aws("s3", "ls", "--recursive", f"s3://{self.bucket}/list/")
        keys = []
        for line in out.splitlines():
            m = re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+ (.*)$", line)
            ensure(m, f"unexpected `aws s3 ls` line {line!r}")
            keys.append(m.group(1))
        compare_key_lists("aws s3 ls --recursive", keys, want)

    def list_cli_s3api(self):
        want = self.need("listing")
        out, _ = self.aws("s3api", "list-objects-v2", "--bucket", self.bucket, "--prefix", "list/", "--output", "json")
        keys = [o["Key"] for o in json.loads(out or "{}").get("Contents", [])]
        compare_key_lists("aws s3api list-objects-v2", keys, want)

    def key_and_prefix_refused(self):
        # Objects are files: "dual/x" as an object and "dual/x/y" cannot both exist.
        client = make_client(self.endpoint, pool=1)
        client.put_object(Bucket=self.bucket, Key="dual/x", Body=b"file x")
        expect_client_error(
            lambda: client.put_object(Bucket=self.bucket, Key="dual/x/y", Body=b"under x"), 400, ("InvalidArgument",)
        )
        try:
            client.put_object(Bucket=self.bucket, Key="dual/x/y", Body=b"under x")
        except ClientError as e:
            message = e.response.get("Error", {}).get("Message", "")
            ensure("dual/x/y" in message, f"the refusal does not name the key: {message!r}")
        _, got = self.get_bytes(self.bucket, "dual/x")
        ensure(got == b"file x", mismatch("GET 'dual/x' after the refusal", got, b"file x"))
        client.put_object(Bucket=self.bucket, Key="dual2/x/y", Body=b"under x")
        expect_client_error(
            lambda: client.put_object(Bucket=self.bucket, Key="dual2/x", Body=b"file x"), 400, ("InvalidArgument",)
        )

    def folder_marker_is_a_directory(self):
        client = make_client(self.endpoint, pool=1)
        client.put_object(Bucket=self.bucket, Key="marker/folder/", Body=b"")
        client.put_object(Bucket=self.bucket, Key="marker/folder/inner", Body=b"in")
        _, got = self.get_bytes(self.bucket, "marker/folder/inner")
        ensure(got == b"in", mismatch("GET 'marker/folder/inner'", got, b"in"))
        resp = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="marker/")
        keys = [o["Key"] for o in resp.get("Contents", [])]
        compare_key_lists("listing of marker/", keys, ["marker/folder/inner"])

    def coexisting_keys(self, prefix, bodies, want_delimited):
        # S3 keys are not paths: "p/x" and "p/x/y" coexist, and so do a "folder/" marker and its contents.
        # A client of its own, so that a connection a PUT here leaves unusable stays out of later checks
        # (an empty PUT and the next PUT on its connection are checked on their own above).
        client = make_client(self.endpoint, pool=1)
        for key, body in bodies.items():
            client.put_object(Bucket=self.bucket, Key=key, Body=body)
        for key, body in bodies.items():
            _, got = self.get_bytes(self.bucket, key)
            ensure(got == body, mismatch(f"GET {key!r}", got, body))
        resp = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        keys = [o["Key"] for o in resp.get("Contents", [])]
        compare_key_lists(f"listing of {prefix}", keys, byte_order(bodies))
        resp = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        got = ([o["Key"] for o in resp.get("Contents", [])], [p["Prefix"] for p in resp.get("CommonPrefixes", [])])
        ensure(got == want_delimited, mismatch(f"delimited listing of {prefix} (keys, prefixes)", got, want_delimited))

    # -- deletes -------------------------------------------------------------------------------

    def delete_one(self):
        self.need("listing")
        key = "list/c.txt"
        resp = self.s3.delete_object(Bucket=self.bucket, Key=key)
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        ensure(status == 204, f"DeleteObject status {status}, want 204")
        expect_client_error(lambda: self.s3.get_object(Bucket=self.bucket, Key=key), 404, ("NoSuchKey",))
        expect_client_error(lambda: self.s3.head_object(Bucket=self.bucket, Key=key), 404, ("404", "NoSuchKey"))
        self.state["listing"] = [k for k in self.state["listing"] if k != key]

    def delete_batch(self):
        self.need("listing")
        keys = [f"list/a/{i:04d}" for i in range(100)]
        resp = self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        errors = resp.get("Errors", [])
        ensure(not errors, f"{len(errors)} errors, e.g. {errors[:2]}")
        deleted = sorted(d["Key"] for d in resp.get("Deleted", []))
        ensure(deleted == sorted(keys), mismatch("Deleted keys", deleted, sorted(keys)))
        for key in (keys[0], keys[50], keys[99]):
            expect_client_error(lambda k=key: self.s3.get_object(Bucket=self.bucket, Key=k), 404, ("NoSuchKey",))
            expect_client_error(lambda k=key: self.s3.head_object(Bucket=self.bucket, Key=k), 404, ("404", "NoSuchKey"))
        gone = set(keys)
        self.state["listing"] = [k for k in self.state["listing"] if k not in gone]
        listed, _, _ = self.list_all("list/a/", max_keys=1000)
        want = [k for k in self.state["listing"] if k.startswith("list/a/")]
        compare_key_lists("list/a/ after the batch delete", listed, want)

    def delete_missing(self):
        resp = self.s3.delete_object(Bucket=self.bucket, Key="never/existed")
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        ensure(status == 204, f"DeleteObject of a missing key: status {status}, want 204")
        expect_client_error(lambda: self.s3.get_object(Bucket=self.bucket, Key="never/existed"), 404, ("NoSuchKey",))

    def cli_rm(self):
        key = self.need(f"single-{KIB}")
        self.aws("s3", "rm", f"s3://{self.bucket}/{key}")
        expect_client_error(lambda: self.s3.head_object(Bucket=self.bucket, Key=key), 404, ("404", "NoSuchKey"))

    # -- sync ----------------------------------------------------------------------------------

    def sync_tree(self):
        files = {
            "top.txt": b"top level\n",
            "empty.bin": b"",
            "nested/deeper/data.bin": self.random_bytes(100 * KIB + 3),
            "nested/small.csv": b"a,b\n1,2\n",
            "with space.txt": b"spaces in the name\n",
            "nested/ünï.txt": "unicode name\n".encode(),
            "plus+name.txt": b"plus\n",
        }
        for i in range(8):
            files[f"many/{i:02d}.bin"] = self.random_bytes(self.rng.randint(1, 20 * KIB))
        return files

    def read_tree(self, root):
        out = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
        return out

    def sync_up(self):
        self.need("cli_bucket")
        files = self.sync_tree()
        up = os.path.join(self.work, "sync-up")
        past = time.time() - 3600
        for rel, body in files.items():
            path = os.path.join(up, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(body)
            os.utime(path, (past, past))
        self.aws("s3", "sync", "--no-progress", up, f"s3://{self.cli_bucket}/sync/")
        self.state["sync"] = (up, files)
        listed = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.cli_bucket, Prefix="sync/"):
            for o in page.get("Contents", []):
                listed[o["Key"][len("sync/"):]] = o["Size"]
        want = {rel: len(body) for rel, body in files.items()}
        ensure(listed == want, mismatch("objects after sync up (name: size)", listed, want))
        for rel, body in files.items():
            _, got = self.get_bytes(self.cli_bucket, "sync/" + rel)
            ensure(got == body, mismatch(f"sync/{rel}", got, body))

    def sync_up_again(self):
        up, _ = self.need("sync")
        out, _ = self.aws("s3", "sync", "--no-progress", up, f"s3://{self.cli_bucket}/sync/")
        moved = [line for line in out.splitlines() if line.strip()]
        ensure(not moved, f"second sync up transferred again: {moved[:3]}")

    def sync_down(self):
        _, files = self.need("sync")
        down = os.path.join(self.work, "sync-down")
        self.aws("s3", "sync", "--no-progress", f"s3://{self.cli_bucket}/sync/", down)
        got = self.read_tree(down)
        ensure(sorted(got) == sorted(files), mismatch("files after sync down", sorted(got), sorted(files)))
        for rel, body in files.items():
            ensure(got[rel] == body, mismatch(rel, got[rel], body))
        self.state["sync-down"] = down

    def sync_down_again(self):
        down = self.need("sync-down")
        out, _ = self.aws("s3", "sync", "--no-progress", f"s3://{self.cli_bucket}/sync/", down)
        moved = [line for line in out.splitlines() if line.strip()]
        ensure(not moved, f"second sync down transferred again: {moved[:3]}")

    # -- buckets, removal ----------------------------------------------------------------------

    def empty_bucket(self, bucket):
        for up in self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            self.s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [o["Key"] for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            resp = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            errors = resp.get("Errors") or []
            ensure(not errors, f"delete_objects errors: {errors[:2]}")

    def delete_nonempty_bucket(self):
        self.need("bucket")
        expect_client_error(lambda: self.s3.delete_bucket(Bucket=self.bucket), 409, ("BucketNotEmpty",))

    def delete_bucket(self, bucket):
        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            raise CheckFailed(f"bucket {bucket} is already gone before emptying it: {describe_error(exc)}")
        self.empty_bucket(bucket)
        resp = self.s3.delete_bucket(Bucket=bucket)
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        ensure(status == 204, f"DeleteBucket status {status}, want 204")
        expect_client_error(lambda: self.s3.head_bucket(Bucket=bucket), 404, ("404", "NoSuchBucket"))

    # -- the run -------------------------------------------------------------------------------

    def run(self):
        c = self.check
        c("create_bucket (boto3), head_bucket, list_buckets", self.create_bucket)
        c("create bucket (aws s3 mb)", self.create_bucket_cli)
        c("missing bucket is NoSuchBucket / 404", self.missing_bucket)
        for size, label in ((0, "0 B"), (1, "1 B"), (KIB, "1 KiB"), (5 * MIB + 1, "5 MiB+1")):
            c(f"put_object/get_object {label} round trip", self.put_get, size)
            c(f"put_object {label} ETag is the quoted MD5", self.put_etag, size)
        c("aws s3api put-object/get-object 1 KiB+3", self.cli_put_get)
        c("PUT after a 0 B PUT on one kept-alive connection (Expect: 100-continue)", self.expect_continue_after_empty)
        c("error XML has Code and Message (NoSuchKey)", self.error_body)
        size = 5 * MIB + 1
        c("range bytes=0-0", self.range_get, "bytes=0-0", 0, 0)
        c("range bytes=10-1000", self.range_get, "bytes=10-1000", 10, 1000)
        c("range bytes=-100 (last 100)", self.range_get, "bytes=-100", -100, None)
        c(f"range bytes={size - 12345}- (open-ended)", self.range_get, f"bytes={size - 12345}-", size - 12345, None)
        c("range end past the size is clipped", self.range_get, f"bytes={size - 10}-{size + 1000}", size - 10, size + 1000)
        c("unsatisfiable range is 416 InvalidRange", self.range_unsatisfiable)
        c("aws s3api get-object --range bytes=10-1000", self.range_cli)
        c("head_object ContentLength/ETag/Metadata/ContentType", self.head_metadata)
        c("get_object returns Metadata/ContentType", self.get_metadata)
        c("copy_object keeps bytes, ETag, Metadata and ContentType", self.copy_keeps)
        c("copy_object MetadataDirective=REPLACE replaces them", self.copy_replaces)
        c("copy_object CopySourceIf(None)Match is 412; a copy onto itself is 400", self.copy_conditions)
        c("aws s3 cp s3:// to s3://", self.copy_cli)
        c("a 1,024-byte key: put, head, get, copy, list, delete", self.full_length_key)
        c("head_object of 0 B..5 MiB+1 objects", self.head_sizes)
        c("LastModified is close to now", self.last_modified)
        c("multipart: create_multipart_upload", self.mpu_create)
        c("multipart: upload_part x3, ETags are part MD5s", self.mpu_upload_parts)
        c("multipart: list_parts", self.mpu_list_parts)
        c("multipart: list_multipart_uploads shows the open upload", self.mpu_list_uploads)
        c("multipart: complete_multipart_upload, ETag ends with -3", self.mpu_complete)
        c("multipart: object equals the concatenation of the parts", self.mpu_object_bytes)
        c("multipart: ETag is the MD5 of the part MD5s, -3", self.mpu_etag_exact)
        c("multipart: abort removes the upload and its parts", self.mpu_abort)
        c("boto3 upload_fileobj 23 MiB in 5 MiB parts", self.upload_fileobj)
        c("boto3 download_fileobj 23 MiB in 5 MiB ranges", self.download_fileobj)
        c("aws s3 cp up 23 MiB (multipart)", self.cli_cp_up)
        c("aws s3 cp down 23 MiB", self.cli_cp_down)
        c(f"put {len(self.listing_keys())} listing keys (8 threads)", self.listing_put)
        c("keys with spaces, +, unicode, specials read back", self.listing_special_bodies)
        c("list_objects_v2 MaxKeys=1000 + continuation tokens, byte order", self.list_v2_pages)
        c("list_objects_v2 Delimiter='/' at list/", self.list_delimiter, "list/", 1000)
        c("list_objects_v2 Delimiter='/' at list/b/", self.list_delimiter, "list/b/", 1000)
        c("list_objects_v2 Delimiter='/' at list/ with MaxKeys=3 pages", self.list_delimiter, "list/", 3)
        c("list_objects_v2 StartAfter=list/a/0599", self.list_start_after, "list/a/0599")
        c("list_objects_v2 StartAfter=list/a-c (absent key)", self.list_start_after, "list/a-c")
        c("boto3 list_objects_v2 paginator", self.list_paginator_v2)
        c("boto3 list_objects (v1) paginator", self.list_paginator_v1)
        c("listing entries carry Size, ETag, LastModified (v2 and v1)", self.list_entry_fields)
        c("list_objects_v2 EncodingType=url: keys url-encoded in the XML", self.list_encoding_url)
        c("aws s3 ls --recursive", self.list_cli_ls)
        c("aws s3api list-objects-v2", self.list_cli_s3api)
        if self.embedded:
            c("a key that is also a prefix is refused, naming the key", self.key_and_prefix_refused)
            c("a 'folder/' marker is a directory beside folder/inner", self.folder_marker_is_a_directory)
        else:
            c("keys dual/x and dual/x/y coexist", self.coexisting_keys, "dual/", {"dual/x": b"file x", "dual/x/y": b"under x"}, (["dual/x"], ["dual/x/"]))
            c("0-byte 'folder/' marker key beside folder/inner", self.coexisting_keys, "marker/", {"marker/folder/inner": b"in", "marker/folder/": b""}, ([], ["marker/folder/"]))
        c("delete_object, then get is NoSuchKey and head is 404", self.delete_one)
        c("delete_objects batch of 100", self.delete_batch)
        c("delete_object of a missing key is 204", self.delete_missing)
        c("aws s3 rm", self.cli_rm)
        c("aws s3 sync up", self.sync_up)
        c("aws s3 sync up again transfers nothing", self.sync_up_again)
        c("aws s3 sync down, files equal", self.sync_down)
        c("aws s3 sync down again transfers nothing", self.sync_down_again)
        c("delete_bucket of a non-empty bucket is 409 BucketNotEmpty", self.delete_nonempty_bucket)
        c("empty and delete_bucket (boto3)", self.delete_bucket, self.bucket)
        c("empty and delete_bucket (cli bucket)", self.delete_bucket, self.cli_bucket)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--sluice", help="path to the sluice binary; its `s3 serve` is started and stopped")
    target.add_argument("--endpoint", help="URL of an already running S3 endpoint on loopback")
    parser.add_argument("--embedded", action="store_true", help="the endpoint is sluice's embedded server (implied by --sluice)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the random content")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (and the server log)")
    args = parser.parse_args()
    if shutil.which("aws") is None:
        raise SystemExit("the aws CLI is not on PATH: python3 -m pip install awscli")

    server = None
    work = tempfile.mkdtemp(prefix="s3-conformance-work-")
    started = time.perf_counter()
    try:
        if args.sluice:
            server = Server(os.path.abspath(args.sluice))
            endpoint = server.endpoint
            print(f"# sluice s3 serve at {endpoint} over {server.data}", flush=True)
        else:
            endpoint = args.endpoint.rstrip("/")
            print(f"# endpoint {endpoint}", flush=True)
        conf = Conformance(endpoint, args.seed, work, embedded=bool(args.sluice) or args.embedded)
        conf.run()
    finally:
        if server:
            server.stop()
            if not args.keep:
                server.remove()
            else:
                print(f"# kept {server.dir} (server log: {server.log_path})", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    passed = sum(1 for _, ok, _ in conf.results if ok)
    failed = [name for name, ok, _ in conf.results if not ok]
    print(f"# {time.perf_counter() - started:.1f}s; failed: {', '.join(failed) if failed else 'none'}")
    print(f"{passed} passed, {len(failed)} failed")
    sys.exit(0 if not failed and passed else 1)


if __name__ == "__main__":
    main()
