// Package bench holds Gradient's whole-node benchmarks: fan-out to many
// RTSP and WHEP readers (node CPU and memory per reader, readers held) and
// glass-to-glass latency. They print their figures beside the anchors they
// are compared with; run them with `make bench`. They are not part of
// `make test`.
package bench
