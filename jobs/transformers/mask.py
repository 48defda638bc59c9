#!/usr/bin/env python3
"""Pseudonymize fields of JSON-lines records: a sluice transformer on the standard library only.

Every record (one JSON object per line) keeps its keys in their order; the value of each
field named in MASK_FIELDS that is present and not null becomes the first 16 hex digits of
sha256(MASK_SALT + value). A string value is hashed as it is, any other value as its
compact JSON text (42 -> "42"). Output is one compact JSON object per line, non-ASCII
characters as UTF-8; empty lines are skipped. Records are re-serialized by Python's json
module, so numbers come out as Python writes them (1e3 -> 1000.0).

Environment:
    MASK_FIELDS   comma-separated field names (default: email)
    MASK_SALT     prepended to every value before hashing (default: empty)
    SLUICE_KEY    the object key, for the log line (io mode; HTTP modes read X-Sluice-Key)

Modes (the four transformer communication types of docs/transformers.md):
    mask.py --comm hpush --port 8080 [--path /]
        POST /: the request body is the object; the response body is the result.
    mask.py --comm hpull --port 8080 [--path /]
        GET /?url=<percent-encoded URL>: the object is fetched from that URL (the worker's
        loopback endpoint); the response body is the result.
    mask.py --comm hrev --port 8080 [--path /]
        GET <path>/<object key>, with the object's URL in X-Sluice-Url: the object is
        fetched from that URL (the worker's loopback endpoint), as a reverse proxy forwards
        a request for the object; the response body is the result.
    mask.py --comm io
        One process per object: the object on stdin, the result on stdout.

The HTTP modes listen on 127.0.0.1 only and answer GET /health with 200 once listening.
Request bodies may be chunked or have a Content-Length; responses are chunked and
streamed. A body that is not JSON lines gets 400 naming the line, other paths 404.
Up to 1 MiB of output is held back before the status is sent, so that a bad line in a
small object gets a clean 400; past that a bad line aborts the response (the worker then
sees a broken reply, never a partial object taken for a whole one).
"""

import argparse
import hashlib
import http.client
import http.server
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request

READ_SIZE = 64 * 1024
HOLD_BACK = 1 << 20
MAX_LINE = 64 * 1024  # of a chunk-size or trailer line
# The object URL is on loopback: an HTTP_PROXY from the environment must not apply.
FETCH = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BadInput(Exception):
    """The object is not JSON lines: the worker does not retry it (400 / exit 1)."""


class BadRequest(Exception):
    """The HTTP request itself is malformed (400)."""


def pseudonym(value, salt):
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return hashlib.sha256((salt + text).encode("utf-8")).hexdigest()[:16]


def lines_of(chunks):
    """Yields the lines (without b"\\n") of a stream of byte chunks."""
    pending = []  # pieces of a line that is not complete yet
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        parts[0] = b"".join(pending) + parts[0]
        pending = [parts.pop()]
        yield from parts
    last = b"".join(pending)
    if last:
        yield last


