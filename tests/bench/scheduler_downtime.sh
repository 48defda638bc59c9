#!/usr/bin/env bash
# The scheduler on the wall clock, against the embedded default: the main example job on a
# schedule that fires every minute. The scheduler runs until it fired on time, is stopped for
# three fires, is started again, and must run the three missed fires in order, each once,
# then the fires that came due meanwhile, until it fires on time again. Prints what each
# fire did and how late it started.
#
#   bash tests/bench/scheduler_downtime.sh [path/to/sluice]     (7 to 10 minutes)
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

# Is the scheduler idle (no run in progress) with `$1` succeeded fires, the last of them
# started within 10 s of its scheduled minute and scheduled after `$2` (epoch seconds)?
settled() {
  python3 - "$history" "$1" "$2" <<'PY'
import glob, json, sys
from datetime import datetime
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
records = [json.load(open(p)) for p in glob.glob(sys.argv[1] + "/*.json")]
done = sorted((r for r in records if r["status"] == "succeeded"), key=lambda r: r["scheduled_time"])
busy = any(r["status"] == "started" for r in records)
ok = (not busy and len(done) >= int(sys.argv[2]) and done[-1]["lag_seconds"] < 10
      and ts(done[-1]["scheduled_time"]) > float(sys.argv[3]))
sys.exit(0 if ok else 1)
PY
}

wait_until_settled() { # N AFTER: wait (up to 6 minutes) until settled N AFTER
  local deadline=$((SECONDS + 360))
  until settled "$1" "$2"; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for the scheduler to settle" >&2; tail -20 scheduler.log >&2; exit 1; }
    sleep 2
  done
}

# Start just after a minute turned, so that the first fire ends well before the next one.
sleep $(( 62 - $(date -u +%s) % 60 ))
echo "== started $(date -u +%H:%M:%S)"
"$sluice" scheduler --schedules schedules --listen 127.0.0.1:0 >>scheduler.log 2>&1 &
pid=$!
wait_until_settled 1 0
kill -INT $pid; wait $pid || true
stopped=$(date -u +%s)
echo "== stopped $(date -u +%H:%M:%S) after 1 fire; down for three fires"
# Restart in the second minute after the third missed fire, so that exactly three were missed.
sleep $(( (60 - $(date -u +%s) % 60) + 120 + 20 ))
restarted=$(date -u +%s)
echo "== restarted $(date -u +%H:%M:%S) ($(( restarted - stopped )) s down)"
"$sluice" scheduler --schedules schedules --listen 127.0.0.1:0 >>scheduler.log 2>&1 &
pid=$!
# The three missed fires, then the ones due meanwhile, until one starts on time again.
wait_until_settled 5 "$restarted"
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
