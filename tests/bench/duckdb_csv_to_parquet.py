#!/usr/bin/env python3
"""Times DuckDB's CSV -> Parquet conversion of the file `sluice bench` generates, with the
same typed timestamps and zstd compression, so both can be compared on one machine.

    python3 -m pip install duckdb
    python3 tests/bench/duckdb_csv_to_parquet.py .sluice/s3/bench/taxi-1024mib.csv
    python3 tests/bench/duckdb_csv_to_parquet.py .sluice/s3/bench/taxi-1024mib.csv --json [--threads 2]

Without flags it runs with 1 then 2 threads and prints one human line per run and the peak RSS.
--threads N runs only with N threads. --json sends the human lines to stderr and prints, last,
exactly one JSON line on stdout:
    {"tool": "duckdb", "version": ..., "runs": [{"threads": 1, "seconds": ...}, ...],
     "input_bytes": ..., "peak_rss_mib": ...}
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import duckdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the CSV file to convert")
    parser.add_argument("--json", action="store_true", help="human lines to stderr, one JSON line on stdout")
    parser.add_argument("--threads", type=int, help="run only with this many threads (default: 1, then 2)")
    args = parser.parse_args()
    human = sys.stderr if args.json else sys.stdout

    path = args.path
    size = os.path.getsize(path)
    out = os.path.join(tempfile.gettempdir(), "sluice-bench-duckdb.parquet")
    runs = []
    for threads in (args.threads,) if args.threads else (1, 2):
        con = duckdb.connect()
        con.execute(f"SET threads={threads}")
        started = time.perf_counter()
        con.execute(
            f"COPY (SELECT * FROM read_csv('{path}', header=true, "
            f"timestampformat='%Y-%m-%d %H:%M:%S')) "
            f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
        )
        elapsed = time.perf_counter() - started
        con.close()
        runs.append({"threads": threads, "seconds": round(elapsed, 4)})
        print(
            f"duckdb {duckdb.__version__}, {threads} thread(s): "
            f"{size / 1e6 / elapsed:7.1f} MB/s ({elapsed:.2f}s, "
            f"{os.path.getsize(out) / 2**20:.1f} MiB of Parquet)",
            file=human,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"duckdb peak RSS: {peak / 1024:.0f} MiB", file=human)
    if args.json:
        print(
            json.dumps(
                {
                    "tool": "duckdb",
                    "version": duckdb.__version__,
                    "runs": runs,
                    "input_bytes": size,
                    "peak_rss_mib": round(peak / 1024, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
