"""`make profile-floor`: where the receiver's CPU above the SDK-only function (examples/sdk-floor.rs)
goes, per accepted event. Both binaries serve the same function-URL events from a stand-in
Runtime API against moto (AWS_ENDPOINT_URL, from scripts/with-moto.sh): first unperturbed, for
the CPU per event (schedstat), then under `perf record` (sampled, no call graph), whose samples
are sorted into the categories below, each binary's split applied to its own unperturbed CPU.

Usage: profile-floor.py RECEIVER FLOOR [EVENTS]. Writes target/profile/vs-floor.md.
Needs perf (linux-perf) and root or perf_event_paranoid <= 1; uncapped, so the absolute figures
are a full core's (make bench's are the reference); the split is what this adds.

`profile-floor.py --instructions [--late-duplicates] BINARY...` (`make profile-instructions`):
instructions per accepted event of each binary instead, counted by callgrind (valgrind) over 200
events after the warm-up, with nothing counted before. Repeatable to about 0.5 %, where schedstat
CPU on this VM moves by 10 % between runs: the measure for an A/B of two builds. Callgrind hides
SHA-NI, so SHA-256 (SigV4, the payload's fingerprint) counts as the software fallback. Each dump
is kept (target/profile/callgrind.<n>-<binary>[-late-duplicates].out, the last run's of each mode,
for `callgrind_annotate --inclusive=yes`), and for unstripped builds the instructions are split by
where they go (SPLIT below), each binary's rows and the last binary's difference from the first.
`--late-duplicates`: every counted event a late duplicate (its key claimed during the warm-up)
instead of a new event."""
import glob, json, os, re, shutil, signal, subprocess, sys, threading, time, uuid, collections
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

INSTRUCTIONS = len(sys.argv) > 1 and sys.argv[1] == "--instructions"
LATE_DUPLICATES = INSTRUCTIONS and "--late-duplicates" in sys.argv[2:]
RECEIVER, FLOOR = (None, None) if INSTRUCTIONS else (sys.argv[1], sys.argv[2])
EVENTS = 200 if INSTRUCTIONS else max(1, int(sys.argv[3])) if len(sys.argv) > 3 else 600
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target/profile")
LOG = os.path.join(OUT, "profile-floor.log")
MOTO = os.environ["AWS_ENDPOINT_URL"]
SECRET = "whsec_profile_secret_1234567890abcdef"
BODY = json.load(open(os.path.join(ROOT, "events/stigg/subscription.created.json")))

# First match wins: a sample's function name (and library) decides its category.
CATEGORIES = [
    ("malloc, free, memcpy (glibc)", lambda s, d: re.search(r"/libc\.so|/libc-", d)),
    ("kernel: syscalls (the log line's write among them), scheduling", lambda s, d: d.startswith("[kernel")),
    ("tracing: lambda_runtime's per-invocation span (its fields formatted by the JSON layer), enter/exit per poll",
     lambda s, d: re.search(r"^<?(tracing|tracing_subscriber|tracing_core|thread_local|sharded_slab)::|Instrumented", s)),
    ("serde_json: the function-URL event, the payload, the log line, the response", lambda s, d: "serde_json" in s),
    ("lambda_runtime, lambda_http: the event to an http::Request and back", lambda s, d: re.search(r"lambda_runtime|lambda_http|aws_lambda_events", s)),
    ("SHA-256 (SigV4 signs in both; ours also fingerprints the payload)", lambda s, d: re.search(r"sha2::", s)),
    ("ours: handler, secret check, payload checks, log line (inlined into main)",
     lambda s, d: re.search(r"stigg_webhooks|receiver::main|subtle", s)),
    ("AWS SDK: orchestrator, SigV4, (de)serializers (the queue attributes)", lambda s, d: re.search(r"aws_|sigv4", s)),
    ("HTTP: hyper, http, hyper_util, httparse, url", lambda s, d: re.search(r"hyper|^<?http::|httparse|^<?url::|http_body", s)),
    ("Rust runtime: alloc, core, std, hashbrown, tokio, futures (callers not sampled)", lambda s, d: True),
]


