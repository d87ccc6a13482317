#!/usr/bin/env bash
# Fuzzes the receiver's request parsing and key derivation with cargo-fuzz (libFuzzer, nightly).
#   scripts/fuzz.sh [TARGET] [SECONDS]     TARGET: request | payload_key (default: both)
# Seeds each corpus from the Stigg examples in events/; findings land in fuzz/artifacts/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds="${2:-600}"
targets=("${1:-request}")
[ -z "${1:-}" ] && targets=(request payload_key)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
cd "$root/fuzz"
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  for f in "$root"/events/stigg/*.json; do
    name=$(basename "$f" .json)
    if [ "$target" = request ]; then
      # First byte picks the mode: 1 = body behind the right secret.
      { printf '\001'; cat "$f"; } >"$corpus/seed-$name"
    else
      cp "$f" "$corpus/seed-$name"
    fi
  done
  echo "fuzzing $target for ${seconds}s" >&2
  cargo "+$toolchain" fuzz run "$target" "$corpus" -- -max_total_time="$seconds" -max_len=65536 -timeout=10
done
