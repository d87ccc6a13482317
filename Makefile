# Stigg webhooks on AWS Lambda. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

STACK ?= stigg-webhooks
EVENT ?= events/stigg/subscription.created.json
DEV_ENV := .local/dev/env
# `local-dev`: the build `make dev` made (see Cargo.toml), so the first `make send` compiles nothing.
DEV := cargo run -q --features local-dev --example stigg-dev --

.PHONY: help tools tools-test tools-local test test-unit test-faults test-ddb-local bench bench-peers bench-processors bench-mirror profile profile-floor profile-instructions profile-bins profile-rss fuzz build lint fmt clean dev send send-durable stigg-status mirror mirror-backfill replay poison redrive deploy logs

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Each target installs only what it runs: tests need moto, `make dev` also cargo-lambda, and lint,
# deploy and logs cfn-lint and the SAM CLI (most of a fresh clone's install time). `make tools`
# installs all of it (requirements-dev.txt includes the other two files).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

$(VENV)/.installed-test: requirements-test.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

# Chained, so `make -j` never runs two pip installs into the one venv at once.
$(VENV)/.installed-local: requirements-local.txt $(VENV)/.installed-test
	$(VENV)/bin/pip install --quiet -r requirements-local.txt
	touch $@

$(VENV)/.installed: requirements-dev.txt $(VENV)/.installed-local
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

tools: $(VENV)/.installed ## Install all local tooling (moto, cargo-lambda, cfn-lint, SAM CLI) into .venv
tools-test: $(VENV)/.installed-test
tools-local: $(VENV)/.installed-local

# `--features local-dev`: the build `make dev` made serves the tests too (see Cargo.toml).
test: tools-test ## Unit + integration tests (integration against a private moto on 127.0.0.1)
	scripts/with-moto.sh cargo test --features local-dev

test-unit: ## Unit tests only (no emulator)
	cargo test --features local-dev --lib --bins

test-faults: tools-test ## The fault suite alone: crashes, outages, throttling, Stigg's retry schedule (~2 min)
	scripts/with-moto.sh cargo test --features local-dev --test faults

test-ddb-local: tools-test ## Claim-protocol tests against AWS's DynamoDB Local (npm, Java 17) in a private netns
	scripts/test-ddb-local.sh

fuzz: ## Fuzz request parsing and key derivation (nightly + cargo-fuzz): FUZZ_SECONDS=600 per target
	scripts/fuzz.sh "" $${FUZZ_SECONDS:-600}

PEERS := benches/peers

$(PEERS)/python/.venv/.installed: $(PEERS)/python/requirements.txt
	$(PYTHON) -m venv $(PEERS)/python/.venv
	$(PEERS)/python/.venv/bin/pip install --quiet --upgrade pip
	$(PEERS)/python/.venv/bin/pip install --quiet -r $(PEERS)/python/requirements.txt
	touch $@

$(PEERS)/node/node_modules/.installed: $(PEERS)/node/package-lock.json
	cd $(PEERS)/node && npm ci --no-audit --no-fund --silent
	touch $@

# The Go peer needs Go and the AWS SDK for Go v2 as Debian packages them (GOPATH mode: no module
# proxy). Missing, they are installed with apt-get as root (or sudo -n); where that cannot be done
# the peer is skipped with one line and the bench runs without it. The binary is rebuilt only when
# its sources are newer.
GO_SDK := /usr/share/gocode/src/github.com/aws/aws-sdk-go-v2/service/dynamodb
GO_PACKAGES := golang-go golang-github-aws-aws-sdk-go-v2-dev

