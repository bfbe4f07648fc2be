# Gradient — live-streaming overlay CDN.
#   make run    install what is missing, build, start a node with a test pattern
#   make test   install what is missing, run the whole suite with -race
#   make bench  print the benchmark figures beside their anchors

GO ?= go
BIN := bin/gradient

.PHONY: setup build run test bench vet clean

setup:
	@bash scripts/setup.sh

build: setup
	$(GO) build -o $(BIN) ./cmd/gradient

run: build
	@bash scripts/run.sh $(BIN)

vet: setup
	$(GO) vet ./...

test: setup
	$(GO) vet ./...
	$(GO) test -race -timeout 60m ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/... ./media/... ./optimizer/...

clean:
	rm -rf bin artifacts sim-out
