#!/usr/bin/env bash
# `make dev`: the whole stack on this machine. moto (DynamoDB + SQS + SSM) on 127.0.0.1, both
# functions under `cargo lambda watch` (rebuilt on change), and a pump standing in for Lambda's
# SQS event source. The banner comes only once both functions are built and have answered.
# MIRROR=1 turns on the entitlement mirror (ENTITLEMENT_MIRROR_TABLE) in the processor, with a
# stand-in for Stigg's GraphQL API (events/stigg-api/customers.json) for `make mirror-backfill`.
# DURABLE=1 adds Stigg's durable-delivery channel: a local "Stigg queue", stand-ins for the Edge
# API and the status page, and the bridge invoked in a loop (standing in for its schedule).
# BUS=1 adds EventBridge (moto serves it too): a bus `stigg-local` given to the processor as
# EVENT_BUS_NAME (the forwarder), an archive of its events for `make replay`, and an example rule
# taking every event to a subscriber queue whose events the log shows (`stigg-dev subscriber`).
# Ctrl-C stops everything this script started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
state="$root/.local/dev"
# The simulator as the build below leaves it (CARGO_TARGET_DIR honoured).
dev_tool="${CARGO_TARGET_DIR:-$root/target}/debug/examples/stigg-dev"
mkdir -p "$state"
moto_port="${MOTO_PORT:-4566}"
lambda_port="${LAMBDA_PORT:-9000}"
secret="${STIGG_WEBHOOK_SECRET:-local-dev-secret-change-me}"
durable="${DURABLE:-}"
mirror="${MIRROR:-}"
bus="${BUS:-}"
edge_port="${EDGE_PORT:-4580}"
status_port="${STATUS_PORT:-4581}"
stigg_api_port="${STIGG_API_PORT:-4582}"
api_key="local-stigg-server-key"
started=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)"; }
pids=()
# Each component runs in its own process group (setsid), so stopping it also stops what it
# spawned (cargo lambda watch runs the function binaries as children).
start() { setsid "$@" & pids+=($!); }
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "$state/env"
  echo "dev stack stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$moto_port" "$lambda_port")
[ -n "$durable" ] && ports+=("$edge_port" "$status_port")
[ -n "$mirror" ] && ports+=("$stigg_api_port")
for port in "${ports[@]}"; do
  if port_open "$port"; then echo "port $port is in use (another make dev?); set MOTO_PORT/LAMBDA_PORT" >&2; exit 1; fi
done

# One build of the functions and the simulator. `local-dev` (Cargo.toml) gives the functions'
# dependencies the features the simulator's (dev-)dependencies add, so both share one build of
# the SDK, and `cargo lambda watch --features local-dev` runs (`cargo run --bin <function>
# --features local-dev`) exactly what this built: its first request compiles nothing.
echo "building the functions and the simulator (a cold cache takes a few minutes)..."
cargo build --features local-dev --bins --example stigg-dev

export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
start moto_server -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" && break
  sleep 0.1
done
curl -fs -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" || { echo "moto did not start on port $moto_port; see $state/moto.log" >&2; exit 1; }

setup_env=$("$dev_tool" setup ${durable:+--stigg-queue stigg-durable-local} \
  ${mirror:+--mirror-table stigg-entitlements} ${bus:+--bus stigg-local --subscriber-queue stigg-subscriber-local})
eval "export $(echo "$setup_env" | tr '\n' ' ')"
{
  echo "export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
  echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
  echo "export STIGG_WEBHOOK_SECRET=$secret"
  echo "$setup_env" | sed 's/^/export /'
  echo "export RECEIVER_URL=http://127.0.0.1:$lambda_port/lambda-url/receiver/"
} >"$state/env"

if [ -n "$durable" ]; then
  start "$dev_tool" stand-ins --queue-url "$STIGG_QUEUE_URL" --api-key "$api_key" \
    --edge "127.0.0.1:$edge_port" --status "127.0.0.1:$status_port" >"$state/stand-ins.log" 2>&1
  for _ in $(seq 1 50); do port_open "$edge_port" && port_open "$status_port" && break; sleep 0.1; done
  # The bridge reads these; cargo lambda watch passes its environment to every function. Short
  # polls that stop when the queue is empty keep each local invocation brief.
  export STIGG_API_KEY="$api_key" STIGG_EDGE_API_URL="http://127.0.0.1:$edge_port" \
    BRIDGE_WAIT_SECONDS=5 BRIDGE_MAX_EMPTY_POLLS=1
  {
    echo "export STIGG_API_KEY=$api_key STIGG_EDGE_API_URL=http://127.0.0.1:$edge_port"
    echo "export STIGG_STATUS_URL_LOCAL=http://127.0.0.1:$status_port/proxy/status.stigg.io/component_impacts"
  } >>"$state/env"
fi

if [ -n "$mirror" ]; then
  start "$dev_tool" api-stand-in --addr "127.0.0.1:$stigg_api_port" --api-key "$api_key" \
    --customers "$root/events/stigg-api/customers.json" >"$state/stigg-api.log" 2>&1
  for _ in $(seq 1 50); do port_open "$stigg_api_port" && break; sleep 0.1; done
  port_open "$stigg_api_port" || { echo "the Stigg API stand-in did not start; see $state/stigg-api.log" >&2; exit 1; }
  # The functions see them too (cargo lambda watch passes its environment on).
  export STIGG_API_URL="http://127.0.0.1:$stigg_api_port/graphql" STIGG_API_KEY="$api_key"
  echo "export STIGG_API_URL=$STIGG_API_URL STIGG_API_KEY=$api_key" >>"$state/env"
