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

# test: vet, then every test with the race detector, never cached.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# bench: the micro-benchmarks of every package (no tests run).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	$(GO) fmt ./...

# clean: removes build output only, never ./mail.
clean:
	rm -rf bin
