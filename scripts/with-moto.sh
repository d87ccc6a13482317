#!/usr/bin/env bash
# Runs a command against a private moto server: started on a free 127.0.0.1 port, exported as
# AWS_ENDPOINT_URL, stopped (by PID) when the command ends, whatever its outcome.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${VENV:-$root/.venv}"
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log="${MOTO_LOG:-$root/target/moto-$port.log}"
mkdir -p "$(dirname "$log")"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null; wait "$moto_pid" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
    break
  fi
  kill -0 "$moto_pid" 2>/dev/null || { echo "moto failed to start; see $log" >&2; exit 1; }
  sleep 0.1
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
# For tests that start their own serial moto (tests/common: SerialMoto).
export MOTO_PYTHON="$venv/bin/python" MOTO_SERIAL="$root/scripts/moto-serial.py"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
echo "moto on $AWS_ENDPOINT_URL (pid $moto_pid, log $log)" >&2
"$@"
