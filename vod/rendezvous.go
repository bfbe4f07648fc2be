package vod

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
)

// Owners orders nodes by rendezvous (highest random weight) hashing for
// the chunk d: the first is the node that should hold d, the next ones its
// fallbacks. A node's weight is the first 8 bytes (big-endian) of
// SHA-256(d || node name); ties, which need a 64-bit collision, go to the
// smaller name so that every node computes the same order.
//
// Rendezvous hashing needs no ring and no shared state: each node orders
// the members it sees alive, and when one joins or leaves only the chunks
// it owns (or comes to own) move — about 1/N of them — while every other
// chunk keeps its owner. The weights are SHA-256 for the same reason the
// chunks are addressed by it: the order must be the same on every node and
// every build, which a seeded map hash would not give.
//
// nodes is not modified; duplicates are kept (the caller passes a set).
func Owners(d Digest, nodes []string) []string {
	type weighted struct {
		name string
		w    uint64
	}
	ws := make([]weighted, len(nodes))
	h := sha256.New()
	var sum [sha256.Size]byte
	for i, n := range nodes {
		h.Reset()
		h.Write(d[:])
		h.Write([]byte(n))
		ws[i] = weighted{n, binary.BigEndian.Uint64(h.Sum(sum[:0]))}
	}
	slices.SortFunc(ws, func(a, b weighted) int {
		switch {
		case a.w > b.w:
			return -1
		case a.w < b.w:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.name
	}
	return out
}
