#!/usr/bin/env bash
# Policy as code: validates template.yaml against policy/*.guard and runs the rules' own unit
# tests (policy/tests/) with AWS CloudFormation Guard, installed on first use into .tools/
# (a pinned `cargo install --locked`, reused by later runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=3.2.1
prefix="$root/.tools/cfn-guard-$version"
guard="$prefix/bin/cfn-guard"
if [ ! -x "$guard" ]; then
  echo "installing cfn-guard $version into $prefix (once)" >&2
  cargo install --quiet --locked cfn-guard --version "$version" --root "$prefix"
fi
cd "$root"
"$guard" validate --rules policy/template.guard --data template.yaml --show-summary fail
# Each rule's passing and failing examples. Only mismatches are worth reading.
if ! out=$("$guard" test --rules-file policy/template.guard --test-data policy/tests/template_tests.yaml 2>&1); then
  echo "$out" | grep -B4 "Evaluated =" >&2
  exit 1
fi
echo "cfn-guard: template.yaml complies; $(grep -c '^Test Case' <<<"$out") rule test cases pass"
