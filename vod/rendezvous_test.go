package vod

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func rendezvousNodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%02d", i)
	}
	return out
}

func randomDigests(seed uint64, n int) []Digest {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([]Digest, n)
	for i := range out {
		var b [8]byte
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		out[i] = Digest(sha256.Sum256(b[:]))
	}
	return out
}

func TestRendezvousOrderIsDeterministicAndComplete(t *testing.T) {
	nodes := rendezvousNodes(7)
	d := digestOf("chunk")
	first := Owners(d, nodes)
	if len(first) != len(nodes) {
		t.Fatalf("Owners gave %d nodes, want %d", len(first), len(nodes))
	}
	sorted := slices.Clone(first)
	slices.Sort(sorted)
	if !slices.Equal(sorted, nodes) {
		t.Fatalf("Owners is not a permutation of the nodes: %v", first)
	}
	// The input order does not matter, and the input is not modified.
	shuffled := slices.Clone(nodes)
	slices.Reverse(shuffled)
	keep := slices.Clone(shuffled)
	for range 3 {
		if got := Owners(d, shuffled); !slices.Equal(got, first) {
			t.Fatalf("Owners depends on input order: %v vs %v", got, first)
		}
	}
	if !slices.Equal(shuffled, keep) {
		t.Fatalf("Owners modified its input")
	}
	// Different digests spread over different first owners.
	seen := map[string]bool{}
	for _, d := range randomDigests(1, 200) {
		seen[Owners(d, nodes)[0]] = true
	}
	if len(seen) != len(nodes) {
		t.Fatalf("200 digests have only %d distinct first owners of %d nodes", len(seen), len(nodes))
	}
	if got := Owners(d, nil); len(got) != 0 {
		t.Fatalf("Owners of no nodes = %v", got)
	}
}

// TestRendezvousMembershipChangeMovesOnlyItsShare: when one node of N
// leaves, only the digests it owned change their first owner (≈1/N); when
// it joins again, only ≈1/N move to it and nothing else moves.
func TestRendezvousMembershipChangeMovesOnlyItsShare(t *testing.T) {
	const digests = 10000
	ds := randomDigests(7, digests)
	for _, n := range []int{3, 5, 10, 20} {
		nodes := rendezvousNodes(n)
		gone := nodes[n/2]
		fewer := slices.DeleteFunc(slices.Clone(nodes), func(s string) bool { return s == gone })
		moved := 0
		for _, d := range ds {
			before, after := Owners(d, nodes)[0], Owners(d, fewer)[0]
			if before != after {
				moved++
				if before != gone {
					t.Fatalf("N=%d: digest %s moved from %s to %s though %s left", n, d, before, after, gone)
				}
			} else if before == gone {
				t.Fatalf("N=%d: digest %s still owned by the node that left", n, d)
			}
		}
		lo, hi := 0.5*digests/float64(n), 1.6*digests/float64(n)
		if float64(moved) < lo || float64(moved) > hi {
			t.Errorf("N=%d leave: %d of %d digests moved, want %.0f..%.0f", n, moved, digests, lo, hi)
		}
		// Join: the reverse; only digests that now go to the new node move.
		joined := 0
		for _, d := range ds {
			before, after := Owners(d, fewer)[0], Owners(d, nodes)[0]
			if before != after {
				joined++
				if after != gone {
					t.Fatalf("N=%d: digest %s moved from %s to %s, not to the joining node", n, d, before, after)
				}
			}
		}
		if joined != moved {
			t.Errorf("N=%d: join moved %d digests, leave %d", n, joined, moved)
		}
		t.Logf("N=%d: %d of %d digests change first owner (expected %.0f)", n, moved, digests, digests/float64(n))
	}
}