def mask(chunks, fields, salt, stats):
    """Yields the masked output, one encoded line at a time."""
    for number, line in enumerate(lines_of(chunks), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput(f"line {number}: not UTF-8") from None
        except json.JSONDecodeError as error:
            raise BadInput(f"line {number}: not JSON: {error.msg} at column {error.colno}") from None
        if not isinstance(record, dict):
            raise BadInput(f"line {number}: not a JSON object")
        for field in fields:
            if record.get(field) is not None:
                record[field] = pseudonym(record[field], salt)
                stats["masked"] += 1
        stats["records"] += 1
        out = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        yield out.encode("utf-8")


def settings():
    fields = [f.strip() for f in os.environ.get("MASK_FIELDS", "email").split(",") if f.strip()]
    return fields, os.environ.get("MASK_SALT", "")


def log(key, comm, stats, started, error=None):
    outcome = f"failed: {error}" if error else "ok"
    print(
        f"mask: {comm} key={key!r} records={stats['records']} masked={stats['masked']} "
        f"bytes_in={stats['bytes_in']} bytes_out={stats['bytes_out']} "
        f"ms={int((time.monotonic() - started) * 1000)} {outcome}",
        file=sys.stderr,
        flush=True,
    )


def counted(chunks, stats):
    for chunk in chunks:
        stats["bytes_in"] += len(chunk)
        yield chunk


def run_io():
    key = os.environ.get("SLUICE_KEY", "")
    fields, salt = settings()
    stats = dict(records=0, masked=0, bytes_in=0, bytes_out=0)
    started = time.monotonic()
    stdin = iter(lambda: sys.stdin.buffer.read1(READ_SIZE), b"")
    try:
        for line in mask(counted(stdin, stats), fields, salt, stats):
            sys.stdout.buffer.write(line)
            stats["bytes_out"] += len(line)
        sys.stdout.buffer.flush()
    except BadInput as error:
        log(key, "io", stats, started, error)
        return 1
    log(key, "io", stats, started)
    return 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    comm = "hpush"
    path_served = "/"

    def log_message(self, format, *args):
        pass  # one line per object instead, from log()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            self.send_text(200, "ok")
        elif url.path == self.path_served and self.comm == "hpull":
            self.hpull(url.query)
        elif self.comm == "hrev" and url.path.startswith(self.path_served.rstrip("/") + "/"):
            self.hrev(url.path)
        else:
            self.refuse(url.path)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == self.path_served and self.comm == "hpush":
            key = urllib.parse.unquote(self.headers.get("X-Sluice-Key", ""))
            self.transform(key, self.request_body(), fetched=False)
        else:
            self.drain_rest(self.request_body())
            self.refuse(url.path)

    def refuse(self, path):
        if path in ("/health", self.path_served):
            self.send_text(405, f"{self.command} {path}: method not allowed ({self.comm})\n")
        else:
            self.send_text(404, f"no such path: {path}\n")

    def hpull(self, query):
        key = urllib.parse.unquote(self.headers.get("X-Sluice-Key", ""))
        url = None
        for pair in query.split("&"):
            if pair.startswith("url="):
                # Plain percent-decoding: a "+" in the URL stays a "+".
                url = urllib.parse.unquote(pair[len("url="):])
        url = url or self.headers.get("X-Sluice-Url")
        if not url:
            return self.send_text(400, "GET needs ?url=<percent-encoded URL> (hpull)\n")
        self.fetch_and_transform(key, url)

    def hrev(self, path):
        # The object's own key is the rest of the path; the worker says where to fetch it.
        key = urllib.parse.unquote(path[len(self.path_served.rstrip("/")) + 1:])
        url = self.headers.get("X-Sluice-Url")
        if not url:
            return self.send_text(400, f"GET {path} needs the X-Sluice-Url header (hrev)\n")
        self.fetch_and_transform(key, url)

    def fetch_and_transform(self, key, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            return self.send_text(400, f"{self.comm} fetches plain http on loopback only: {url}\n")
        try:
            reply = FETCH.open(url, timeout=60)
        except (OSError, http.client.HTTPException) as error:  # URLError, HTTPError too
            return self.send_text(502, f"GET {url}: {error}\n")  # the worker retries
        with reply:
            self.transform(key or url, iter(lambda: reply.read1(READ_SIZE), b""), fetched=True)

    def transform(self, key, chunks, fetched):
        fields, salt = settings()
        stats = dict(records=0, masked=0, bytes_in=0, bytes_out=0)
        started = time.monotonic()
        held, held_len, sent = [], 0, False
        try:
            for line in mask(counted(chunks, stats), fields, salt, stats):
                held.append(line)
                held_len += len(line)
                # Until the status is sent, up to HOLD_BACK; then a pipe-sized piece at a time.
                if held_len >= (READ_SIZE if sent else HOLD_BACK):
                    if not sent:
                        self.start_chunked()
                        sent = True
                    self.write_chunk(b"".join(held), stats)
                    held, held_len = [], 0
        except (BadInput, BadRequest, OSError, http.client.HTTPException) as error:
            log(key, self.comm, stats, started, error)
            if sent:
                # The status is out: only closing without the last chunk can say "failed".
                self.close_connection = True
            elif isinstance(error, BadInput):
                if not fetched:
                    self.drain_rest(chunks)  # so the worker sees the 400, not a reset
                self.send_text(400, f"{error}\n")
            elif isinstance(error, BadRequest):
                self.close_connection = True
                self.send_text(400, f"{error}\n")
            elif fetched:
                self.send_text(502, f"reading the object: {error}\n")  # the worker retries
            else:
                self.close_connection = True  # the worker went away mid-request
            return
        if not sent:
            self.start_chunked()
        if held:
            self.write_chunk(b"".join(held), stats)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        log(key, self.comm, stats, started)

    def start_chunked(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data, stats):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        stats["bytes_out"] += len(data)

    def send_text(self, status, text):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def request_body(self):
        """The request body as a stream of chunks: http.server does not decode chunked
        transfer encoding, so it is done here."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self.chunked_body()
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        yield from self.sized_body(length)

    def sized_body(self, length):
        while length > 0:
            data = self.rfile.read1(min(length, READ_SIZE))
            if not data:
                raise BadRequest("the request body ended early")
            length -= len(data)
            yield data

    def chunked_body(self):
        while True:
            size_line = self.rfile.readline(MAX_LINE)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)  # chunk extensions ignored
            except ValueError:
                size = -1
            if size < 0:
                raise BadRequest(f"bad chunk size line {size_line[:40]!r}")
            if size == 0:
                break
            yield from self.sized_body(size)
            if self.rfile.readline(MAX_LINE).strip():
                raise BadRequest("a chunk does not end with CRLF")
        while self.rfile.readline(MAX_LINE).strip():
            pass  # trailer fields, up to the empty line

    def drain_rest(self, chunks):
        try:
            for _ in chunks:
                pass
        except (BadRequest, OSError):
            self.close_connection = True


def serve(comm, port, path):
    handler = type("MaskHandler", (Handler,), dict(comm=comm, path_served=path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True

    def stop(signum, frame):
        # shutdown() waits for serve_forever(), which runs in this very thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    fields, _ = settings()
    print(
        f"mask: {comm} on http://127.0.0.1:{server.server_port}{path} masking {','.join(fields)}",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()
    server.server_close()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comm", choices=["hpush", "hpull", "hrev", "io"], required=True)
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (hpush, hpull, hrev)")
    parser.add_argument("--path", default="/", help="the path of the object requests (default /)")
    args = parser.parse_args()
    if args.comm == "io":
        return run_io()
    if args.port is None:
        parser.error(f"--comm {args.comm} needs --port")
    return serve(args.comm, args.port, args.path)


if __name__ == "__main__":
    sys.exit(main())
