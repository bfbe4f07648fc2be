// Package vod is Gradient's on-demand side: titles (uploaded files, and
// media recorded as it arrives through a Recording) packaged once into
// fMP4 HLS whose chunks are content-addressed, a catalog of them, and the
// HTTP that serves them.
//
// A chunk (a segment or an init section) is stored once under the SHA-256
// of its bytes (ChunkStore); a title's Manifest lists, per rendition, each
// chunk's digest, size and media time, so any node can verify what it
// fetched and any cache can keep a chunk forever. The Catalog (SQLite in
// the data folder) is the truth for the titles packaged here, and holds a
// copy of the entries of the other nodes' titles (cluster.go): every node
// lists every title of the cluster, and a removal anywhere is final.
//
// vod knows nothing of live streams: a Recording takes H.264 access units
// and audio frames in its own terms; the node reads a stream from the hub
// and writes them.
package vod
