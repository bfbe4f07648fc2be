# Gradient — live-streaming overlay CDN.
#   make run    install what is missing, build, run the demo: 5 nodes on this host,
#               a test pattern, synthetic viewers (bin/gradient demo; Ctrl-C stops)
#   make run-node  one node with a test pattern (scripts/run.sh)
#   make test   install what is missing, run the whole suite with -race,
#               then every fuzz target for TEST_FUZZTIME (1s) each
#   make fuzz   every fuzz target for FUZZTIME each (make fuzz FUZZTIME=10m)
#   make bench  print the benchmark figures beside their anchors

GO ?= go
BIN := bin/gradient
FUZZTIME ?= 1m
TEST_FUZZTIME ?= 1s
DEMO_FLAGS ?=

.PHONY: setup build run run-node test fuzz bench vet clean

setup:
	@bash scripts/setup.sh

build: setup
	$(GO) build -o $(BIN) ./cmd/gradient

run: build
	@$(BIN) demo $(DEMO_FLAGS)

run-node: build
	@bash scripts/run.sh $(BIN)

vet: setup
	$(GO) vet ./...

test: setup
	@bash scripts/setup-test.sh
	$(GO) vet ./...
	$(GO) test -race -timeout 60m ./...
	@GO=$(GO) FUZZTIME=$(TEST_FUZZTIME) FUZZJOBS=3 FUZZPARALLEL=1 bash scripts/fuzz.sh

fuzz: setup
	@GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/... ./media/... ./optimizer/...

clean:
	rm -rf bin artifacts sim-out
