# gitlab-secrets-appliance. `make run` starts a dev node; `make test` runs
# every test (unit, in-process and multi-process). See README.md.

GO       ?= go
BIN      := bin/gitlab-secrets-appliance
MODULE   := gitlab.com/gitlab-org/gitlab-secrets-appliance
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS  := -s -w -X $(MODULE)/appliance.Version=$(VERSION) \
            -X github.com/openbao/openbao/version.fullVersion=2.4.0
TEST_TIMEOUT ?= 60m

# The checksum database lacks some openbao modules; go.sum is committed.
export GONOSUMDB := github.com/openbao/*,gitlab.com/gitlab-org/*
export GOFLAGS   := -mod=readonly

.PHONY: build run test test-deps bench lint clean

build: $(BIN)

$(BIN): FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/gitlab-secrets-appliance

run: build
	./$(BIN) dev

# test/runner is its own module (GitLab Runner's Vault client and its
# dependencies stay out of the server's build). The test tools come first:
# scripts/test-deps.sh installs what is missing (apt-get, as root or with
# sudo) or stops with the command to run.
test: test-deps
	@$(MAKE) --no-print-directory lint
	GSA_TEST_BINARY= $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd test/runner && GSA_TEST_BINARY= $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-deps:
	@scripts/test-deps.sh

bench: build
	$(GO) run ./test/bench -appliance ./$(BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test/runner && $(GO) vet ./...

clean:
	rm -rf bin .bench

FORCE:
