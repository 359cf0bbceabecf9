#!/usr/bin/env bash
# The performance reference points of issue 13, side by side in one run on this machine, as one
# table: GetProduct over gRPC against a bare tonic handler (h2load), REST GetProduct through our
# gateway against Envoy's grpc_json_transcoder on the same product-service (wrk), PlaceOrder at 50
# in flight on SQLite and on PostgreSQL + RabbitMQ, and the shopper journey with 10,000 users over
# REST (`shop load`), with the RSS of `shop up` during it. Ratios, not absolute numbers, are what
# to compare from run to run: the load tools share the machine's cores with what they measure.
#
#   scripts/bench.sh [--head] [--only grpc,rest,order,journey] [--perf]
#
#   --head   build the committed HEAD (exported with git archive), not the working tree
#   --only   run only these points (the table has only their rows)
#   --perf   also perf-record the shop process during the first journey run (perf-journey.txt)
#
# Settings (environment), with their defaults:
#   BENCH_DURATION=15          seconds of each h2load and wrk measurement (after a 2 s warm-up)
#   BENCH_ORDER_DURATION=30s   each PlaceOrder point
#   BENCH_USERS=10000          the journey's user count
#   BENCH_FALLBACK_USERS="5000 2000 1000"   tried in turn while p99 >= 100 ms or errors
#   BENCH_THINK=1s..5s  BENCH_RAMP_UP=20s  BENCH_JOURNEY_DURATION=60s
#   BENCH_PORT_BASE=18100      loopback ports BASE..BASE+99 are used
#   DATABASE_URL, AMQP_URL     the PostgreSQL server and RabbitMQ broker of the PlaceOrder point
#                              (this machine's by default); its databases are shop_user, …, made
#                              and dropped by this run (skipped if they exist), and its broker a
#                              vhost of its own (made and deleted with rabbitmqctl)
#
# Everything listens on 127.0.0.1 and is stopped on exit. Raw outputs and the table (bench.md,
# bench.json) land in target/bench/<date>-<commit>/; target/bench/latest points there.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${BENCH_DURATION:-15}"
ORDER_DURATION="${BENCH_ORDER_DURATION:-30s}"
USERS="${BENCH_USERS:-10000}"
FALLBACK_USERS="${BENCH_FALLBACK_USERS:-5000 2000 1000}"
THINK="${BENCH_THINK:-1s..5s}"
RAMP_UP="${BENCH_RAMP_UP:-20s}"
JOURNEY_DURATION="${BENCH_JOURNEY_DURATION:-60s}"
BASE="${BENCH_PORT_BASE:-18100}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
# What the h2load, wrk and PlaceOrder points run, as the table names them.
H2LOAD_SHAPE="h2load 50 connections × 20 streams, --grpc-max-in-flight 1024"
WRK_SHAPE="wrk 64 connections"
ORDER_USERS=200
ORDER_SHAPE="50 in flight, $ORDER_USERS users back to back"
# How long after the journey's load the RSS is read again.
SETTLE=10

HEAD_ONLY=false
PERF=false
ONLY="grpc,rest,order,journey"
while [ $# -gt 0 ]; do
    case "$1" in
        --head) HEAD_ONLY=true ;;
        --perf) PERF=true ;;
        --only)
            ONLY="${2:?--only needs a list, e.g. grpc,rest}"
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

say() { printf '\n== %s\n' "$*" >&2; }

# --- tools and binaries -------------------------------------------------------------------

say "tools (h2load, wrk, envoy, buf)"
bash "$ROOT/scripts/install-tools.sh" --bench
PATH="$(bash "$ROOT/scripts/install-tools.sh" --print-bin):$PATH"
export PATH

COMMIT="$(git -C "$ROOT" rev-parse --short=12 HEAD)"
RUN="$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)-$COMMIT"
mkdir -p "$RUN/bin"
ln -sfn "$RUN" "$ROOT/target/bench/latest"
FACTS="$RUN/run.tsv"
: >"$FACTS"
fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }

