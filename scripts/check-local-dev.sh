#!/usr/bin/env bash
# Fails when the `local-dev` feature (Cargo.toml) no longer gives the dependencies exactly the
# features the dev-dependencies add. Then the functions that `cargo lambda watch --features
# local-dev` runs and the simulator/tests would compile the SDK twice again; the message names
# the crates and features to add to `local-dev`. Reads `cargo tree` only: nothing is built.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
features() { cargo tree -e "$1" --features local-dev -f '{p}|{f}' --prefix none --no-dedupe >"$2"; }
features normal,build "$tmp/functions"
features normal,build,dev "$tmp/with-dev"
python3 - "$tmp/functions" "$tmp/with-dev" <<'PY'
import sys

def load(path):
    seen = {}
    for line in open(path):
        package, _, features = line.rstrip("\n").removesuffix(" (*)").partition("|")
        if features or "|" in line:
            seen.setdefault(package.replace(" (proc-macro)", ""), set()).add(features)
    return seen

functions, with_dev = load(sys.argv[1]), load(sys.argv[2])
drift = {p: (f, with_dev[p]) for p, f in functions.items() if f != with_dev.get(p, f)}
for package, (alone, unified) in sorted(drift.items()):
    print(f"{package}: functions {sorted(alone)}, with the dev-dependencies {sorted(unified)}", file=sys.stderr)
if drift:
    sys.exit("local-dev drifted: add the features above to it in Cargo.toml (see its comment)")
print(f"local-dev: the functions and the dev-dependencies agree on the features of {len(functions)} crates")
PY
