#!/usr/bin/env bash
# setup.sh installs what building and testing Gradient needs on Debian 12:
# FFmpeg's -dev libraries for go-astiav, the ffmpeg/ffprobe commands used by
# tests, GStreamer (gst-launch-1.0 with x264enc and rtspclientsink) for the RTSP
# interop tests, Chromium for browser tests, nginx (the anchor of the VoD
# chunk-serving benchmark), VLC (a second HLS player for VoD titles), and the
# player's npm packages.
# It is idempotent: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(pkg-config libavcodec-dev libavformat-dev libavfilter-dev libavutil-dev
  libswscale-dev libswresample-dev libavdevice-dev ffmpeg chromium iproute2 procps
  gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  nginx vlc-bin vlc-plugin-base)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The player page's HLS fallback (hls.js) comes from npm and is not committed:
# npm installs the version package-lock.json pins, and the minified build is
# copied into egress/player/vendor/, which the binary embeds (both gitignored).
if [ -f egress/player/package.json ]; then
  # (Re)install when missing or when package-lock.json changed since.
  if [ ! -f egress/player/node_modules/hls.js/dist/hls.min.js ] ||
    [ egress/player/package-lock.json -nt egress/player/node_modules/.package-lock.json ]; then
    echo "setup: npm ci (player)"
    (cd egress/player && npm ci --no-audit --no-fund --silent)
  fi
  if ! cmp -s egress/player/node_modules/hls.js/dist/hls.min.js egress/player/vendor/hls.min.js; then
    echo "setup: vendoring hls.min.js into egress/player/vendor/"
    cp egress/player/node_modules/hls.js/dist/hls.min.js egress/player/vendor/hls.min.js
  fi
fi

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
