#!/usr/bin/env bash
# Splitting at scale: one generated 1 GiB CSV (quoted commas, doubled quotes, CRLF and LF
# line ends) converted to CSV twice on the embedded S3 server, once split into ranges
# (split_size 64MiB, 4 shards) and once whole (split_size off); then compares the record
# counts of both manifests and a checksum of the outputs' content (the split run's parts
# concatenated in order against the whole run's object), and prints the figures.
#
#   cargo build --release && bash tests/bench/split_check.sh
#
# SLUICE overrides the binary (default target/release/sluice), MIB the input size (1024),
# WORK the scratch directory (target/tmp/split-check; its s3/ is the embedded bucket store).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SLUICE:-target/release/sluice}
MIB=${MIB:-1024}
WORK=${WORK:-target/tmp/split-check}
S3="$WORK/s3"
[ -x "$BIN" ] || { echo "no $BIN: build it with cargo build --release" >&2; exit 2; }
rm -rf "$S3/splitcheck-out"
mkdir -p "$S3/splitcheck/in" "$S3/splitcheck-out"
INPUT="$S3/splitcheck/in/big.csv"
if [ "$(stat -c %s "$INPUT" 2>/dev/null || echo 0)" -lt $((MIB << 20)) ]; then
  echo "generating $INPUT ($MIB MiB) ..."
  # 16 MiB of distinct rows, then that block repeated: fast to make, and every byte of
  # it still has to be decoded, split and checked.
  python3 - "$INPUT.block" <<'PY'
import random, sys
rng = random.Random(42)
rows, written, i = [], 0, 0
while written < 16 << 20:
    kind = rng.randrange(4)
    if kind == 0:
        name = f'"rider {i}, the ""best"""'
    elif kind == 1:
        name = f'"plain {i}"'
    elif kind == 2:
        name = f"rider-{rng.randrange(100000)}"
    else:
        name = ""
    end = "\r\n" if rng.randrange(3) == 0 else "\n"
    row = f"{i},{name},city-{rng.randrange(500)},{rng.randrange(100000) / 100},note {rng.getrandbits(48):x}{end}"
    rows.append(row)
    written += len(row)
    i += 1
with open(sys.argv[1], "w", newline="") as f:
    f.write("".join(rows))
PY
  { printf 'id,name,city,fare,note\r\n'; for _ in $(seq $((MIB / 16))); do cat "$INPUT.block"; done; } > "$INPUT"
  rm -f "$INPUT.block"
fi
SIZE=$(stat -c %s "$INPUT")

job() { # name split_size out
  cat > "$WORK/$1.yaml" <<YAML
apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: $1
spec:
  source:
    uri: s3://splitcheck/in/
    format: csv
    schema:
      - { name: id, type: int64 }
      - { name: name, type: string }
      - { name: city, type: string }
      - { name: fare, type: float64 }
      - { name: note, type: string }
  sink:
    uri: s3://splitcheck-out/$3/
    format: csv
    csv: { header: false }
    max_object_size: 4GiB
  parallelism: 2
  shards: 4
  split_size: $2
  retries: 0
YAML
}
job split-on 64MiB split
job split-off off whole

run() { # name
  local start end
  start=$(date +%s.%N)
  "$BIN" run "$WORK/$1.yaml" --run-id "$1" --embedded-dir "$S3" >"$WORK/$1.out" 2>"$WORK/$1.err" \
    || { echo "sluice run $1 failed:"; tail -20 "$WORK/$1.err"; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
echo "input: $INPUT ($SIZE bytes)"
T_SPLIT=$(run split-on)
T_WHOLE=$(run split-off)

python3 - "$S3" "$SIZE" "$T_SPLIT" "$T_WHOLE" <<'PY'
import json, os, sys, zlib
s3, size, t_split, t_whole = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def manifest(job):
    with open(f"{s3}/splitcheck-out/_sluice/runs/{job}/{job}/_SUCCESS.json") as f:
        return json.load(f)
def plan(job):
    with open(f"{s3}/splitcheck-out/_sluice/runs/{job}/{job}/plan.json") as f:
        return json.load(f)
def crc(paths):
    c, n = 0, 0
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(8 << 20):
                c = zlib.crc32(chunk, c)
                n += chunk.count(b"\n")
    return c, n
def local(uri):
    return os.path.join(s3, uri[len("s3://"):])
on, off = manifest("split-on"), manifest("split-off")
p = plan("split-on")
ranges = [o for s in p["shards"] for o in s["objects"]]
shards = sum(1 for s in p["shards"] if s["objects"])
on_paths = [local(o["uri"]) for o in sorted(on["outputs"], key=lambda o: o["uri"])]
off_paths = [local(o["uri"]) for o in off["outputs"]]
crc_on, lines_on = crc(on_paths)
crc_off, lines_off = crc(off_paths)
print(f"split  (split_size 64MiB): {len(ranges)} ranges over {shards} shards, {len(on_paths)} outputs, "
      f"{on['records']['output']} records, {t_split:.1f}s ({size / t_split / 1e6:.1f} MB/s)")
print(f"whole  (split_size off):   1 task, {len(off_paths)} output(s), "
      f"{off['records']['output']} records, {t_whole:.1f}s ({size / t_whole / 1e6:.1f} MB/s)")
print(f"records: split {on['records']['output']} / whole {off['records']['output']} (input {on['records']['input']} / {off['records']['input']}); output lines {lines_on} / {lines_off}")
print(f"content CRC32 of the outputs: split {crc_on:08x} / whole {crc_off:08x}")
ok = (on["records"] == off["records"] and crc_on == crc_off and lines_on == lines_off
      and on["records"]["output"] == lines_on)
print("MATCH" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
PY