SRC="$ROOT"
if $HEAD_ONLY; then
    # One folder for every --head run, where only the files changed since the last one are
    # rewritten: cargo rebuilds what changed, not the whole workspace under a new path. They
    # get the time of extraction (tar -m), not their commit's, which can be older than the last
    # build and hide the change from cargo.
    SRC="$ROOT/target/bench/src"
    last="$(cat "$SRC/.bench-commit" 2>/dev/null || true)"
    if [ -n "$last" ] && git -C "$ROOT" cat-file -e "$last^{commit}" 2>/dev/null; then
        git -C "$ROOT" diff --name-only --no-renames --diff-filter=D "$last" HEAD \
            | (cd "$SRC" && xargs -r -d '\n' rm -f --)
        mapfile -t updated < <(git -C "$ROOT" diff --name-only --no-renames --diff-filter=d \
            "$last" HEAD)
        if [ "${#updated[@]}" -gt 0 ]; then
            git -C "$ROOT" archive HEAD -- "${updated[@]}" | tar -x -m -C "$SRC"
        fi
    else
        rm -rf "$SRC"
        mkdir -p "$SRC"
        git -C "$ROOT" archive HEAD | tar -x -m -C "$SRC"
    fi
    echo "$COMMIT" >"$SRC/.bench-commit"
    fact build "release, committed HEAD $COMMIT (git archive)"
    fact commit "$COMMIT"
else
    changed="$(git -C "$ROOT" status --porcelain --untracked-files=no | wc -l)"
    if [ "$changed" -gt 0 ]; then
        fact commit "$COMMIT + $changed changed files of the working tree"
    else
        fact commit "$COMMIT"
    fi
    fact build "release, working tree"
fi

say "release build of shop and the bare tonic example"
# Same target folder as everyone's builds, so dependencies are shared; the binaries are copied
# out at once, so a later build by someone else cannot swap them during the run.
cargo build --release --quiet --manifest-path "$SRC/Cargo.toml" --target-dir "$ROOT/target" \
    --bin shop --example bare_tonic
cp "$ROOT/target/release/shop" "$ROOT/target/release/examples/bare_tonic" "$RUN/bin/"
SHOP="$RUN/bin/shop"
(cd "$SRC" && buf build -o "$RUN/shop.binpb")

# --- the machine --------------------------------------------------------------------------

fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
fact cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
fact cores "$(grep -c '^processor' /proc/cpuinfo)"
fact ram "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
fact kernel "$(cat /proc/sys/kernel/osrelease)"
fact load-before "$(cut -d' ' -f1-3 /proc/loadavg)"
fact h2load "$H2LOAD_SHAPE"
fact wrk "$WRK_SHAPE"
fact order "$ORDER_SHAPE, $ORDER_DURATION"
fact think "$THINK"
fact journey-shape "ramp-up $RAMP_UP, $JOURNEY_DURATION"
fact settle "${SETTLE} s"

# --- processes this run started, stopped on exit -------------------------------------------

PIDS=()
PG_DATABASES=()
VHOST=""

