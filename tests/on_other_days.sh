#!/usr/bin/env bash
# The whole suite with the process clock moved (libfaketime, Debian's package `faketime`), so a
# test that only holds on the day it was written shows up today, not on the morning it breaks:
#   1. 400 days ahead;
#   2. starting at 23:59 on 31 December, local time (a New Year passes during the run);
#   3. starting at 01:59 on the last Sunday of March in Europe/Paris (the clocks jump an hour).
# Each clock is an offset from the real one, so the child processes tests start (cti demo,
# cti serve, Chromium) share it. PostgreSQL and Redis keep the real time: nothing may ask them
# for "now". Usage: tests/on_other_days.sh [pytest arguments]  (make test-dates)
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -1 || true)
if [ -z "$LIB" ]; then
    echo "test-dates needs libfaketime: apt-get install faketime" >&2
    exit 2
fi
PYTEST=${PYTEST:-.venv/bin/pytest}

run() {  # run <label> <TZ> <start, epoch seconds> [pytest args]: the clock starts there
    local label=$1 zone=$2 start=$3 offset
    shift 3
    offset=$((start - $(date +%s)))  # taken now: an earlier run must not make us start late
    echo "== $label: TZ=$zone, clock moved by ${offset} s"
    TZ=$zone FAKETIME="$(printf '%+ds' "$offset")" LD_PRELOAD=$LIB date '+   it starts at %F %T %Z'
    TZ=$zone FAKETIME="$(printf '%+ds' "$offset")" LD_PRELOAD=$LIB "$PYTEST" -q "$@" ||
        failed="$failed, $label"
}

now=$(date +%s)
local_zone=${TZ:-$(cat /etc/timezone 2>/dev/null || echo UTC)}
new_year=$(TZ=$local_zone date -d "$(date +%Y)-12-31 23:59:00" +%s)
spring_in() {  # 01:59 Paris time on the last Sunday of March of year $1, in epoch seconds
    for d in 31 30 29 28 27 26 25; do
        if [ "$(date -d "$1-03-$d" +%u)" = 7 ]; then
            TZ=Europe/Paris date -d "$1-03-$d 01:59:00" +%s
            return
        fi
    done
}
spring=$(spring_in "$(date +%Y)")
if [ "$spring" -le "$now" ]; then spring=$(spring_in $(($(date +%Y) + 1))); fi

failed=""  # every run goes, whatever the one before it found
run "400 days ahead" "$local_zone" $(($(date +%s) + 400 * 86400)) "$@"
run "New Year's Eve" "$local_zone" "$new_year" "$@"
run "summer time begins" Europe/Paris "$spring" "$@"
if [ -n "$failed" ]; then
    echo "failed on other days: ${failed#, }" >&2
    exit 1
fi