$(PEERS)/go/bin/receiver: $(wildcard $(PEERS)/go/*.go) $(PEERS)/go/build.sh
	@why=; \
	if ! command -v go >/dev/null || [ ! -d $(GO_SDK) ]; then \
	  if ! command -v apt-get >/dev/null; then why="Go or the AWS SDK for Go v2 is missing and there is no apt-get to install $(GO_PACKAGES)"; \
	  elif [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else why="Go or the AWS SDK for Go v2 is missing and installing $(GO_PACKAGES) needs root (or sudo -n)"; fi; \
	  if [ -z "$$why" ]; then \
	    echo "go peer: apt-get install $(GO_PACKAGES)"; \
	    { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GO_PACKAGES) >/dev/null 2>&1 || \
	      { $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GO_PACKAGES) >/dev/null; }; } || \
	      why="apt-get install $(GO_PACKAGES) failed"; \
	  fi; \
	fi; \
	if [ -z "$$why" ] && ! sh $(PEERS)/go/build.sh; then why="its build failed (above)"; fi; \
	if [ -n "$$why" ]; then rm -f $@; echo "go peer skipped: $$why; the bench runs without it"; fi

bench-peers: $(PEERS)/python/.venv/.installed $(PEERS)/node/node_modules/.installed $(PEERS)/go/bin/receiver ## Set up the peers the bench compares with (Python: pip venv, Node: npm ci, Go: apt-get + build)

bench: tools-test bench-peers ## Release binaries under a local Runtime API against moto, side by side with the peers (3 runs, ~60 min, root for the CPU caps); writes BENCHMARKS.md
	cargo build --release --bins
	mkdir -p target/bench-bin && cp target/release/receiver target/release/processor target/bench-bin/
	# A build of its own: an example pulls in the dev-dependencies' features, which must not reach the binaries measured.
	cargo build --release --example sdk-floor
	cp target/release/examples/sdk-floor target/bench-bin/
	scripts/check-linked-libraries.sh target/bench-bin/receiver target/bench-bin/processor target/bench-bin/sdk-floor
	BENCH_BIN_DIR=$(CURDIR)/target/bench-bin scripts/with-moto.sh cargo bench --bench stack
	# Before the receivers: their cost model reads the processor's figures (target/bench-results/processors.json).
	BENCH_BIN_DIR=$(CURDIR)/target/bench-bin scripts/with-moto.sh cargo bench --bench processors
	BENCH_BIN_DIR=$(CURDIR)/target/bench-bin scripts/with-moto.sh cargo bench --bench receivers
	scripts/with-moto.sh cargo bench --bench mirror

bench-processors: tools-test $(PEERS)/python/.venv/.installed ## Our processor and its Python peer alone: batches of 10 at a 128 MB Lambda's CPU share, happy and one in ten failing (~12 min, root for the cap); writes its BENCHMARKS.md section and target/bench-results/processors.json
	cargo build --release --bins
	mkdir -p target/bench-bin && cp target/release/processor target/bench-bin/
	BENCH_BIN_DIR=$(CURDIR)/target/bench-bin scripts/with-moto.sh cargo bench --bench processors

bench-mirror: tools-test ## The entitlement mirror against moto (release): check latency and CPU, calls per event, item sizes; writes its BENCHMARKS.md section
	scripts/with-moto.sh cargo bench --bench mirror

profile: tools-test ## Instruction counts (callgrind) of both functions under the bench harness
	scripts/profile.sh

profile-floor: tools-test ## Where the receiver's CPU above the SDK-only function (examples/sdk-floor.rs) goes, from perf samples: target/profile/vs-floor.md
	@command -v perf >/dev/null || { echo "perf is not installed (Debian: apt-get install linux-perf)" >&2; exit 1; }
	$(MAKE) --no-print-directory profile-bins
	scripts/with-moto.sh $(VENV)/bin/python scripts/profile-floor.py target/profile/release/receiver target/profile/release/examples/sdk-floor

profile-instructions: tools-test ## Instructions per accepted event (callgrind: repeatable, for A/B of two builds) of the SDK-only function and the receiver, split by where they go; LATE_DUPLICATES=1 counts late duplicates instead; BINS="a b" to compare other builds
	@command -v valgrind >/dev/null || { echo "valgrind is not installed (Debian: apt-get install valgrind)" >&2; exit 1; }
	$(MAKE) --no-print-directory profile-bins
	scripts/with-moto.sh $(VENV)/bin/python scripts/profile-floor.py --instructions $(if $(filter 1,$(LATE_DUPLICATES)),--late-duplicates) $(or $(BINS),target/profile/release/examples/sdk-floor target/profile/release/receiver)

# The receiver and the SDK-only function for profile-floor and profile-instructions: release
# code, unstripped so that profiles name functions.
profile-bins:
	CARGO_TARGET_DIR=target/profile CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --bin receiver
	# Its own build, as in make bench: an example pulls in the dev-dependencies' features.
	CARGO_TARGET_DIR=target/profile CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --example sdk-floor

profile-rss: ## RSS after init and init time of the release receiver (Runtime API stub, 21 interleaved cold starts, the mean per-mapping split); BINS="a b" compares other builds, e.g. the Go peer's benches/peers/go/bin/receiver; RSS_EVICT=1 starts each with its executable out of the page cache
	cargo build --release --bin receiver
	python3 scripts/profile-rss.py $(or $(BINS),target/release/receiver)

build: tools-local ## Release build of both functions for Lambda (arm64)
	cargo lambda build --release --arm64
	scripts/check-linked-libraries.sh $${CARGO_TARGET_DIR:-target}/lambda/*/bootstrap

lint: tools ## cfn-lint, `sam validate --lint` and the cfn-guard policy rules (policy/) on the template
	$(VENV)/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam validate --lint --region us-east-1
	scripts/guard.sh

dev: tools-local ## Local stack: moto + the functions (cargo lambda watch) + SQS pump; DURABLE=1 adds the bridge and Stigg stand-ins, MIRROR=1 the entitlement mirror, BUS=1 an EventBridge bus, archive and example subscriber
	DURABLE=$(DURABLE) MIRROR=$(MIRROR) BUS=$(BUS) scripts/dev.sh

send: ## Deliver EVENT (file or folder) like Stigg, fresh ids each time; AWS=1 for the deployed STACK; SEND_FLAGS="--duplicates 1 --keep-ids --fast"
	@if [ -n "$(AWS)" ]; then \
	  out=$$(SAM_CLI_TELEMETRY=0 sam list stack-outputs --stack-name $(STACK) --output json) || exit 1; \
	  output() { echo "$$out" | python3 -c 'import json,sys; print({o["OutputKey"]:o["OutputValue"] for o in json.load(sys.stdin)}[sys.argv[1]])' "$$1"; }; \
	  $(DEV) send --url "$$(output ReceiverUrl)" --secret-parameter "$$(output WebhookSecretParameterName)" $(SEND_FLAGS) $(EVENT); \
	else \
	  if [ -z "$(URL)" ]; then \
	    test -f $(DEV_ENV) || { echo "the local stack is not running: start 'make dev' first (or give URL=... SECRET=..., or AWS=1)"; exit 1; }; \
	    . $(DEV_ENV); \
	  fi; \
	  $(DEV) send --url "$${URL:-$${RECEIVER_URL:-http://127.0.0.1:9000/lambda-url/receiver/}}" \
	    $(if $(SECRET),--secret "$(SECRET)") $(SEND_FLAGS) $(EVENT); \
	fi

send-durable: ## Put EVENT (file or folder) on the local Stigg queue of `make dev DURABLE=1`, fresh ids; SNS=1 wraps it in an SNS envelope
	@test -f $(DEV_ENV) || { echo "the local stack is not running: start 'make dev DURABLE=1' first"; exit 1; }
	@. $(DEV_ENV); test -n "$$STIGG_QUEUE_URL" || { echo "the local stack runs without the durable channel: restart it with 'make dev DURABLE=1'"; exit 1; }; \
	  $(DEV) send-durable --queue-url "$$STIGG_QUEUE_URL" $(if $(SNS),--sns) $(EVENT)

stigg-status: ## Stigg's status page as a table: uptime per component, open incidents (STIGG_STATUS_URL=... for another page)
	@$(DEV) status $(if $(STIGG_STATUS_URL),--url "$(STIGG_STATUS_URL)")

mirror: ## A customer's mirrored entitlements: CUSTOMER=... [RESOURCE=...] [FEATURE=... REQUESTED=n]; local (make dev MIRROR=1) or AWS=1
	@if [ -n "$(AWS)" ]; then \
	  out=$$(SAM_CLI_TELEMETRY=0 sam list stack-outputs --stack-name $(STACK) --output json) || exit 1; \
	  output() { echo "$$out" | python3 -c 'import json,sys; print({o["OutputKey"]:o["OutputValue"] for o in json.load(sys.stdin)}.get(sys.argv[1],""))' "$$1"; }; \
	  table=$$(output EntitlementMirrorTableName); parameter=$$(output StiggServerKeyParameterName); \
	  test -n "$$table" || { echo "the stack has no mirror: deploy with EntitlementMirror=Enabled"; exit 1; }; \
	else \
	  test -f $(DEV_ENV) || { echo "the local stack is not running: start 'make dev MIRROR=1' first (or AWS=1)"; exit 1; }; \
	  . $(DEV_ENV); table="$$ENTITLEMENT_MIRROR_TABLE"; \
	  test -n "$$table" || { echo "the local stack runs without the mirror: restart it with 'make dev MIRROR=1'"; exit 1; }; \
	fi; \
	test -n "$(CUSTOMER)" || { echo "give CUSTOMER=<customer id>"; exit 1; }; \
	$(DEV) mirror --table "$$table" $${parameter:+--api-key-parameter "$$parameter"} --customer "$(CUSTOMER)" $(if $(RESOURCE),--resource "$(RESOURCE)") $(if $(FEATURE),--feature "$(FEATURE)") $(if $(REQUESTED),--requested $(REQUESTED))

mirror-backfill: ## Fill the entitlement mirror from Stigg's API (every customer, resumable, progress): local (make dev MIRROR=1) or AWS=1; RESTART=1 starts over; BACKFILL_FLAGS="--in-flight 8 --per-minute 600 --budget-seconds 300"
	@if [ -n "$(AWS)" ]; then \
	  out=$$(SAM_CLI_TELEMETRY=0 sam list stack-outputs --stack-name $(STACK) --output json) || exit 1; \
	  output() { echo "$$out" | python3 -c 'import json,sys; print({o["OutputKey"]:o["OutputValue"] for o in json.load(sys.stdin)}.get(sys.argv[1],""))' "$$1"; }; \
	  table=$$(output EntitlementMirrorTableName); parameter=$$(output StiggServerKeyParameterName); \
	  test -n "$$table" || { echo "the stack has no mirror: deploy with EntitlementMirror=Enabled"; exit 1; }; \
	  test -n "$$parameter" || { echo "the stack has no Stigg server key: deploy with StiggServerKeyParameterName=<SSM SecureString name>"; exit 1; }; \
	  $(DEV) mirror-backfill --table "$$table" --api-key-parameter "$$parameter" $(if $(RESTART),--restart) $(BACKFILL_FLAGS); \
	else \
	  test -f $(DEV_ENV) || { echo "the local stack is not running: start 'make dev MIRROR=1' first (or AWS=1)"; exit 1; }; \
	  . $(DEV_ENV); \
	  { test -n "$$ENTITLEMENT_MIRROR_TABLE" && test -n "$$STIGG_API_URL"; } || { echo "the local stack runs without the mirror: restart it with 'make dev MIRROR=1'"; exit 1; }; \
	  $(DEV) mirror-backfill --table "$$ENTITLEMENT_MIRROR_TABLE" --api-url "$$STIGG_API_URL" $(if $(RESTART),--restart) $(BACKFILL_FLAGS); \
	fi

# FROM, TO, PATTERN and RULES are read from the recipe's environment (make exports command-line
# variables), so a JSON pattern needs no escaping beyond the shell's: PATTERN='{"detail-type":[...]}'.
replay: ## Replay the EventBridge archive: FROM=<time> TO=<time> (RFC 3339, a date, now, -10m/-2h/-7d) [PATTERN=<event pattern JSON or event type> TO_HANDLERS=1] [RULES=<rule arn,...>|none] [AWS=1]
	@{ test -n "$$FROM" && test -n "$$TO"; } || { echo "give FROM=<time> TO=<time>: RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01), now, or relative (-10m, -2h, -7d)"; exit 2; }
	@if [ -n "$(AWS)" ]; then \
	  out=$$(SAM_CLI_TELEMETRY=0 sam list stack-outputs --stack-name $(STACK) --output json) || exit 1; \
	  output() { echo "$$out" | python3 -c 'import json,sys; print({o["OutputKey"]:o["OutputValue"] for o in json.load(sys.stdin)}.get(sys.argv[1],""))' "$$1"; }; \
	  archive=$$(output EventArchiveArn); bus=$$(output EventBusArn); queue=$$(output EventsQueueArn); dlq=$$(output ReplayDeadLetterQueueArn); \
	  test -n "$$archive" || { echo "the stack has no event archive: deploy with EventForwarding=NewBus (or ExistingBus) and EventArchive=Enabled"; exit 1; }; \
	  stack=$(STACK); flags=; \
	else \
	  test -f $(DEV_ENV) || { echo "the local stack is not running: start 'make dev BUS=1' first (or AWS=1)"; exit 1; }; \
	  . $(DEV_ENV); archive="$$EVENT_ARCHIVE_ARN"; bus="$$EVENT_BUS_ARN"; queue="$$EVENTS_QUEUE_ARN"; \
	  test -n "$$archive" || { echo "the local stack runs without the bus: restart it with 'make dev BUS=1'"; exit 1; }; \
	  stack=stigg-local; flags="--poll-seconds 1 --settle-seconds 0 --drain-seconds 1"; \
	fi; \
	$(DEV) replay --from "$$FROM" --to "$$TO" --archive "$$archive" $${bus:+--bus "$$bus"} --stack "$$stack" $$flags \
	  $(if $(TO_HANDLERS),--to-handlers $${queue:+--queue-arn "$$queue"} $${dlq:+--dead-letter-arn "$$dlq"}) \
	  $${PATTERN:+--pattern "$$PATTERN"} $${RULES:+--rules "$$RULES"} $(REPLAY_FLAGS)

poison: ## Put an unparseable message on the local events queue (watch it reach the DLQ)
	@test -f $(DEV_ENV) || { echo "run 'make dev' first"; exit 1; }
	@. $(DEV_ENV); $(DEV) poison --queue-url "$$EVENTS_QUEUE_URL"

redrive: ## Move the DLQ back to the events queue: local stack, or the deployed STACK with AWS=1
	@if [ -n "$(AWS)" ]; then \
	  out=$$(SAM_CLI_TELEMETRY=0 sam list stack-outputs --stack-name $(STACK) --output json); \
	  from=$$(echo "$$out" | python3 -c 'import json,sys; print({o["OutputKey"]:o["OutputValue"] for o in json.load(sys.stdin)}["DeadLetterQueueUrl"])'); \
	  to=$$(echo "$$out" | python3 -c 'import json,sys; print({o["OutputKey"]:o["OutputValue"] for o in json.load(sys.stdin)}["EventsQueueUrl"])'); \
	  $(DEV) redrive --from "$$from" --to "$$to"; \
	else \
	  test -f $(DEV_ENV) || { echo "run 'make dev' first (or AWS=1 for the deployed stack)"; exit 1; }; \
	  . $(DEV_ENV); $(DEV) redrive --from "$$DEAD_LETTER_QUEUE_URL" --to "$$EVENTS_QUEUE_URL"; \
	fi

# Who the alarms reach is a deliberate choice: ALARM_EMAIL=<address> subscribes it to the alarms
# topic, ALARM_EMAIL=none deploys with no subscriber (the AlarmRecipient output then says that
# alarms reach nobody). A --parameter-overrides on the command line replaces samconfig.toml's
# instead of adding to it, so samconfig.toml's overrides are read and passed along with AlarmEmail.
SAMCONFIG_OVERRIDES := import shlex, tomllib; c = tomllib.load(open("samconfig.toml", "rb")).get("default", {}); \
  o = c.get("deploy", {}).get("parameters", {}).get("parameter_overrides") or c.get("global", {}).get("parameters", {}).get("parameter_overrides") or []; \
  print(" ".join(shlex.quote(v) for v in ([o] if isinstance(o, str) else o)))

deploy: tools ## sam build + sam deploy (samconfig.toml); ALARM_EMAIL=<address> or ALARM_EMAIL=none (alarms reach nobody) is required
	@case "$(ALARM_EMAIL)" in \
	  none) echo "ALARM_EMAIL=none: deploying with NO alarm recipient; every alarm reaches nobody until someone subscribes to the topic (output AlarmRecipient)." >&2 ;; \
	  *[[:space:]]*|*\'*|*\"*) echo "ALARM_EMAIL='$(ALARM_EMAIL)' is not an e-mail address (or none)" >&2; exit 2 ;; \
	  ?*@?*) ;; \
	  "") echo "make deploy needs to know who the alarms reach: ALARM_EMAIL=<address> (SNS mails it a confirmation link)," >&2; \
	      echo "or ALARM_EMAIL=none to deploy with alarms that reach nobody (say so on purpose)." >&2; exit 2 ;; \
	  *) echo "ALARM_EMAIL='$(ALARM_EMAIL)' is not an e-mail address (or none)" >&2; exit 2 ;; \
	esac
	SAM_CLI_TELEMETRY=0 sam build
	scripts/check-linked-libraries.sh .aws-sam/build/*/bootstrap
	@overrides=$$(python3 -c '$(SAMCONFIG_OVERRIDES)') || exit 1; \
	  email='$(ALARM_EMAIL)'; [ "$$email" = none ] && email=; \
	  echo "sam deploy --parameter-overrides $$overrides AlarmEmail=\"$$email\""; \
	  eval "set -- $$overrides"; \
	  SAM_CLI_TELEMETRY=0 sam deploy --parameter-overrides "$$@" "AlarmEmail=\"$$email\""

logs: tools ## Tail both functions' logs of the deployed STACK
	SAM_CLI_TELEMETRY=0 sam logs --stack-name $(STACK) --tail

fmt: ## Format the code
	cargo fmt

clean: ## Remove build outputs (keeps .venv)
	cargo clean
	rm -rf .aws-sam
