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

# The dashboard's graph library (cytoscape) likewise: npm installs the
# pinned version and the minified build goes to dashboard/assets/vendor/.
if [ -f dashboard/assets/package.json ]; then
  if [ ! -f dashboard/assets/node_modules/cytoscape/dist/cytoscape.min.js ] ||
    [ dashboard/assets/package-lock.json -nt dashboard/assets/node_modules/.package-lock.json ]; then
    echo "setup: npm ci (dashboard)"
    (cd dashboard/assets && npm ci --no-audit --no-fund --silent)
  fi
  if ! cmp -s dashboard/assets/node_modules/cytoscape/dist/cytoscape.min.js dashboard/assets/vendor/cytoscape.min.js; then
    echo "setup: vendoring cytoscape.min.js into dashboard/assets/vendor/"
    cp dashboard/assets/node_modules/cytoscape/dist/cytoscape.min.js dashboard/assets/vendor/cytoscape.min.js
  fi
fi
