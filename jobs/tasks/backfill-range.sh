#!/bin/sh
# Backfills one date range, month by month: prints each month it covers and writes them,
# one a line, to $BACKFILL_OUT/FROM_TO.txt (default: $TMPDIR/backfill).
# Usage: backfill-range.sh FROM TO   (dates as YYYY-MM-DD; TO is exclusive)
set -eu

if [ $# -ne 2 ]; then
  echo "usage: backfill-range.sh FROM TO (dates as YYYY-MM-DD)" >&2
  exit 2
fi
from=$1
to=$2
for d in "$from" "$to"; do
  case $d in
    [0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]) ;;
    *) echo "not a date (YYYY-MM-DD): $d" >&2; exit 2 ;;
  esac
done

# Months since year 0: year * 12 + month - 1.
months() {
  year=${1%%-*}
  month=${1#*-}
  month=${month%%-*}
  echo $(( ${year#0} * 12 + ${month#0} - 1 ))
}
start=$(months "$from")
end=$(months "$to")
if [ "$start" -ge "$end" ]; then
  echo "nothing to backfill: $from is not before $to" >&2
  exit 3
fi

out=${BACKFILL_OUT:-${TMPDIR:-/tmp}/backfill}
mkdir -p "$out"
file="$out/${from}_${to}.txt"
: > "$file"
echo "backfilling $from .. $to (${LOG_LEVEL:-info})"
m=$start
while [ "$m" -lt "$end" ]; do
  month=$(printf '%04d-%02d' $((m / 12)) $((m % 12 + 1)))
  echo "month $month"
  echo "$month" >> "$file"
  m=$((m + 1))
done
echo "done: $((end - start)) months written to $file"