start() { # log file, command…: runs it in the background; its pid in STARTED
    local log="$1"
    shift
    "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

forget() { # pid: reaped, so its number may be reused by a process that is not ours
    local kept=() p
    for p in "${PIDS[@]}"; do
        [ "$p" = "$1" ] || kept+=("$p")
    done
    PIDS=("${kept[@]}")
}

running() { # pid: neither gone nor a zombie waiting to be reaped
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [ -n "$state" ] && [ "$state" != Z ]
}

stop() { # pid: SIGTERM, then SIGKILL after 15 s
    local pid="$1"
    forget "$pid"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 150); do
        running "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

psql_server() { psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAtc "$1"; }

cleanup() {
    local pid db
    for pid in "${PIDS[@]}"; do
        stop "$pid"
    done
    PIDS=()
    for db in "${PG_DATABASES[@]}"; do
        psql_server "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    done
    if [ -n "$VHOST" ]; then
        rabbitmqctl -q delete_vhost "$VHOST" >/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The gateway's config: kong/kong.yaml with every rate limit raised out of the way (the shipped
# 50/s per client would answer most of a load test from one address with 429).
KONG="$RUN/kong.yaml"
sed -E 's/^([[:space:]]+)(second|minute|hour|day): [0-9]+$/\1\2: 1000000000/' \
    "$SRC/kong/kong.yaml" >"$KONG"
if grep -qE '^[[:space:]]+(second|minute|hour|day): [0-9]{1,9}$' "$KONG"; then
    echo "a rate limit of kong/kong.yaml was not raised; update the sed in $0" >&2
    exit 1
fi

# shop up on ports BASE+offset..+5 (user, product, order, payment, gateway, metrics); extra
# arguments go to `shop up`. Sets SHOP_PID and the *_PORT variables, and waits until it serves.
up() {
    local offset="$1" name="$2"
    shift 2
    USER_PORT=$((BASE + offset))
    PRODUCT_PORT=$((USER_PORT + 1))
    ORDER_PORT=$((USER_PORT + 2))
    PAYMENT_PORT=$((USER_PORT + 3))
    GATEWAY_PORT=$((USER_PORT + 4))
    METRICS_PORT=$((USER_PORT + 5))
    mkdir -p "$RUN/data-$name"
    start "$RUN/shop-$name.log" env -u SHOP_DATABASE_URL -u SHOP_AMQP_URL -u SHOP_MONGODB_URL \
        -u OTEL_EXPORTER_OTLP_ENDPOINT -u GRPC_MAX_IN_FLIGHT -u SHOP_GATEWAY_MAX_IN_FLIGHT \
        RUST_LOG=info LOG_FORMAT=json \
        "$SHOP" up --bind 127.0.0.1 --user-port "$USER_PORT" --product-port "$PRODUCT_PORT" \
        --order-port "$ORDER_PORT" --payment-port "$PAYMENT_PORT" \
        --gateway-port "$GATEWAY_PORT" --metrics-port "$METRICS_PORT" \
        --data-dir "$RUN/data-$name" --kong-config "$KONG" "$@"
    SHOP_PID=$STARTED
    local port probes=()
    for port in "$USER_PORT" "$PRODUCT_PORT" "$ORDER_PORT" "$PAYMENT_PORT"; do
        probes+=(--grpc "http://127.0.0.1:$port")
    done
    if ! "$SHOP" probe "${probes[@]}" --http "http://127.0.0.1:$GATEWAY_PORT/v1/products" \
        --wait 90s >"$RUN/probe-$name.txt" 2>&1; then
        cat "$RUN/probe-$name.txt" >&2
        tail -5 "$RUN/shop-$name.log" >&2
        echo "shop up ($name) did not come up" >&2
        exit 1
    fi
}

down() {
    stop "$SHOP_PID"
}

scrape() { # name: product-service's GetProduct counters, before/after a point
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^grpc_server_handled_total' \
        >"$RUN/metrics-$1.txt" || true
}

cpu_ticks() { # pid: user + system clock ticks so far
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

cores_used() { # ticks before, ticks after, seconds
    awk -v a="$1" -v b="$2" -v s="$3" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", (b - a) / hz / s }'
}

since() { # a time taken from EPOCHREALTIME: the seconds since then
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}

wait_http() { # url: until it answers 2xx, at most 30 s
    for _ in $(seq 1 150); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "nothing answers $1" >&2
    return 1
}

wait_port() {
    for _ in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

grpc_ports() {
    printf -- '--user-addr 127.0.0.1:%s --product-addr 127.0.0.1:%s --order-addr 127.0.0.1:%s' \
        "$USER_PORT" "$PRODUCT_PORT" "$ORDER_PORT"
}

# --- GetProduct (gRPC and REST) and PlaceOrder on SQLite: one shop up ------------------------

if wanted grpc || wanted rest || wanted order; then
    say "shop up on the embedded defaults (SQLite, in-process bus)"
    # h2load's 1,000 streams are past the server kit's 512 calls in flight, which would shed
    # half of them (fast RESOURCE_EXHAUSTED answers, which h2load counts as successes): this
    # point measures what a served call costs, the overload test what shedding does.
    up 0 sqlite --grpc-max-in-flight 1024
    PRODUCT_ID="$(curl -sf "http://127.0.0.1:$GATEWAY_PORT/v1/products?pageSize=1" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["products"][0]["productId"])')"

    if wanted grpc; then
        # One GetProductRequest as a gRPC frame: no compression, length, field 1 (product_id).
        python3 -c 'import struct, sys
pid = sys.argv[1].encode()
msg = b"\x0a" + bytes([len(pid)]) + pid
sys.stdout.buffer.write(b"\x00" + struct.pack(">I", len(msg)) + msg)' "$PRODUCT_ID" \
            >"$RUN/get-product.grpc"
        h2() { # port, output
            h2load -c 50 -m 20 -D "$DURATION" --warm-up-time 2 -d "$RUN/get-product.grpc" \
                -H 'content-type: application/grpc' -H 'te: trailers' \
                "http://127.0.0.1:$1/shop.product.v1.ProductService/GetProduct" >"$2" 2>&1
        }
        say "GetProduct over gRPC: ours ($H2LOAD_SHAPE, ${DURATION} s)"
        scrape grpc-before
        h2 "$PRODUCT_PORT" "$RUN/h2load-ours.txt" || fact skipped "GetProduct: h2load failed on ours"
        scrape grpc-after
        grep 'req/s' "$RUN/h2load-ours.txt" >&2 || true

        say "GetProduct over gRPC: bare tonic handler"
        start "$RUN/bare_tonic.log" "$RUN/bin/bare_tonic" "127.0.0.1:$((BASE + 10))"
        BARE_PID=$STARTED
        wait_port $((BASE + 10))
        h2 $((BASE + 10)) "$RUN/h2load-bare.txt" || fact skipped "GetProduct: h2load failed on bare"
        stop "$BARE_PID"
        grep 'req/s' "$RUN/h2load-bare.txt" >&2 || true
    fi

    if wanted rest; then
        ENVOY_PORT=$((BASE + 20))
        sed -e "s|@LISTEN_PORT@|$ENVOY_PORT|" -e "s|@ADMIN_PORT@|$((BASE + 21))|" \
            -e "s|@PRODUCT_PORT@|$PRODUCT_PORT|" -e "s|@DESCRIPTOR@|$RUN/shop.binpb|" \
            "$ROOT/scripts/bench/envoy.yaml" >"$RUN/envoy.yaml"
        bench_rest() { # name, base URL
            local url="$2/v1/products/$PRODUCT_ID"
            curl -sf "$url" >"$RUN/answer-$1.json"
            wrk -t 1 -c 64 -d 2s "$url" >/dev/null
            scrape "$1-before"
            wrk -t 1 -c 64 -d "${DURATION}s" --latency "$url" >"$RUN/wrk-$1.txt" 2>&1 \
                || fact skipped "REST: wrk failed against $1"
            scrape "$1-after"
            grep 'Requests/sec' "$RUN/wrk-$1.txt" >&2 || true
        }
        say "REST GET /v1/products/{id}: our gateway ($WRK_SHAPE, ${DURATION} s)"
        bench_rest gateway "http://127.0.0.1:$GATEWAY_PORT"
        say "REST GET /v1/products/{id}: Envoy's grpc_json_transcoder, same product-service"
        start "$RUN/envoy.log" envoy -c "$RUN/envoy.yaml" --concurrency 2 \
            --disable-hot-restart -l warn
        ENVOY_PID=$STARTED
        wait_http "http://127.0.0.1:$ENVOY_PORT/v1/products/$PRODUCT_ID"
        bench_rest envoy "http://127.0.0.1:$ENVOY_PORT"
        stop "$ENVOY_PID"
        cmp -s "$RUN/answer-gateway.json" "$RUN/answer-envoy.json" \
            || fact note "REST: the gateway's and Envoy's JSON answers differ (answer-*.json)"
    fi

    if wanted order; then
        say "PlaceOrder over gRPC on SQLite ($ORDER_SHAPE, $ORDER_DURATION)"
        ticks="$(cpu_ticks "$SHOP_PID")"
        started="$EPOCHREALTIME"
        # shellcheck disable=SC2046 # the addresses are single words
        "$SHOP" load --scenario place-order --target grpc $(grpc_ports) --users "$ORDER_USERS" \
            --think 0 --max-in-flight 50 --duration "$ORDER_DURATION" --restock 1000000 \
            --quiet --max-error-rate 1 --json "$RUN/order-sqlite.json" \
            >"$RUN/order-sqlite.txt" 2>&1 || fact skipped "PlaceOrder on SQLite: shop load failed"
        fact order-sqlite-cores "$(cores_used "$ticks" "$(cpu_ticks "$SHOP_PID")" \
            "$(since "$started")")"
    fi
    down
fi

# --- PlaceOrder on PostgreSQL + RabbitMQ -----------------------------------------------------

if wanted order; then
    say "PlaceOrder over gRPC on PostgreSQL + RabbitMQ ($ORDER_SHAPE, $ORDER_DURATION)"
    pg_skip=""
    if ! command -v psql >/dev/null || ! command -v rabbitmqctl >/dev/null; then
        pg_skip="psql and rabbitmqctl are needed on the PATH"
    elif ! psql_server "SELECT 1" >/dev/null 2>&1; then
        pg_skip="no PostgreSQL answers at DATABASE_URL"
    else
        taken="$(psql_server "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname IN ('shop_user', 'shop_product', 'shop_order', 'shop_payment')")"
        if [ -n "$taken" ]; then
            pg_skip="databases $taken already exist on the server (another shop up's?); drop them to run this point"
        fi
    fi
    if [ -n "$pg_skip" ]; then
        fact skipped "PlaceOrder on PostgreSQL + RabbitMQ: $pg_skip"
        echo "skipped: $pg_skip" >&2
    else
        PG_DATABASES=(shop_user shop_product shop_order shop_payment)
        VHOST="shop_bench_$$"
        rabbitmqctl -q add_vhost "$VHOST" >/dev/null
        amqp_user="$(python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlsplit(sys.argv[1]).username or "guest"))' "$AMQP_URL")"
        rabbitmqctl -q set_permissions -p "$VHOST" "$amqp_user" '.*' '.*' '.*' >/dev/null
        vhost_url="$(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$AMQP_URL" "$VHOST")"
        up 30 pg --database-url "$DATABASE_URL" --amqp-url "$vhost_url"
        ticks="$(cpu_ticks "$SHOP_PID")"
        started="$EPOCHREALTIME"
        # shellcheck disable=SC2046 # the addresses are single words
        "$SHOP" load --scenario place-order --target grpc $(grpc_ports) --users "$ORDER_USERS" \
            --think 0 --max-in-flight 50 --duration "$ORDER_DURATION" --restock 1000000 \
            --quiet --max-error-rate 1 --json "$RUN/order-pg.json" \
            >"$RUN/order-pg.txt" 2>&1 || fact skipped "PlaceOrder on PostgreSQL: shop load failed"
        fact order-pg-cores "$(cores_used "$ticks" "$(cpu_ticks "$SHOP_PID")" \
            "$(since "$started")")"
        down
    fi
fi

# --- the journey over REST, 10,000 users, then fewer until p99 < 100 ms ------------------------

journey() { # users, port offset
    local users="$1" name="journey-$1"
    say "journey over REST: $users users, think $THINK, ramp-up $RAMP_UP, $JOURNEY_DURATION"
    up "$2" "$name"
    local samples="$RUN/rss-$name.tsv" sampler perf_pid="" ticks started
    rss_now() { awk '/^VmRSS/ { print $2 }' "/proc/$SHOP_PID/status"; }
    printf '0\tidle\t%s\n' "$(rss_now)" >"$samples"
    (
        while running "$SHOP_PID"; do
            printf '%s\tload\t%s\n' "$SECONDS" "$(rss_now)" >>"$samples" 2>/dev/null || true
            sleep 1
        done
    ) &
    sampler=$!
    PIDS+=("$sampler")
    if $PERF && [ "$users" = "$USERS" ]; then
        start "$RUN/perf-record.log" perf record -F 199 -g -p "$SHOP_PID" -o "$RUN/perf.data"
        perf_pid=$STARTED
    fi
    ticks="$(cpu_ticks "$SHOP_PID")"
    started="$EPOCHREALTIME"
    # The load generator's own CPU: the subshell's children times, as `times` prints them.
    if ! (
        "$SHOP" load --users "$users" --think "$THINK" --ramp-up "$RAMP_UP" \
            --duration "$JOURNEY_DURATION" --url "http://127.0.0.1:$GATEWAY_PORT" \
            --restock 1000000 --quiet --max-error-rate 1 --json "$RUN/$name.json" \
            --svg "$RUN/$name.svg" >"$RUN/$name.txt" 2>&1
        times >"$RUN/$name-times.txt"
    ); then
        fact skipped "journey with $users users: shop load failed (see $name.txt)"
    fi
    local seconds
    seconds="$(since "$started")"
    fact "$name-cores" "$(cores_used "$ticks" "$(cpu_ticks "$SHOP_PID")" "$seconds")"
    if [ -f "$RUN/$name-times.txt" ]; then
        fact "$name-load-cores" "$(awk -v s="$seconds" 'NR == 2 {
            split($1, u, /[ms]/); split($2, y, /[ms]/)
            printf "%.2f", (u[1] * 60 + u[2] + y[1] * 60 + y[2]) / s }' "$RUN/$name-times.txt")"
    fi
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        forget "$perf_pid"
        for sort in comm dso,symbol; do
            perf report -i "$RUN/perf.data" --no-children --sort "$sort" --stdio -g none \
                --percent-limit 0.3 2>/dev/null | grep -v '^#' | grep '%' \
                | sed -E 's/[[:space:]]+$//; s/[[:space:]]+-[[:space:]]+-$//'
        done >"$RUN/perf-journey.txt" || true
    fi
    awk '/^VmHWM/ { print $2 }' "/proc/$SHOP_PID/status" >"$RUN/hwm-$name.txt"
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$RUN/metrics-$name.txt" || true
    sleep "$SETTLE"
    printf '%s\tafter\t%s\n' "$SECONDS" "$(rss_now)" >>"$samples"
    down
    stop "$sampler"
    fact journey "$users"
    grep -E '^all|p99' "$RUN/$name.txt" | head -3 >&2 || true
}

meets_target() { # users: p99 < 100 ms and no errors in that run's report
    python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r["overall"]["p99_ms"] < 100 and r["errors"] == 0 else 1)' \
        "$RUN/journey-$1.json" 2>/dev/null
}

if wanted journey; then
    offset=40
    journey "$USERS" "$offset"
    if ! meets_target "$USERS"; then
        for users in $FALLBACK_USERS; do
            offset=$((offset + 10))
            journey "$users" "$offset"
            meets_target "$users" && break
        done
    fi
fi

fact load-after "$(cut -d' ' -f1-3 /proc/loadavg)"
say "table (also in $RUN/bench.md and bench.json)"
python3 "$ROOT/scripts/bench/report.py" "$RUN"
# The systems' databases and the binaries' copies are 200 MB a run and say nothing the outputs
# do not (perf keeps what its report needs in ~/.debug).
rm -rf "${RUN:?}/bin" "${RUN:?}"/data-*
