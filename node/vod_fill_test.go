package node

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// TestFillPrefillsTheTitleViewedElsewhereAndNotTheUnviewedOne: two titles
// packaged on n0, one viewed three times at n2 and the other never; n2
// reports the views to n0, n0 announces them, and n1 — with no viewer of
// its own — fills the first fill_prefix of the viewed title into its cache
// and nothing of the other, within the fill's budget.
func TestFillPrefillsTheTitleViewedElsewhereAndNotTheUnviewedOne(t *testing.T) {
	popular := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 20, GOP: 25, Audio: "aac"})
	quiet := testutil.Clip(t, testutil.ClipOptions{Width: 352, Height: 288, FPS: 25, Seconds: 20, GOP: 25, Audio: "aac"})
	const mbps = 8
	key := base64.StdEncoding.EncodeToString([]byte("vod-cluster-key!"))
	edit := func(c *Config) {
		c.VoD.Replicas = 1 // nothing pinned: n1's chunks of n0's titles are the fill's
		c.VoD.FillInterval = 200 * time.Millisecond
		c.VoD.FillPrefix = 8 * time.Second // the 4 s segments starting at 0 and 4 s
		c.VoD.FillMbps = mbps
	}
	n0 := testOverlayNodeWith(t, "n0", key, nil, edit)
	seed := []string{n0.Config().Gossip.Addr}
	n1 := testOverlayNodeWith(t, "n1", key, seed, edit)
	// n2, where the viewers are, would fill the title too, through its
	// owners (n1 among them, which would then hold the chunks before its
	// own fill ran): its fill is off, so n1's cache holds what n1's fill
	// fetched.
	n2 := testOverlayNodeWith(t, "n2", key, seed, func(c *Config) { edit(c); c.VoD.FillMbps = -1 })
	nodes := []*Node{n0, n1, n2}
	testutil.Eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	idP := uploadReady(t, n0, popular, "Popular")
	idQ := uploadReady(t, n0, quiet, "Quiet")
	testutil.Eventually(t, 15*time.Second, "n1 and n2 list both titles ready", func() bool {
		for _, n := range []*Node{n1, n2} {
			for _, id := range []string{idP, idQ} {
				if x, ok := listedTitle(t, n, id); !ok || x.State != vod.StateReady {
					return false
				}
			}
		}
		return true
	})
	chunks := func(id string) (prefix, rest []vod.Digest) {
		x, err := n0.VoD.Get(id)
		if err != nil || x.Manifest == nil || len(x.Manifest.Renditions) != 1 {
			t.Fatalf("title %s on its origin: %v (want one rendition)", id, err)
		}
		rd := x.Manifest.Renditions[0]
		prefix = append(prefix, rd.Init.Digest)
		for _, c := range rd.Segments {
			if c.Start < 8*time.Second {
				prefix = append(prefix, c.Digest)
			} else {
				rest = append(rest, c.Digest)
			}
		}
		if len(prefix) != 3 || len(rest) == 0 {
			t.Fatalf("title %s: %d chunks in the 8 s prefix, %d after; want 3 and some", id, len(prefix), len(rest))
		}
		return prefix, rest
	}
	prefixP, restP := chunks(idP)
	prefixQ, restQ := chunks(idQ)

	start := time.Now()
	for i := range 3 {
		code, _ := httpGet(t, fmt.Sprintf("http://%s/vod/%s/index.m3u8?viewer=v%d", n2.HTTPAddr(), idP, i))
		if code != http.StatusOK {
			t.Fatalf("master playlist at n2: %d", code)
		}
	}
	testutil.Eventually(t, 20*time.Second, "n0 counts the 3 views n2 served", func() bool {
		x, err := n0.VoD.Get(idP)
		return err == nil && x.Views == 3
	})
	inCache := func(ds []vod.Digest) int {
		n := 0
		for _, d := range ds {
			if _, c := n1.VoD.CacheHolds(d); c {
				n++
			}
		}
		return n
	}
	testutil.Eventually(t, 20*time.Second, "n1 fills the popular title's prefix", func() bool {
		st := cacheStatus(t, n1).Fill
		return slices.Equal(st.Titles, []string{idP}) && inCache(prefixP) == len(prefixP) && st.BytesFetched > 0
	})
	elapsed := time.Since(start)
	if n := inCache(slices.Concat(prefixQ, restQ)); n != 0 {
		t.Errorf("n1 cached %d chunks of the title nobody watched", n)
	}
	if n := inCache(restP); n != 0 {
		t.Errorf("n1 cached %d chunks of the popular title past the fill prefix", n)
	}
	st := cacheStatus(t, n1).Fill
	if !st.Enabled || st.BudgetMbps != mbps || st.ShareBytes != n1.Config().VoD.CacheSize/2 {
		t.Errorf("n1's fill status %+v: want enabled, budget %d Mbit/s, half the cache", st, mbps)
	}
	if st.BytesPlanned+st.BytesCached > st.ShareBytes {
		t.Errorf("n1 planned %d bytes for a share of %d", st.BytesPlanned+st.BytesCached, st.ShareBytes)
	}
	// The pacing: at most one second's burst plus the budget's rate over
	// the time since the views.
	if limit := float64(mbps) * 1e6 / 8 * (elapsed.Seconds() + 1); float64(st.BytesStarted) > limit {
		t.Errorf("n1's fill started %d bytes in %v, over the %d Mbit/s budget", st.BytesStarted, elapsed, mbps)
	}
	// The metric counts what the fill fetched.
	_, metrics := httpGet(t, "http://"+n1.HTTPAddr()+"/metrics")
	var fetched float64
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, "gradient_vod_fill_bytes_total "); ok {
			fetched, _ = strconv.ParseFloat(v, 64)
		}
	}
	if fetched <= 0 || fetched > float64(cacheStatus(t, n1).Fill.BytesFetched) {
		t.Errorf("gradient_vod_fill_bytes_total at n1 is %v, want the fill's fetched bytes (%d when read before)", fetched, st.BytesFetched)
	}
	// n0 holds both titles: it fills nothing.
	if st0 := cacheStatus(t, n0).Fill; len(st0.Titles) != 0 || st0.BytesStarted != 0 {
		t.Errorf("the origin planned a fill of its own titles: %+v", st0)
	}
}
