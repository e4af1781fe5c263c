# gitlab-secrets-appliance. `make run` starts a dev node; `make test` runs
# every test (unit, in-process and multi-process). See README.md.

GO       ?= go
BIN      := bin/gitlab-secrets-appliance
FIPS_BIN := bin/gitlab-secrets-appliance-fips
MODULE   := gitlab.com/gitlab-org/gitlab-secrets-appliance
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS  := -s -w -X $(MODULE)/appliance.Version=$(VERSION) \
            -X github.com/openbao/openbao/version.fullVersion=2.4.0
TEST_TIMEOUT ?= 60m
# The frozen Go Cryptographic Module a FIPS build compiles against
# ($(GOROOT)/lib/fips140). GOFIPS140 also makes fips140=on the binary's
# default GODEBUG: nothing has to be set at run time.
GOFIPS140_VERSION ?= v1.0.0
# Packages: a semantic version (deb and rpm order by it) and the commit time
# as every file's mtime, so that the same commit gives the same packages.
PKG_VERSION ?= 0.1.0-dev.$(shell git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || echo 0).g$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)

# The checksum database lacks some openbao modules; go.sum is committed.
export GONOSUMDB := github.com/openbao/*,gitlab.com/gitlab-org/*
export GOFLAGS   := -mod=readonly

.PHONY: build build-fips run test test-deps test-fips chaos fuzz package bench lint clean advisories docs

# -buildmode=pie: a position-independent executable (ASLR for the code too;
# lintian: hardening-no-pie); the packager refuses any other.
build: $(BIN)

$(BIN): FORCE
	$(GO) build -buildmode=pie -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/gitlab-secrets-appliance

# A FIPS 140-3 build is a separate full build (every package that uses
# crypto compiles against the snapshot). Afterwards the result is asserted,
# as RKE2 asserts its FIPS crypto after building: the build information
# names the module and fips140=on, and the binary reports FIPS 140-3 on.
build-fips: $(FIPS_BIN)

$(FIPS_BIN): FORCE
	GOFIPS140=$(GOFIPS140_VERSION) $(GO) build -buildmode=pie -ldflags '$(LDFLAGS)' -o $(FIPS_BIN) ./cmd/gitlab-secrets-appliance
	@$(GO) version -m $(FIPS_BIN) | grep -q 'GOFIPS140=$(GOFIPS140_VERSION)' || { echo "$(FIPS_BIN): not built with GOFIPS140=$(GOFIPS140_VERSION)"; exit 1; }
	@$(GO) version -m $(FIPS_BIN) | grep -q 'DefaultGODEBUG=.*fips140=on' || { echo "$(FIPS_BIN): fips140=on is not its default GODEBUG"; exit 1; }
	@./$(FIPS_BIN) version --format json | grep -q '"enabled": true' || { echo "$(FIPS_BIN): does not report FIPS 140-3 on"; exit 1; }
	@./$(FIPS_BIN) version

run: build
	./$(BIN) dev

# test/runner and packaging/nfpm are their own modules (GitLab Runner's
# Vault client, nFPM and their dependencies stay out of the server's build).
# The test tools come first: scripts/test-deps.sh installs what is missing
# (apt-get, as root or with sudo) or stops with the command to run.
test: test-deps
	@$(MAKE) --no-print-directory lint
	GSA_TEST_BINARY= $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd test/runner && GSA_TEST_BINARY= $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd packaging/nfpm && $(GO) test -count=1 ./...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

# The fips package's tests as a FIPS build, then the process suites (test/
# and test/runner) on the FIPS binary, with the FIPS-only tests enabled.
test-fips: build-fips
	GOFIPS140=$(GOFIPS140_VERSION) $(GO) test -count=1 ./fips/...
	GSA_TEST_BINARY=$(CURDIR)/$(FIPS_BIN) GSA_TEST_FIPS_BINARY=$(CURDIR)/$(FIPS_BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./test/...
	cd test/runner && GSA_TEST_BINARY=$(CURDIR)/$(FIPS_BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# .deb and .rpm in dist/, built by packaging/nfpm (nFPM as a library) from
# bin/gitlab-secrets-appliance, the systemd unit and the sample config;
# then the package tests check them too.
package: build
	rm -rf dist
	cd packaging/nfpm && $(GO) run . -binary $(CURDIR)/$(BIN) -unit $(CURDIR)/systemd/gitlab-secrets-appliance.service \
		-version $(PKG_VERSION) -out $(CURDIR)/dist
	cd packaging/nfpm && $(GO) test -count=1 -run 'TestMakePackageArtifacts' ./...

test-deps:
	@scripts/test-deps.sh

# The advisories table (docs/security/advisories.md) was reviewed for the
# OpenBao that go.mod embeds; make test runs the same check.
advisories:
	$(GO) test -count=1 -run '^TestAdvisoriesReviewedForEmbeddedVersion$$' ./test/

# The generated reference: docs/reference/cli.md and the exit code table of
# docs/reference/exit-codes.md, from the command table; make test fails
# (TestCLIReferenceUpToDate) while they differ from the code.
docs:
	GSA_UPDATE_DOCS=1 $(GO) test -count=1 -run '^TestCLIReferenceUpToDate$$' ./internal/cli/

# Every fuzz target for FUZZTIME (the seed corpora run in every go test).
# -fuzzminimizetime 0: the appliance's targets instrument the whole embedded
# server and make little progress while minimizing.
FUZZTIME      ?= 1m
TEST_FUZZTIME ?= 10s
FUZZ_TARGETS  := seal:FuzzDecodeShare seal:FuzzDecodeHeader seal:FuzzChangeInputs config:FuzzParseHCL config:FuzzParseJSON geo:FuzzTopology appliance/filter:FuzzRequestFilter
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
	  $(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 0 || exit 1; done

# The fault campaign alone, ROUNDS rounds (make test runs one of each
# fault): per round the fault, write gap, answers by kind, acknowledged and
# lost writes, the restarted nodes' not-ready windows; then the summary.
# Then the storage damage: every file of a node's data dir truncated,
# overwritten with random pages, deleted (make test runs three cases).
ROUNDS ?= 50
# The old Geo site paused across a disaster promotion, for these pauses
# (each with and without half-open links to the new site).
GEO_PAUSES ?= 5s,30s,60s,100s,150s,200s

chaos: test-deps
	GSA_TEST_BINARY= GSA_CHAOS_ROUNDS=$(ROUNDS) $(GO) test -count=1 -timeout 120m -run 'TestChaos$$' -v ./test/
	GSA_TEST_BINARY= GSA_STORAGE_DAMAGE=all $(GO) test -count=1 -timeout 60m -run '^TestStorageDamage$$' -v ./test/
	GSA_TEST_BINARY= GSA_GEO_PAUSES='$(GEO_PAUSES)' $(GO) test -count=1 -timeout 120m -run '^TestChaosGeoPause$$' -v ./test/

# The request filter's cost: a micro-benchmark of the whole filter on
# GitLab-shaped requests (a job's JWT login, a job's KV v2 read, Rails'
# inline-auth write), then the servers. BENCH_BASELINE=<appliance binary>
# (a build before a change) adds a second table, appliance/baseline,
# measured in the same rounds.
BENCH_BASELINE ?=
bench: build
	$(GO) test -run '^$$' -bench '^BenchmarkFilterOnGitLabTraffic$$' -benchmem -count 3 ./appliance/filter
	$(GO) run ./test/bench -appliance ./$(BIN) $(if $(BENCH_BASELINE),-baseline $(BENCH_BASELINE))
	GSA_BENCH_GEO=1 GSA_TEST_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -run '^TestGeoBench$$' -v ./test/
	GSA_BENCH_ROLLING=1 GSA_TEST_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -run '^TestRollingRestartBench$$' -v ./test/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test/runner && $(GO) vet ./...
	cd packaging/nfpm && $(GO) vet ./...

clean:
	rm -rf bin .bench dist

FORCE:
