# nanomx build, run and test targets. Override the toolchain with GO=...
GO ?= go

BIN     := bin/nanomx
# A release build stamps its version: make build VERSION=v1.0.0.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.DEFAULT_GOAL := build
.PHONY: build run test bench fmt clean

# build: the nanomx binary in bin/.
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nanomx

# run: the development default on 127.0.0.1:2525; every address @localhost
# is delivered to ./mail/localhost/catchall/. Ctrl-C stops it.
run: build
	./$(BIN) serve -log-format console

# test: vet, then every test with the race detector, never cached, then
# each fuzz target for a few seconds as a regression (make fuzz runs longer).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s

# bench: the micro-benchmarks of every package (no tests run) into
# bench/microbench.txt, then the "nanode" load profile (bench/nanode.sh):
# nanomx pinned to one CPU under nanomx bench, every scenario 3 rounds
# into fresh mailboxes (medians, min-max, wide spreads flagged), STARTTLS
# rows, the internet profile and an open-loop SLO search; results in
# bench/RESULTS.md and bench/throughput.svg. Takes about 20 minutes on a
# quiet machine (more if file creation is slow: it waits); needs 2 CPUs,
# taskset, openssl and Postfix's smtp-sink and smtp-source.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./... > bench/microbench.txt 2>&1 || { cat bench/microbench.txt; exit 1; }
	cat bench/microbench.txt
	bash bench/nanode.sh

fmt:
	$(GO) fmt ./...

# clean: removes build output only, never ./mail.
clean:
	rm -rf bin

.PHONY: crashtest fuzz

# crashtest: the long crash-safety test: CRASH_KILLS kill -9s of the real
# binary (built with -race) per durability mode, under load from 16
# senders; every message answered 250 is then checked in new/.
# NANOMX_CRASH_SEED=<seed from the log> replays a run's schedule.
CRASH_KILLS ?= 25
crashtest:
	NANOMX_CRASH_KILLS=$(CRASH_KILLS) $(GO) test -race -run 'TestCrashSafety' -count=1 -timeout 30m -v ./cmd/nanomx/

# fuzz: every fuzz target of FUZZPKGS for FUZZTIME each (go test -fuzz
# takes one target at a time). New crashers land in <pkg>/testdata/fuzz/.
FUZZTIME ?= 60s
FUZZPKGS ?= ./proto/ ./server/addrbook/ ./server/screen/ ./server/proxyproto/ ./server/auth/
# Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" as -fuzztime ends (golang/go#75804, fixed in Go 1.27):
# such a failure, with no failing input written, runs the target once more;
# any other failure fails at once.
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for pkg in $(FUZZPKGS); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "$(GO) test -run '^$$' -fuzz '^$$target\$$' -fuzztime $(FUZZTIME) $$pkg"; \
			if $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg >"$$out" 2>&1; then \
				cat "$$out"; \
			elif cat "$$out" && grep -q 'context deadline exceeded' "$$out" && ! grep -q 'Failing input written' "$$out"; then \
				echo "fuzz: $$target: the fuzztime deadline race (golang/go#75804), no failing input: once more"; \
				$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
			else \
				exit 1; \
			fi; \
		done; \
	done

.PHONY: bench-hardening

# bench-hardening: the figures of the hardening issues (bench/hardening.sh):
# a. TLS vs plaintext throughput and RSS per idle session; b. throughput
# with 5,000 slow and idle sessions open; c. peak RSS with 10,000 sessions
# and 200 x 1 MB; d. replies nobody reads; e. budget held by silent BDATs;
# f. 200 x 25 MB at once (peak RSS, all landed); g. idle sessions after a
# transaction of 100 long recipients. Writes bench/HARDENING.md in about
# seven minutes (SECTIONS="d e" runs some only, into HARDENING-partial.md);
# needs 2 CPUs, taskset, jq and openssl.
bench-hardening: build
	bash bench/hardening.sh

.PHONY: bench-peers

# bench-peers: nanomx against smtp-sink, Postfix and go-smtp (bench/peers.sh,
# as root): plaintext and STARTTLS cells, 3 alternating rounds into fresh
# mailboxes, medians and spreads, into bench/PEERS.md. About 15 minutes.
bench-peers: build
	bash bench/peers.sh
.PHONY: bench-lmtp
# bench-lmtp: 50 sessions x 10 KB for 8 s each (NANOMX_BENCH_SECONDS),
# Maildir delivery and LMTP to a private Dovecot alternating for
# NANOMX_BENCH_ROUNDS rounds (default 2), in one run.
bench-lmtp:
	go test -run '^$$' -bench LMTP -benchtime 1x ./server/

.PHONY: bench-rspamd
# bench-rspamd: 50 sessions x 10 KB for 10 s each (NANOMX_BENCH_SECONDS,
# at most 20) against a server with rspamd off, then on, one private
# rspamd (server/rspamd/rspamdtest); prints throughput, end-of-data and
# scan latency percentiles, and rspamd's RSS.
bench-rspamd:
	go test -run '^$$' -bench Rspamd -benchtime 1x ./server/