class RuntimeApi:
    """The two Runtime API calls a function makes per invocation, on 127.0.0.1."""

    def __init__(self):
        self.events, self.answers, self.cv = [], {}, threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with api.cv:
                    while not api.events:
                        api.cv.wait()
                    rid, event = api.events.pop(0)
                data = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:receiver")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with api.cv:
                    api.answers[self.path.split("/")[4]] = data
                    api.cv.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, event, function):
        """The function's answer; fails if it exits or takes over 30 s (an init error, a crash)."""
        rid, deadline = str(uuid.uuid4()), time.monotonic() + 30
        with self.cv:
            self.events.append((rid, event))
            self.cv.notify_all()
            while rid not in self.answers:
                if function.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{function.args[-1]} did not answer (exit {function.poll()}); see {LOG}")
                self.cv.wait(0.5)
            return json.loads(self.answers.pop(rid))


def url_event(message_id=None):
    body = dict(BODY, messageId=message_id or str(uuid.uuid4()))
    return {"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
            "headers": {"stigg-webhooks-secret": SECRET, "content-type": "application/json", "user-agent": "Stigg"},
            "requestContext": {"accountId": "anonymous", "apiId": "profile", "domainName": "x.lambda-url.us-east-1.on.aws",
                               "requestId": "r", "timeEpoch": 0,
                               "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "18.119.35.43", "userAgent": "Stigg"}},
            "body": json.dumps(body), "isBase64Encoded": False}


def cpu_ns(pid):
    return sum(int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0]) for t in os.listdir(f"/proc/{pid}/task"))


def run(binary, perf_data=None, callgrind=None, late_duplicates=False):
    """CPU per accepted event (µs) over EVENTS new events, after 30 warm-up events; with
    `callgrind` (the path to keep the dump at), instructions per event instead (the process under
    valgrind); with `late_duplicates`, the counted events are late duplicates of the first
    warm-up event."""
    session = boto3.session.Session(region_name="us-east-1")
    ddb, sqs = session.client("dynamodb", endpoint_url=MOTO), session.client("sqs", endpoint_url=MOTO)
    table, queue = f"profile-{uuid.uuid4().hex[:8]}", f"profile-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    api = RuntimeApi()
    env = {"PATH": os.environ["PATH"], "AWS_LAMBDA_RUNTIME_API": api.address, "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": MOTO,
           "STIGG_WEBHOOK_SECRET": SECRET, "IDEMPOTENCY_TABLE": table, "EVENTS_QUEUE_URL": queue_url,
           "AWS_LAMBDA_FUNCTION_NAME": "receiver", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
           "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_LOG_FORMAT": "json"}
    log = open(LOG, "ab")
    dump = os.path.join(OUT, f"callgrind.{uuid.uuid4().hex[:8]}")
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dump}", binary] \
        if callgrind else [binary]
    function = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    perf = None
    try:
        duplicate_key = str(uuid.uuid4())
        for i in range(30):
            api.invoke(url_event(duplicate_key if i == 0 else None), function)
        if perf_data:
            if os.path.exists(perf_data):
                os.remove(perf_data)
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "10000", "-p", str(function.pid), "-o", perf_data],
                                    stdout=log, stderr=log)
            time.sleep(1.0)
            if perf.poll() is not None:
                raise SystemExit(f"perf record exited ({perf.returncode}); see {LOG}")
        if callgrind:
            subprocess.run(["callgrind_control", "--instr=on", str(function.pid)], check=True, capture_output=True)
        before = cpu_ns(function.pid)
        expected = 200 if late_duplicates else 202
        for _ in range(EVENTS):
            status = api.invoke(url_event(duplicate_key if late_duplicates else None), function).get("statusCode")
            assert status == expected, f"{binary} answered {status}, not {expected}"
        if callgrind:
            # callgrind_control exits 0 even when it reached no process: the dump file is the proof.
            subprocess.run(["callgrind_control", "--dump", str(function.pid)], check=True, capture_output=True)
            dumped = os.path.join(OUT, os.path.basename(dump) + ".1")
            total = sum(int(line.split()[1]) for line in open(dumped) if line.startswith("totals:")) \
                if os.path.exists(dumped) else 0
            if total == 0:
                raise SystemExit(f"callgrind_control did not dump {binary} (pid {function.pid}); see {LOG}")
            shutil.move(dumped, callgrind)
            return total / EVENTS
        return (cpu_ns(function.pid) - before) / EVENTS / 1e3
    finally:
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        function.kill()
        function.wait()
        if callgrind:
            # SIGKILL skips valgrind's clean-up: its gdbserver pipes and the dump files.
            for leftover in glob.glob(f"/tmp/vgdb-pipe-*-{function.pid}-*") + glob.glob(dump + "*"):
                os.remove(leftover)
        api.server.shutdown()
        api.server.server_close()
        log.close()


