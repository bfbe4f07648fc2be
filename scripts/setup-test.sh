#!/usr/bin/env bash
# setup-test.sh installs what only the test suite needs, after setup.sh:
# `make test` runs it, `make run` does not (a first `make run` need not wait
# for a test server's build).
set -euo pipefail
cd "$(dirname "$0")/.."

# The S3 origin tests (vod/origin_s3_test.go) run a real S3-compatible
# server, SeaweedFS's `weed server -s3`, built here from its Go module
# rather than added to go.mod (its dependency graph is huge). The version is
# the one internal/testutil/seaweed.go names (WeedVersion), the only one the
# Go module proxy resolves; `go install …@version` refuses that module
# because its go.mod has replace directives, so it is built from the module
# cache as the main module. It is installed as $(go env GOPATH)/bin/weed-<version>
# (where the tests look, unless GRADIENT_WEED names another binary) and
# skipped when present. The first build downloads ~250 modules and takes
# about 9 minutes on two busy cores (6.5 CPU-minutes; a 233 MB binary);
# later runs find it and do nothing.
weed_version=$(sed -n 's/^const WeedVersion = "\(.*\)"$/\1/p' internal/testutil/seaweed.go)
if [ -z "$weed_version" ]; then
  echo "setup: WeedVersion not found in internal/testutil/seaweed.go" >&2
  exit 1
fi
weed_bin="$(go env GOPATH)/bin/weed-$weed_version"
if [ -z "${GRADIENT_WEED:-}" ] && [ ! -x "$weed_bin" ]; then
  echo "setup: building SeaweedFS weed $weed_version (for the S3 origin tests; takes minutes)"
  # Downloaded from outside this module, so that our go.mod and go.sum are
  # not touched.
  weed_src=$(cd "${TMPDIR:-/tmp}" && GOFLAGS= GOWORK=off go mod download -json "github.com/seaweedfs/seaweedfs@$weed_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [ -z "$weed_src" ] || [ ! -d "$weed_src/weed" ]; then
    echo "setup: could not download github.com/seaweedfs/seaweedfs@$weed_version" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$weed_bin")"
  # Built to a temporary name and renamed, so that an interrupted build
  # never leaves a binary the next run would take as done.
  (cd "$weed_src" && GOWORK=off GOFLAGS=-buildvcs=false go build -o "$weed_bin.tmp" ./weed)
  mv "$weed_bin.tmp" "$weed_bin"
fi
