#!/usr/bin/env python3
"""Times DuckDB's CSV -> Parquet conversion of the file `sluice bench` generates, with the
same typed timestamps and zstd compression, so both can be compared on one machine.

    python3 -m pip install duckdb
    python3 tests/bench/duckdb_csv_to_parquet.py .sluice/s3/bench/taxi-1024mib.csv
"""
import os
import resource
import sys
import tempfile
import time

import duckdb


def main() -> None:
    path = sys.argv[1]
    size = os.path.getsize(path)
    out = os.path.join(tempfile.gettempdir(), "sluice-bench-duckdb.parquet")
    for threads in (1, 2):
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
        print(
            f"duckdb {duckdb.__version__}, {threads} thread(s): "
            f"{size / 1e6 / elapsed:7.1f} MB/s ({elapsed:.2f}s, "
            f"{os.path.getsize(out) / 2**20:.1f} MiB of Parquet)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"duckdb peak RSS: {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
