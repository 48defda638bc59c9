#!/usr/bin/env bash
# The scheduler on the wall clock, against the embedded default: the main example job on a
# schedule that fires every minute. The scheduler runs until it fired on time, is stopped for
# three fires, is started again, and must run the three missed fires in order, each once,
# then go on firing on time. Prints what each fire did and how late it started.
#
#   bash tests/bench/scheduler_downtime.sh [path/to/sluice]     (about 7 minutes)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sluice=$(realpath "${1:-$root/target/release/sluice}")
[ -x "$sluice" ] || { echo "no sluice binary at $sluice (cargo build --release)" >&2; exit 2; }

work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill -INT "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
mkdir -p jobs schedules
cp "$root/jobs/taxi-csv-to-parquet.yaml" jobs/
cat > schedules/taxi-minutely.yaml <<'EOF'
apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata:
  name: taxi-minutely
spec:
  cron: "* * * * *"
  timeZone: Europe/Berlin
  target: ../jobs/taxi-csv-to-parquet.yaml
  params:
    month: "2026-01"
  concurrencyPolicy: Forbid
  catchUp:
    maxRuns: 5
EOF
# The demo data (the month 2026-01 in s3://raw/trips/) on the embedded server in .sluice/s3.
"$sluice" demo >/dev/null 2>demo.log
history=.sluice/s3/curated/_sluice/schedules/taxi-minutely/history

wait_for_fires() { # N: wait until the history holds N succeeded fires
  local n=$1 deadline=$((SECONDS + 240))
  until [ "$(grep -l '"status": "succeeded"' "$history"/*.json 2>/dev/null | wc -l)" -ge "$n" ]; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $n fires" >&2; cat scheduler.log >&2; exit 1; }
    sleep 2
  done
}

# Start just after a minute turned, so that the first fire ends well before the next one.
sleep $(( 62 - $(date -u +%s) % 60 ))
echo "== started $(date -u +%H:%M:%S)"
"$sluice" scheduler --schedules schedules --listen 127.0.0.1:0 >>scheduler.log 2>&1 &
pid=$!
wait_for_fires 1
kill -INT $pid; wait $pid || true
stopped=$(date -u +%s)
echo "== stopped $(date -u +%H:%M:%S) after 1 fire; down for three fires"
# Restart in the second minute after the third missed fire, so that exactly three were missed.
sleep $(( (60 - $(date -u +%s) % 60) + 120 + 20 ))
restarted=$(date -u +%s)
echo "== restarted $(date -u +%H:%M:%S) ($(( restarted - stopped )) s down)"
"$sluice" scheduler --schedules schedules --listen 127.0.0.1:0 >>scheduler.log 2>&1 &
pid=$!
wait_for_fires 5
kill -INT $pid; wait $pid || true
pid=
echo "== stopped $(date -u +%H:%M:%S)"

python3 - "$history" "$restarted" <<'EOF'
import glob, json, sys
from datetime import datetime
restart = float(sys.argv[2])
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
records = sorted((json.load(open(p)) for p in glob.glob(sys.argv[1] + "/*.json")),
                 key=lambda r: r["scheduled_time"])
print(f"{'run id':<40} {'trigger':<9} {'status':<10} {'lag s':>6}")
for r in records:
    print(f"{r['run_id']:<40} {r['trigger']:<9} {r['status']:<10} {r['lag_seconds']:>6.1f}")
ids = [r["run_id"] for r in records]
starts = [r["started_at"] for r in records]
assert len(ids) == len(set(ids)), "a fire ran twice"
assert starts == sorted(starts), "fires started out of order"
missed = [r for r in records if ts(r["scheduled_time"]) < restart <= ts(r["started_at"])]
assert len(missed) == 3, f"expected three missed fires run after the restart: {missed}"
assert all(r["status"] == "succeeded" for r in records), "a run failed"
on_time = records[-1]
print(f"{len(ids)} fires, each once, in order; the 3 missed while down ran after the restart;")
print(f"the next one fired on time, {on_time['lag_seconds']:.1f} s after its scheduled minute")
EOF
