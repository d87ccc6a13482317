#!/usr/bin/env bash
# Fails when a function's executable names a shared library beyond the ones every Rust program on
# glibc needs. Each one more is mapped and relocated at every cold start and stays resident: libm
# was about 300 kB of the receiver's RSS after init, for one `pow` (src/link.rs).
#
# Allowed: libc.so.6, the dynamic loader, libgcc_s.so.1 (unwinding, for panic = "unwind"), and
# libpthread.so.0 / libdl.so.2, which the arm64 Lambda build names (cargo lambda's zig link, as
# glibc before 2.34 had them separate) and which glibc 2.34, provided.al2023's, keeps as empty
# compatibility stubs.
#
# Used by `tests/production.rs` (the test builds), `make build` and `make deploy` (what ships) and
# `make bench` (what is measured). Reads the ELF with binutils' `readelf`, else LLVM's
# `llvm-readelf`, else `objdump -p` (macOS's is LLVM's, which reads ELF too).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 EXECUTABLE..." >&2; exit 2; }
needed() {
  if command -v readelf >/dev/null; then
    readelf --dynamic --wide "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
  elif command -v llvm-readelf >/dev/null; then
    llvm-readelf --dynamic "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
  elif command -v objdump >/dev/null; then
    objdump -p "$1" | awk '$1 == "NEEDED" { print $2 }'
  else
    echo "$0: needs readelf, llvm-readelf or objdump (Debian: apt-get install binutils)" >&2
    exit 2
  fi
}
status=0
for exe in "$@"; do
  if ! libs=$(needed "$exe"); then
    echo "$exe: not an ELF executable the reader could read (above)" >&2
    status=1
    continue
  fi
  if ! grep -qx 'libc.so.6' <<<"$libs"; then
    echo "$exe: no libc.so.6 among its libraries (${libs:-none}): not a glibc executable?" >&2
    status=1
    continue
  fi
  extra=$(grep -vxE 'libc\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|ld-linux[-a-z0-9_.]*\.so\.[0-9]+' <<<"$libs" || true)
  if [ -n "$extra" ]; then
    echo "$exe loads $(echo $extra) besides glibc's own libraries and libgcc_s: each is resident at every cold start (scripts/check-linked-libraries.sh)" >&2
    status=1
  fi
done
exit $status
