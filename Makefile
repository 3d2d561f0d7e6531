GO      ?= go
GOFLAGS ?= -trimpath
BIN     ?= bin

.PHONY: all build test test-short fuzz-short bench lint demo tidy-check clean

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz-short

# Each fuzz target (parsers of untrusted input) for FUZZTIME, on top of the
# seed corpus (testdata/fuzz) that plain `go test` runs. The packages are
# listed; their Fuzz* targets are found, so a new target needs no edit here.
FUZZ_PKGS ?= ./registry ./renderer ./renderer/confd ./cmd/registrar
FUZZTIME  ?= 5s
fuzz-short:
	@set -e; for pkg in $(FUZZ_PKGS); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

test-short:
	$(GO) test -short -count=1 ./...

bench:
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
