#!/usr/bin/env bash
# `make profile`: instruction counts (valgrind --tool=callgrind) for both functions while the
# `make bench` harness drives them, from an unstripped release build in target/profile.
# Callgrind hides SHA-NI from the program, so SigV4's SHA-256 shows as the software fallback:
# its share here is higher than on the real CPU. Writes target/callgrind/{receiver,processor}.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
tgt="$root/target/profile"
out="$root/target/callgrind"
CARGO_TARGET_DIR="$tgt" CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --bins
rm -rf "$out" && mkdir -p "$out/bin" "$out/raw"
for f in receiver processor; do
  # Not `exec`: the harness SIGKILLs the process it started (this shell). valgrind lives on until
  # its Runtime API goes away, then the function exits by itself and callgrind writes its file.
  cat >"$out/bin/$f" <<WRAP
#!/bin/sh
valgrind --tool=callgrind --callgrind-out-file=$out/raw/$f.%p $tgt/release/$f
WRAP
  chmod +x "$out/bin/$f"
done
BENCH_FORWARDER=off BENCH_BIN_DIR="$out/bin" BENCH_REPORT="$out/report.md" "$root/scripts/with-moto.sh" cargo bench --bench stack >/dev/null
# Orphaned valgrinds exit once their Runtime API is gone; give the last ones time to write.
for _ in $(seq 1 120); do pgrep -f "callgrind-out-file=$out/" >/dev/null || break; sleep 1; done
for f in receiver processor; do
  # The warm process (the one that served the 1,000-event run) is the biggest profile.
  best=$(for p in "$out"/raw/$f.*; do echo "$(awk '/^totals:/{print $2}' "$p") $p"; done | sort -n | tail -1 | cut -d' ' -f2)
  {
    echo "# $best: inclusive instruction counts, top 60"
    callgrind_annotate --inclusive=yes "$best" 2>/dev/null | awk '/PROGRAM TOTALS/{print} /file:function/{f=1} f&&n++<62'
    echo; echo "# exclusive (self) counts, top 30"
    callgrind_annotate "$best" 2>/dev/null | awk '/file:function/{f=1} f&&n++<32'
  } >"$out/$f.txt"
  echo "$f: $(awk '/^totals:/{print $2}' "$best") instructions in the warm process ($best); top: $out/$f.txt"
done
