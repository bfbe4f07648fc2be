#!/usr/bin/env bash
# run.sh starts one node with default ports, publishes the built-in test
# pattern into it over RTSP, and prints the player URL. Ctrl-C stops both.
set -euo pipefail
BIN=${1:-bin/gradient}
HTTP=${GRADIENT_HTTP:-8080}
RTSP=${GRADIENT_RTSP:-8554}
mkdir -p data
"$BIN" node --http ":$HTTP" --rtsp ":$RTSP" &
NODE=$!
PUB=""
trap 'kill $PUB $NODE 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && break
  kill -0 $NODE 2>/dev/null || { echo "run: the node did not start" >&2; exit 1; }
  sleep 0.1
done
"$BIN" publish --testsrc --size 1280x720 --fps 30 --bitrate 2M "rtsp://127.0.0.1:$RTSP/live/test" &
PUB=$!
cat <<MSG

  Gradient node is running with a test pattern on live/test.
    player (WebRTC, HLS fallback):  http://localhost:$HTTP/live/test/
    HLS:                            http://localhost:$HTTP/live/test/index.m3u8
    RTSP:                           rtsp://localhost:$RTSP/live/test
    dashboard:                      http://localhost:$HTTP/
  Publish your own:  ffmpeg -re -i in.mp4 -c copy -f rtsp rtsp://localhost:$RTSP/live/cam1
  Ctrl-C stops.

MSG
wait $NODE
