GO      ?= go
GOFLAGS ?= -trimpath
BIN     ?= bin

.PHONY: all build test test-short bench lint demo tidy-check clean

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

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