fi

# The terminal tells the story (one line per request, one per processed event): the metric
# lines (CloudWatch EMF JSON, one per metric set) go to the full log only, and the runtime's
# span prefix (request and X-Ray ids) is dropped from what is shown.
export STIGG_WEBHOOK_SECRET="$secret" AWS_LAMBDA_LOG_LEVEL="${AWS_LAMBDA_LOG_LEVEL:-info}"
start cargo lambda watch --features local-dev -A 127.0.0.1 -P "$lambda_port" \
  > >(tee "$state/lambda.log" | grep --line-buffered -v '"_aws":' | sed -u -E 's/Lambda runtime invoke\{[^}]*\}:(record\{[^}]*\}:)? ?//') 2>&1
for _ in $(seq 1 600); do port_open "$lambda_port" && break; sleep 0.2; done
port_open "$lambda_port" || { echo "cargo lambda watch did not listen on $lambda_port; see $state/lambda.log" >&2; exit 1; }

# Warm both functions: the first invocation starts (and, after a code change, builds) each one.
# A GET is refused by the receiver with 405 and an empty batch is a no-op for the processor.
warm() {
  local name=$1 url=$2; shift 2
  for _ in $(seq 1 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 300 "$@" "$url" || true)
    [ "$code" != "000" ] && [ "$code" != "502" ] && [ "$code" != "503" ] && { echo "$name ready ($code)"; return 0; }
    sleep 1
  done
  echo "$name did not answer; see $state/lambda.log" >&2
  return 1
}
warm receiver "http://127.0.0.1:$lambda_port/lambda-url/receiver/"
warm processor "http://127.0.0.1:$lambda_port/2015-03-31/functions/processor/invocations" \
  -X POST -H 'content-type: application/json' --data '{"Records":[]}'

start "$dev_tool" pump --queue-url "$EVENTS_QUEUE_URL" \
  --invoke-url "http://127.0.0.1:$lambda_port/2015-03-31/functions/processor/invocations"

bus_banner=""
if [ -n "$bus" ]; then
  # The example rule's target: one line per event in this log (replays carry their replay-name).
  start "$dev_tool" subscriber --queue-url "$SUBSCRIBER_QUEUE_URL"
  bus_banner="
  event bus    : $EVENT_BUS_NAME (the processor's EVENT_BUS_NAME, Source $EVENT_SOURCE)
  archive      : $EVENT_ARCHIVE_NAME (every event of the bus, for make replay)
  subscriber   : $SUBSCRIBER_QUEUE_URL (rule $EXAMPLE_RULE_NAME: every event; 'subscriber:' lines below)
  try:  make send EVENT=events/stigg/subscription.created.json   # handlers, then the bus: a 'subscriber:' line
        make replay FROM=-10m TO=now                  # back to the bus's rules (the subscriber)
        make replay FROM=-10m TO=now TO_HANDLERS=1    # and to this stack's handlers, once more per replay
"
fi

durable_banner=""
if [ -n "$durable" ]; then
  bridge_url="http://127.0.0.1:$lambda_port/2015-03-31/functions/bridge/invocations"
  warm bridge "$bridge_url" -X POST -H 'content-type: application/json' --data '{}'
  # EventBridge Scheduler's stand-in: invoke again as soon as the last drain ends. A drain ends
  # by its 60 s fallback budget at the latest; the time limit covers an invocation lost when
  # cargo lambda watch restarts the bridge after a code change.
  start bash -c "while :; do curl -s -o /dev/null --max-time 75 -X POST -H 'content-type: application/json' --data '{}' '$bridge_url'; sleep 1; done"
  durable_banner="
  Stigg queue  : $STIGG_QUEUE_URL (drained by the bridge)
  Edge API     : http://127.0.0.1:$edge_port (stand-in)
  status page  : http://127.0.0.1:$status_port/proxy/status.stigg.io/component_impacts (stand-in)
  try:  make send-durable EVENT=events/stigg/subscription.created.json
        make send-durable EVENT=events/stigg SNS=1
        make stigg-status STIGG_STATUS_URL=http://127.0.0.1:$status_port/proxy/status.stigg.io/component_impacts
"
fi

mirror_banner=""
if [ -n "$mirror" ]; then
  mirror_banner="
  mirror table : $ENTITLEMENT_MIRROR_TABLE (the entitlement mirror is on)
  Stigg API    : $STIGG_API_URL (stand-in: events/stigg-api/customers.json)
  try:  make mirror-backfill
        make mirror CUSTOMER=customer-globex
        make send EVENT=events/stigg/entitlements.updated.json SEND_FLAGS=--keep-ids
        make mirror CUSTOMER=f29e950f-99cb-4f06-8395-434fb5259a58 RESOURCE=device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77
"
fi

cat <<BANNER

  Stigg webhooks, local stack: ready in $(elapsed) s
  receiver URL : http://127.0.0.1:$lambda_port/lambda-url/receiver/
  events queue : $EVENTS_QUEUE_URL
  dead letters : $DEAD_LETTER_QUEUE_URL
  secret       : $secret
  full log     : $state/lambda.log (with the metric lines)
$durable_banner$mirror_banner$bus_banner
  try:  make send EVENT=events/stigg/subscription.created.json
        make send EVENT=events/stigg SEND_FLAGS="--duplicates 1"
        make poison && make redrive
  Ctrl-C stops everything.

BANNER
wait -n "${pids[@]}"
