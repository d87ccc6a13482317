#!/usr/bin/env python3
"""`make profile-rss`: RSS after init and init time of receiver builds, for A/B.

`profile-rss.py BINARY...` starts each binary in turn (interleaved, `RSS_COLD_STARTS` cold starts
each, 21 by default) under a Runtime API stub on 127.0.0.1 and, at its first `GET /next`, reads
VmRSS (the bench's "RSS after init") and the time since spawn, then kills it. For the first cold
start of each binary it also prints the largest mappings of /proc/<pid>/smaps by resident kB,
with their anonymous kB (the executable's text `r-xp`, read-only data `r--p`, data `rw-p`, heap,
stack, shared libraries). Receivers and the Go peer need no AWS call
during init with an inline secret, so no emulator runs; the AWS variables point at a closed port.
"""

import collections
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

COLD_STARTS = int(os.environ.get("RSS_COLD_STARTS", "21"))
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


def cold_start(binary, detail):
    """(VmRSS kB, seconds from spawn to the first GET /next, smaps split or None)."""
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
                state["split"] = smaps(pid) if detail else None
                reached.set()
            time.sleep(2)  # hold the request: the function is killed meanwhile

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(ENV, PATH=os.environ["PATH"], AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
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
    runs = {b: [] for b in binaries}
    for i in range(COLD_STARTS):
        for b in binaries:
            runs[b].append(cold_start(b, detail=i == 0))
    for b in binaries:
        rss = [r for r, _, _ in runs[b]]
        init = statistics.median(s for _, s, _ in runs[b]) * 1e3
        print(f"{b}: RSS after init median {statistics.median(rss) / 1024:.2f} MiB "
              f"({min(rss) / 1024:.2f}-{max(rss) / 1024:.2f}), init median {init:.2f} ms, {COLD_STARTS} cold starts")
        split = runs[b][0][2]
        for (name, perms), (resident, anonymous) in sorted(split.items(), key=lambda kv: -kv[1][0])[:12]:
            if resident:
                print(f"    {name:28} {perms}  {resident:6d} kB resident, {anonymous:6d} kB anonymous")


main()
