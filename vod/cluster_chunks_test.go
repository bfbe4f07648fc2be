package vod

import "testing"

// TestPrefetchPaysOnlyInACacheOfManyChunks: a 10 GiB cache prefetches
// 2 MB segments; a cache of ~30 chunks (where W-TinyLFU's window is
// smaller than one chunk) does not.
func TestPrefetchPaysOnlyInACacheOfManyChunks(t *testing.T) {
	for _, c := range []struct {
		cache, chunk int64
		want         bool
	}{
		{10 << 30, 2 << 20, true},
		{3 << 20, 100 << 10, false},
		{200 * (1 << 20), 1 << 20, true},
		{199 * (1 << 20), 1 << 20, false},
		{1 << 20, 0, true}, // size unknown: as before
	} {
		if got := prefetchPays(c.cache, c.chunk); got != c.want {
			t.Errorf("prefetchPays(%d, %d) = %v, want %v", c.cache, c.chunk, got, c.want)
		}
	}
}
