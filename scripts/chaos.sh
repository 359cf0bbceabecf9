#!/usr/bin/env bash
# The chaos suite's long run (tests/chaos): the service binaries as the chart runs them, on this
# machine's PostgreSQL and RabbitMQ, with a fault every few seconds while shoppers place orders;
# then every invariant checked and reported. `cargo test` runs a bounded version of the same.
#
#   scripts/chaos.sh                       5,000 orders, a fault every 2 s, every kind of fault
#   CHAOS_ORDERS=20000 scripts/chaos.sh    longer
#   CHAOS_FAULTS=kill-9,database-cut scripts/chaos.sh
#
# Kinds: kill-9, pg-terminate-backend, database-cut, database-slow, broker-connections-closed,
# broker-cut, broker-slow, broker-restart (stops and starts the machine's RabbitMQ application:
# run it where nothing else uses the broker). The report is also written to target/chaos-report.json.
# The debug build, as `cargo test` makes it: the suite checks guarantees, not speed.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
TOOLS="$(bash scripts/install-tools.sh --print-bin)"
export PATH="$TOOLS:$PATH"
export CHAOS_ORDERS="${CHAOS_ORDERS:-5000}"
export CHAOS_SHOPPERS="${CHAOS_SHOPPERS:-32}"
export CHAOS_FAULT_EVERY="${CHAOS_FAULT_EVERY:-2s}"
export CHAOS_LIMIT="${CHAOS_LIMIT:-40m}"
export CHAOS_REPORT="${CHAOS_REPORT:-$PWD/target/chaos-report.json}"
export RUST_LOG="${RUST_LOG:-warn}"

command -v helm >/dev/null || bash scripts/install-tools.sh
# The suite starts the service binaries the chart runs: build them all first.
cargo build --locked --workspace --bins
cargo test --locked --test chaos -- --nocapture
echo "report: $CHAOS_REPORT"
