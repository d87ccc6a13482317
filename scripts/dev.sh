#!/usr/bin/env bash
# `make dev`: the whole stack on this machine. moto (DynamoDB + SQS) on 127.0.0.1, both functions
# under `cargo lambda watch` (rebuilt on change), and a pump standing in for Lambda's SQS event
# source. Ctrl-C stops everything this script started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
state="$root/.local/dev"
mkdir -p "$state"
moto_port="${MOTO_PORT:-4566}"
lambda_port="${LAMBDA_PORT:-9000}"
secret="${STIGG_WEBHOOK_SECRET:-local-dev-secret-change-me}"
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
trap cleanup EXIT INT TERM

echo "building (first run takes a few minutes)..."
cargo build --bins --example stigg-dev

export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
start moto_server -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" && break
  sleep 0.1
done
curl -fs -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" || { echo "moto did not start on port $moto_port (in use?); see $state/moto.log" >&2; exit 1; }

setup_env=$("$root/target/debug/examples/stigg-dev" setup)
eval "export $(echo "$setup_env" | tr '\n' ' ')"
{
  echo "export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
  echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
  echo "export STIGG_WEBHOOK_SECRET=$secret"
  echo "$setup_env" | sed 's/^/export /'
  echo "export RECEIVER_URL=http://127.0.0.1:$lambda_port/lambda-url/receiver/"
} >"$state/env"

export STIGG_WEBHOOK_SECRET="$secret" AWS_LAMBDA_LOG_LEVEL="${AWS_LAMBDA_LOG_LEVEL:-info}"
start cargo lambda watch -A 127.0.0.1 -P "$lambda_port" > >(tee "$state/lambda.log") 2>&1
for _ in $(seq 1 300); do
  curl -s -o /dev/null "http://127.0.0.1:$lambda_port/" && break
  sleep 0.5
done

start "$root/target/debug/examples/stigg-dev" pump --queue-url "$EVENTS_QUEUE_URL" \
  --invoke-url "http://127.0.0.1:$lambda_port/2015-03-31/functions/processor/invocations"

cat <<BANNER

  Stigg webhooks, local stack
  receiver URL : http://127.0.0.1:$lambda_port/lambda-url/receiver/
  events queue : $EVENTS_QUEUE_URL
  dead letters : $DEAD_LETTER_QUEUE_URL
  secret       : $secret

  try:  make send EVENT=events/stigg/subscription.created.json
        curl -i http://127.0.0.1:$lambda_port/lambda-url/receiver/ -H 'Stigg-Webhooks-Secret: $secret' --data-binary @events/stigg/customer.updated.json
        make poison && make redrive
  Ctrl-C stops everything.

BANNER
wait -n "${pids[@]}"
