# golive — see `make help`.
SHELL := /bin/bash
GO ?= go
BIN := bin
BUF := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/golive/golive/internal/version.Version=$(VERSION)

.PHONY: help build demo test bench proto lint fuzz soak clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/golive-controller and bin/golive-agent
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/golive-controller ./cmd/controller
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/golive-agent ./cmd/agent

demo: build releases ## run a controller on embedded etcd, 3 agents, an authorized deploy and a failing release rolled back, locally
	bash deploy/demo/demo.sh

test: ## vet, gofmt check, unit + integration tests (race on), fuzz seed corpora
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) test -race -count=1 -timeout 40m ./...

.PHONY: test-repeat
test-repeat: ## go test -race ./... N times (default 3): stop at the first failing run, name its failed tests
	@n=$${N:-3}; log=$$(mktemp -t golive-test-repeat.XXXXXX); \
	for i in $$(seq 1 $$n); do \
	  echo "== run $$i of $$n (output in $$log)"; \
	  if ! $(GO) test -race -count=1 -timeout 40m ./... >$$log 2>&1; then \
	    echo "run $$i of $$n failed; failed tests:"; \
	    grep -E -e '--- FAIL' -e '^(FAIL|panic:)' $$log | sed 's/^/  /'; \
	    echo "full output: $$log"; exit 1; \
	  fi; \
	done; rm -f $$log; echo "all $$n runs passed"

bench: build ## run the benchmark programs and print their tables (one: make bench BENCH="-only dns")
	$(GO) run ./internal/bench/cmd/golive-bench $(BENCH)

proto: ## regenerate proto/golive/v1/*.pb.go with pinned buf and plugins
	$(BUF) lint
	$(BUF) generate

lint: ## buf lint, go vet, gofmt
	$(BUF) lint
	$(GO) vet ./...
	gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for t in $$($(GO) test -list 'Fuzz.*' ./... 2>/dev/null | grep -E '^(Fuzz|ok)' | awk '/^Fuzz/{n[c++]=$$1} /^ok/{for(i=0;i<c;i++) print $$2":"n[i]; c=0}'); do \
	  echo "== $$t"; $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $${FUZZTIME:-30s} $${t%%:*} || exit 1; done

.PHONY: releases
releases: ## build dist/sampleapp-v1..v5 (v3 fails health, v4 answers 500 on 5% of /, v5 adds 300 ms to /), ledger-v1/v2 and dist/SHA256SUMS
	bash cmd/sampleapp/mkreleases.sh dist

soak: ## kill -9 the agent at every deploy stage boundary ROUNDS times (default 48: about 1,000 kills); prints torn hosts
	GOLIVE_CRASH_ROUNDS=$${ROUNDS:-48} $(GO) test -count=1 -timeout 4h -run 'TestKill9AtEveryStageBoundary' -v ./internal/e2e/ \
	  | grep --line-buffered -E 'kill -9 at stage boundaries|serves|_test.go:[0-9]+:|^(--- |ok|FAIL)'

clean: ## remove build output
	rm -rf $(BIN) dist

.PHONY: package
package: ## build dist/golive-{controller,agent}_<version>_amd64.deb (nfpm; Debian version from git describe)
	$(GO) run ./internal/packaging/cmd/mkdeb -out dist -binary-version $(VERSION)