def categories(perf_data):
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "ip,sym,dso"], capture_output=True, text=True, check=True).stdout
    counts, total = collections.Counter(), 0
    for line in out.splitlines():
        m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)$", line)
        if not m:
            continue
        total += 1
        for name, matches in CATEGORIES:
            if matches(m.group(1), m.group(2)):
                counts[name] += 1
                break
    if total == 0:
        raise SystemExit(f"no samples in {perf_data}; see {LOG}")
    return {name: n / total for name, n in counts.items()}


# Where a function's instructions go, from callgrind's inclusive counts (function names of an
# unstripped build): each row a difference of the inclusive counts of these functions, so the
# rows add up to the total. The handler is the `service_fn` closure's future of `main` (ours
# and the SDK-only function's alike); `lambda_http`'s conversion wraps it, so it falls in the
# invocation's row. Spawned tasks (hyper's connection tasks, which read and write both clients'
# HTTP) are polled by the runtime outside any invocation.
INVOCATION = r"lambda_runtime::runtime::process_invocation::\{\{closure\}\}"
TASKS = r"tokio::runtime::task::raw::poll"
HANDLER = r"::main::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}"
ORCHESTRATOR = r"aws_smithy_runtime::client::orchestrator::invoke_with_stop_point::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}"
DIGEST = r"<D as digest::digest::Digest>::digest"
SHA = r"sha2::sha256::compress256"
REQUIRED = (INVOCATION, TASKS, HANDLER, ORCHESTRATOR, SHA)
SPLIT = [
    ("the runtime's loop: the next-event request, the answer posted, polling",
     lambda c: c["total"] - c[INVOCATION] - c[TASKS]),
    ("connection tasks: hyper writing requests and parsing responses, both clients", lambda c: c[TASKS]),
    ("the event in and the answer out (lambda_runtime, lambda_http's conversion, the invocation's span)",
     lambda c: c[INVOCATION] - c[HANDLER]),
    ("the SDK's orchestrator per operation, retries included: endpoint, serialize, SigV4, hand-off, deserialize",
     lambda c: c[ORCHESTRATOR]),
    ("SHA-256 digests outside SigV4 (ours: the payload's fingerprint, the secret check)", lambda c: c[DIGEST]),
    ("the handler: its own work (checks, log line, answer) and each SDK call's set-up outside the "
     "orchestrator (the request built, runtime plugins, config layers)",
     lambda c: c[HANDLER] - c[ORCHESTRATOR] - c[DIGEST]),
]


