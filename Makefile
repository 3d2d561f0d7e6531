GO      ?= go
GOFLAGS ?= -trimpath
LDFLAGS ?= -s -w
BIN     ?= bin
# make bench BENCHFLAGS='--quick' (or --runs 5, --idle 10s, --only scale; see bin/bench --help)
BENCHFLAGS ?=

.PHONY: all build test test-etcd35 test-short fuzz-short bench lint demo tidy-check clean

all: build

# Release binaries: what the app image and the gateway get.
# The registrar goes into every app image: it must stay within 20 MB.
build:
	$(GO) build $(GOFLAGS) -ldflags='$(LDFLAGS)' -o $(BIN)/ ./cmd/...
	@size=$$(stat -c %s $(BIN)/registrar); test $$size -le 20000000 || \
		{ echo "$(BIN)/registrar is $$size bytes: over the 20 MB an app image can carry"; exit 1; }

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) test-etcd35
	$(MAKE) fuzz-short

# etcd v3.5.23, the oldest etcd server rollcall supports, built from its
# own module (tools/etcd35: rollcall itself builds against v3.6).
# test-etcd35 runs the tests that talk to etcd against it instead of the
# embedded v3.6 server (internal/etcdtest: ROLLCALL_TEST_ETCD; TLS and
# three-member clusters stay embedded): all but integration/rolling and
# cmd/demo, which take the registrar's and renderer's etcd paths that
# integration/ already runs, and add minutes. About 3 minutes on 2 cores.
ETCD35      = $(BIN)/etcd-3.5.23
ETCD35_PKGS = ./etcdclient/ ./registrar/ ./renderer/ ./integration/ ./cmd/registrar/ ./deploy/
$(ETCD35): tools/etcd35/go.mod tools/etcd35/go.sum tools/etcd35/main.go
	cd tools/etcd35 && $(GO) build $(GOFLAGS) -o $(abspath $(ETCD35)) .
test-etcd35: $(ETCD35)
	$(ETCD35) --version | grep -qx 'etcd Version: 3.5.23'
	ROLLCALL_TEST_ETCD=$(abspath $(ETCD35)) $(GO) test -count=1 -timeout 15m $(ETCD35_PKGS)

# Each fuzz target (parsers of untrusted input) for FUZZTIME, on top of the
# seed corpus (testdata/fuzz) that plain `go test` runs. Packages and
# targets are found, so a new Fuzz* function needs no edit here. 8 targets
# at 3s and their builds take about a minute on 2 cores; explore longer
# with `make fuzz-short FUZZTIME=5m`.
FUZZ_PKGS ?= $(sort $(dir $(shell grep -rl --include='*_test.go' '^func Fuzz' .)))
FUZZTIME  ?= 3s
fuzz-short:
	@set -e; for pkg in $(FUZZ_PKGS); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

test-short:
	$(GO) test -short -count=1 ./...

# The load harness against real etcd, nginx and HAProxy (writes
# bench/RESULTS.md; ~17 minutes on 2 cores), then the Go micro-benchmarks. Not part of CI.
bench: build
	$(GO) build $(GOFLAGS) -o $(BIN)/bench ./bench
	$(BIN)/bench --bin $(BIN) $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# The whole loop on one machine, under a minute: see cmd/demo.
demo: build
	$(BIN)/demo --bin $(BIN)

tidy-check:
	$(GO) mod tidy
	git diff --exit-code go.mod go.sum

clean:
	rm -rf $(BIN)
