// Package node is the composition root of a Gradient node: it builds the
// hub, the ingest servers (RTSP, SRT, RTMP), the egress handlers (WHEP, HLS, RTSP
// read, the player page), gossip membership, and the HTTP server with the
// API, the dashboard and /metrics, from one Config, and runs them until it
// is closed.
package node
