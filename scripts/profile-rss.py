#!/usr/bin/env python3
"""`make profile-rss`: RSS after init and init time of receiver builds, for A/B.

`profile-rss.py BINARY...` starts each binary in turn (interleaved, `RSS_COLD_STARTS` cold starts
each, 21 by default) under a Runtime API stub on 127.0.0.1 and, at its first `GET /next`, reads
VmRSS (the bench's "RSS after init") and the time since spawn, then kills it. It also prints the
largest mappings of /proc/<pid>/smaps by resident kB, with their anonymous kB, averaged over the
cold starts (the executable's text `r-xp`, read-only data `r--p`, data `rw-p`, heap,
stack, shared libraries). Receivers and the Go peer need no AWS call
during init with an inline secret, so no emulator runs; the AWS variables point at a closed port.
"""

import collections
import ctypes
import http.server
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

COLD_STARTS = int(os.environ.get("RSS_COLD_STARTS", "21"))
# RSS_EVICT=1: drop each executable's pages from the page cache before each cold start, so that
# none of its code is in memory when it starts (a private copy of each under target/, written out
# first, so that no other process keeps its pages and `make bench`'s files stay as they are;
# shared libraries stay cached; each eviction is checked with mincore). Without it the executable
# is read from the page cache as it happens to be, as in `make bench`: what the kernel maps around
# each fault then also depends on that state (measured: 0.3 MiB between a file just written and
# one read back), so compare builds written to disk the same way, just before the run.
EVICT = os.environ.get("RSS_EVICT") == "1"
ENV = {
    "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_LAMBDA_FUNCTION_NAME": "receiver",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_LOG_LEVEL": "INFO",
    "STIGG_WEBHOOK_SECRET": "whsec_profile_rss_0123456789abcdef", "IDEMPOTENCY_TABLE": "profile-rss",
    "EVENTS_QUEUE_URL": "http://127.0.0.1:9/123456789012/profile-rss",
}


def smaps(pid):
    """Resident and anonymous kB per (file name, permissions)."""
    split, current = collections.defaultdict(lambda: [0, 0]), None
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if not parts[0].endswith(":"):
            current = (os.path.basename(parts[5]) if len(parts) > 5 else "[anon]", parts[1])
        elif parts[0] == "Rss:":
            split[current][0] += int(parts[1])
        elif parts[0] == "Anonymous:":
            split[current][1] += int(parts[1])
    return split


def mincore_libc():
    """glibc's mmap, munmap and mincore through ctypes (Python's mmap module has no mincore)."""
    c = ctypes.CDLL(None, use_errno=True)
    c.mmap.restype = ctypes.c_void_p
    c.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    c.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    c.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    return c


LIBC = mincore_libc() if EVICT else None


def cached_fraction(path):
    """The share of `path`'s pages in the page cache (mincore(2) over a read-only mapping)."""
    size, page = os.path.getsize(path), os.sysconf("SC_PAGE_SIZE")
    fd = os.open(path, os.O_RDONLY)
    try:
        address = LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = ctypes.create_string_buffer((size + page - 1) // page)
            if LIBC.mincore(address, size, pages) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return sum(b & 1 for b in pages.raw) / len(pages.raw)
        finally:
            LIBC.munmap(address, size)
    finally:
        os.close(fd)


def cold_start(binary):
    """(VmRSS kB, seconds from spawn to the first GET /next, smaps split)."""
    state, reached = {}, threading.Event()

    class RuntimeApi(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            while "pid" not in state:  # the child can ask before Popen returns
                time.sleep(0.0005)
            if not reached.is_set():
                pid = state["pid"]
                state["seconds"] = time.monotonic() - state["spawned"]
                status = open(f"/proc/{pid}/status").read()
                state["rss"] = int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])
                state["split"] = smaps(pid)
                reached.set()
            time.sleep(2)  # hold the request: the function is killed meanwhile

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(ENV, PATH=os.environ["PATH"], AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    if EVICT:
        fd = os.open(binary, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        cached = cached_fraction(binary)
        if cached > 0.05:
            raise SystemExit(f"{binary}: still {cached:.0%} in the page cache after POSIX_FADV_DONTNEED")
    state["spawned"] = time.monotonic()
    function = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state["pid"] = function.pid
    try:
        if not reached.wait(15):
            raise SystemExit(f"{binary}: no GET /next within 15 s (exit code {function.poll()})")
    finally:
        function.kill()
        function.wait()
        server.shutdown()
        server.server_close()
    return state["rss"], state["seconds"], state["split"]


def main():
    binaries = sys.argv[1:]
    if not binaries:
        raise SystemExit("usage: profile-rss.py BINARY... (RSS_COLD_STARTS=21)")
    missing = [b for b in binaries if not os.access(b, os.X_OK)]
    if missing:
        raise SystemExit(f"not an executable: {', '.join(missing)} (the Go peer's is built by `make bench-peers`)")
    runs = {b: [] for b in binaries}
    private, copies = {}, None
    try:
        if EVICT:
            # Under target/, not /tmp: on a tmpfs /tmp the page cache is the file, and DONTNEED is a no-op.
            target = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target")
            os.makedirs(target, exist_ok=True)
            copies = tempfile.mkdtemp(prefix="profile-rss-", dir=target)
            for i, b in enumerate(binaries):
                private[b] = os.path.join(copies, f"{i}-{os.path.basename(b)}")
                shutil.copy2(b, private[b])
                with open(private[b], "rb+") as f:
                    os.fsync(f.fileno())  # DONTNEED leaves dirty pages in the cache
        for _ in range(COLD_STARTS):
            for b in binaries:
                runs[b].append(cold_start(private.get(b, b)))
    finally:
        if copies:
            shutil.rmtree(copies)
    for b in binaries:
        rss = [r for r, _, _ in runs[b]]
        init = statistics.median(s for _, s, _ in runs[b]) * 1e3
        print(f"{b}: RSS after init median {statistics.median(rss) / 1024:.2f} MiB, mean {statistics.mean(rss) / 1024:.2f} "
              f"({min(rss) / 1024:.2f}-{max(rss) / 1024:.2f}), init median {init:.2f} ms, {COLD_STARTS} cold starts"
              + (", each with the executable out of the page cache" if EVICT else ""))
        # Averaged over the cold starts: ASLR moves the executable by whole pages, and with it
        # which 64 KB fault-around windows its init code falls in, so one start is one draw.
        split = collections.defaultdict(lambda: [0, 0])
        for _, _, one in runs[b]:
            for mapping, (resident, anonymous) in one.items():
                split[mapping][0] += resident / len(runs[b])
                split[mapping][1] += anonymous / len(runs[b])
        for (name, perms), (resident, anonymous) in sorted(split.items(), key=lambda kv: -kv[1][0])[:12]:
            if resident >= 1:
                print(f"    {name:28} {perms}  {resident:6.0f} kB resident, {anonymous:6.0f} kB anonymous (mean)")


main()
