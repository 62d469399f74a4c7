#!/bin/sh
# Instructions per message of the channel bench's raw stream, session and batched session,
# counted by valgrind (callgrind): unlike CPU time they do not move with the machine's load.
#
#   cargo bench -p meshwire-upgrade --bench channel --no-run    # prints the bench binary
#   behaviours/upgrade/benches/instructions.sh <bench binary>
#
# Each kind runs twice under callgrind (`BENCH_PROFILE=<kind>`: 20 rounds of 10,000 and of
# 30,000 messages of 64 bytes); the difference of the two counts over the 400,000 messages
# between them is the cost of one message, set-up and warm-up cancelled out. About 3 minutes.
set -eu
bin=${1:?usage: instructions.sh <channel bench binary>}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() {
    BENCH_PROFILE=$1 BENCH_MESSAGES=$2 valgrind --tool=callgrind \
        --callgrind-out-file="$tmp/out" "$bin" --bench >/dev/null 2>"$tmp/err"
    grep 'Collected' "$tmp/err" | awk '{print $4}'
}
per_message() {
    small=$(count "$1" 10000)
    large=$(count "$1" 30000)
    echo $(( (large - small) / 400000 ))
}
raw=$(per_message raw)
session=$(per_message session)
batched=$(per_message batched)
awk -v r="$raw" -v s="$session" -v b="$batched" 'BEGIN {
    printf "instructions per message (callgrind): raw stream %d, session %d (%.2fx), session batched %d (%.2fx)\n", r, s, s / r, b, b / r
}'