def inclusive(dump):
    """Inclusive instruction counts of the functions SPLIT reads, and the total; or why the
    split cannot be made (each function must be found exactly once, each row non-negative)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    counts, found = collections.Counter(), collections.defaultdict(list)
    for line in out.splitlines():
        if line.strip().endswith("PROGRAM TOTALS"):
            counts["total"] = int(line.split()[0].replace(",", ""))
        m = re.match(r"\s*([\d,]+) .*?:(\S.*?)(?: \[[^]]*\])?$", line)
        if m is None:
            continue
        n, function = int(m.group(1).replace(",", "")), m.group(2)
        for pattern in REQUIRED + (DIGEST,):
            # Exact names only: not a `drop_in_place<…>` of them, not callgrind's recursion copies ('2).
            if re.search(pattern + "$", function) and not function.startswith("core::ptr::drop_in_place"):
                found[pattern].append(function)
                counts[pattern] = n
    for pattern in REQUIRED + (DIGEST,):
        if len(found[pattern]) > 1:
            return f"{pattern} matches {len(found[pattern])} functions: {found[pattern]}"
        if pattern != DIGEST and not found[pattern]:
            return f"no function named like {pattern} (a stripped build, or not a Rust function on lambda_runtime and the SDK)"
    negative = [label for label, row in SPLIT if row(counts) < 0]
    return f"negative rows: {negative}" if negative else counts


def instructions(binaries, late_duplicates):
    what = "late duplicate" if late_duplicates else "accepted event"
    results = {}
    for i, b in enumerate(binaries):
        # This run's own names: a later run of one mode replaces only its own dumps.
        kept = os.path.join(OUT, f"callgrind.{i + 1}-{os.path.basename(b)}{'-late-duplicates' if late_duplicates else ''}.out")
        results[b] = (run(b, callgrind=kept, late_duplicates=late_duplicates), kept)
    first = results[binaries[0]][0]
    for b, (n, dump) in results.items():
        print(f"{n / 1e3:9.1f} k instructions per {what} ({n / first:.3f}× the first)  {b}  [{dump}]")
    splits = {b: inclusive(dump) for b, (_, dump) in results.items()}
    for b, split in splits.items():
        if isinstance(split, str):
            print(f"(no split: {b}: {split})")
            return
    names = [f"{i + 1}: {os.path.basename(b)}" for i, b in enumerate(binaries)]
    print(f"\n| k instructions per {what} | " + " | ".join(names)
          + (f" | {len(binaries)} − 1 |" if len(binaries) > 1 else " |"))
    print("|---|" + "---|" * (len(binaries) + (len(binaries) > 1)))
    for label, row in SPLIT + [("**total**", lambda c: c["total"]),
                               ("of which SHA-256 (software under callgrind; SHA-NI natively)", lambda c: c[SHA])]:
        values = [row(splits[b]) / EVENTS / 1e3 for b in binaries]
        cells = [f"{v:.1f}" for v in values] + ([f"{values[-1] - values[0]:+.1f}"] if len(binaries) > 1 else [])
        print(f"| {label} | " + " | ".join(cells) + " |")


def main():
    # A TERM (make interrupted, a timeout) unwinds like Ctrl-C: each run's `finally` stops its
    # function and removes its files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(OUT, exist_ok=True)
    open(LOG, "wb").close()
    if INSTRUCTIONS:
        command = [a for a in sys.argv[2:] if a != "--late-duplicates"]
        if not command or shutil.which("valgrind") is None:
            raise SystemExit("usage: profile-floor.py --instructions [--late-duplicates] BINARY... "
                             "(needs valgrind: apt-get install valgrind)")
        if len(set(command)) != len(command):
            raise SystemExit("each binary once: results are keyed by path")
        return instructions(command, LATE_DUPLICATES)
    # Kernel samples need root or perf_event_paranoid <= 1; without them the kernel's share would
    # land in the user-space categories.
    paranoid = int(open("/proc/sys/kernel/perf_event_paranoid").read())
    if os.geteuid() != 0 and paranoid > 1:
        raise SystemExit(f"perf_event_paranoid is {paranoid}: run as root, or set it to 1")
    cpu, share = {}, {}
    for who, binary in (("ours", RECEIVER), ("floor", FLOOR)):
        cpu[who] = run(binary)
        data = os.path.join(OUT, f"{who}.perf.data")
        sampled = run(binary, data)
        # Each binary's own unperturbed CPU, split by its samples: the rows then add up exactly.
        share[who] = {name: fraction * cpu[who] for name, fraction in categories(data).items()}
        print(f"{who}: {cpu[who]:.0f} µs per accepted event unperturbed, {sampled:.0f} under perf", file=sys.stderr)
    lines = [f"CPU per accepted event, one full core, {EVENTS} events: ours {cpu['ours']:.0f} µs, "
             f"SDK-only function {cpu['floor']:.0f} µs ({cpu['ours'] / cpu['floor']:.2f}×).", "",
             "| where the difference goes | µs per event |", "|---|---|"]
    for name, _ in CATEGORIES:
        lines.append(f"| {name} | {share['ours'].get(name, 0) - share['floor'].get(name, 0):+.0f} |")
    lines.append(f"| **total** | {cpu['ours'] - cpu['floor']:+.0f} |")
    report = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "vs-floor.md"), "w").write(report)
    print(report)


if __name__ == "__main__":
    main()
