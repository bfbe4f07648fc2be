package vod

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// fillManifest is a manifest of two renditions ("low" at 400 kbps, "high"
// at 2000 kbps) of n 4-second segments, with chunk digests unique to
// name; each low segment is 100 bytes, each high one 500, an init 10.
func fillManifest(name string, n int) *Manifest {
	m := &Manifest{TargetDuration: 4 * time.Second, Duration: time.Duration(n) * 4 * time.Second}
	for _, r := range []struct {
		name string
		kbps int
		size int64
	}{{"high", 2000, 500}, {"low", 400, 100}} {
		rd := Rendition{Name: r.name, Kbps: r.kbps, Init: Chunk{Digest: sha256.Sum256([]byte(name + r.name + "init")), Size: 10}}
		for i := range n {
			rd.Segments = append(rd.Segments, Chunk{Digest: sha256.Sum256([]byte(fmt.Sprint(name, r.name, i))), Size: r.size,
				Start: time.Duration(i) * 4 * time.Second, Duration: 4 * time.Second})
		}
		m.Renditions = append(m.Renditions, rd)
	}
	return m
}

func holdsNothing(Digest) (bool, bool) { return false, false }

// digestsOf are the digests of a plan's fetches.
func digestsOf(cs []fillChunk) []Digest {
	out := make([]Digest, len(cs))
	for i, c := range cs {
		out[i] = c.Digest
	}
	return out
}

// prefixOf are the digests of the init and first n segments of rendition
// i.
func prefixOf(m *Manifest, i, n int) []Digest {
	rd := m.Renditions[i]
	out := []Digest{rd.Init.Digest}
	for _, c := range rd.Segments[:n] {
		out = append(out, c.Digest)
	}
	return out
}

// TestFillScoresMixTheLocalAndTheClusterShares: a title's score is half
// its share of this node's recent views plus half its share of the
// cluster's, a share with no views at all being 0.
func TestFillScoresMixTheLocalAndTheClusterShares(t *testing.T) {
	got := fillScores([]fillTitle{{ID: "a", Views: 30, Local: 1}, {ID: "b", Views: 10, Local: 3}, {ID: "c"}})
	want := []float64{0.5*1/4.0 + 0.5*30/40.0, 0.5*3/4.0 + 0.5*10/40.0, 0}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("scores %v, want %v", got, want)
		}
	}
	// Nobody watched anything here: the cluster's views alone rank.
	got = fillScores([]fillTitle{{ID: "a", Views: 1}, {ID: "b", Views: 3}})
	if math.Abs(got[0]-0.125) > 1e-9 || math.Abs(got[1]-0.375) > 1e-9 {
		t.Fatalf("scores with no local views %v, want [0.125 0.375]", got)
	}
}

// TestFillPlanTakesTheMostViewedTitlesPrefixFirst: the plan starts with
// the prefix (init and the segments starting within fill_prefix) of the
// lowest rendition of the title of highest score, then the next title's,
// then the highest rendition's prefixes in the same order; no chunk past
// the prefix is planned.
func TestFillPlanTakesTheMostViewedTitlesPrefixFirst(t *testing.T) {
	a, b := fillManifest("a", 10), fillManifest("b", 10)
	ts := []fillTitle{
		{ID: "a", Origin: "n0", Views: 1, Manifest: a},
		{ID: "b", Origin: "n9", Views: 5, Manifest: b},
	}
	// 10s: the segments starting at 0, 4 and 8 s.
	p := planFill(ts, 10*time.Second, 1<<30, holdsNothing)
	want := slices.Concat(prefixOf(b, 1, 3), prefixOf(a, 1, 3), prefixOf(b, 0, 3), prefixOf(a, 0, 3))
	if got := digestsOf(p.Fetch); !slices.Equal(got, want) {
		t.Fatalf("plan fetches %d chunks, want %d in order: b low, a low, b high, a high", len(got), len(want))
	}
	if !slices.Equal(p.Titles, []string{"b", "a"}) {
		t.Errorf("titles planned %v, want [b a]", p.Titles)
	}
	if want := int64(2 * (10 + 3*100 + 10 + 3*500)); p.FetchBytes != want {
		t.Errorf("bytes planned %d, want %d", p.FetchBytes, want)
	}
	for _, c := range p.Fetch {
		if want := map[string]string{"a": "n0", "b": "n9"}; slices.Contains(prefixOf(a, 1, 3), c.Digest) && c.Origin != want["a"] ||
			slices.Contains(prefixOf(b, 1, 3), c.Digest) && c.Origin != want["b"] {
			t.Fatalf("chunk %s planned from origin %q", c.Digest, c.Origin)
		}
	}
	// Local demand outweighs a small lead in the cluster: a is watched
	// here, b elsewhere.
	ts[0].Local = 4
	p = planFill(ts, 10*time.Second, 1<<30, holdsNothing)
	if !slices.Equal(p.Titles, []string{"a", "b"}) {
		t.Errorf("with a watched here: titles planned %v, want [a b]", p.Titles)
	}
}

// TestFillPlanKeepsWithinTheCacheShare: the planned bytes (fetched and
// already cached) never exceed the share; the most viewed title's low
// prefix comes first, and a prefix is cut at the first chunk that does not
// fit, never left with a hole.
func TestFillPlanKeepsWithinTheCacheShare(t *testing.T) {
	a, b := fillManifest("a", 10), fillManifest("b", 10)
	ts := []fillTitle{{ID: "a", Views: 9, Manifest: a}, {ID: "b", Views: 1, Manifest: b}}
	for _, share := range []int64{0, 9, 10, 250, 410, 420, 1000, 3000} {
		p := planFill(ts, 40*time.Second, share, holdsNothing)
		if p.FetchBytes+p.CachedBytes > share {
			t.Fatalf("share %d: planned %d bytes", share, p.FetchBytes+p.CachedBytes)
		}
		var sum int64
		for _, c := range p.Fetch {
			sum += c.Size
		}
		if sum != p.FetchBytes {
			t.Fatalf("share %d: FetchBytes %d, chunks sum to %d", share, p.FetchBytes, sum)
		}
		// The chunks of a's low prefix planned are its first ones, in
		// order, at the head of the plan.
		got := digestsOf(p.Fetch)
		lowA := prefixOf(a, 1, 10)
		k := 0
		for k < len(got) && slices.Contains(lowA, got[k]) {
			k++
		}
		if !slices.Equal(got[:k], lowA[:k]) || (share >= 110 && k == 0) {
			t.Fatalf("share %d: the plan does not start with a's low prefix, in order", share)
		}
		for _, d := range got[k:] {
			if slices.Contains(lowA, d) {
				t.Fatalf("share %d: a's low prefix has a hole", share)
			}
		}
	}
	// 250 bytes: a's init and 2 low segments (210); the third does not
	// fit, nor does b's init with its first segment, and an init alone is
	// not taken.
	p := planFill(ts, 40*time.Second, 250, holdsNothing)
	if want := prefixOf(a, 1, 2); !slices.Equal(digestsOf(p.Fetch), want) || !slices.Equal(p.Titles, []string{"a"}) {
		t.Fatalf("share 250: planned %d chunks of %v, want a's init and 2 segments", len(p.Fetch), p.Titles)
	}
	// 1130: a's whole low prefix (1010: 40s is 10 segments), then b's init
	// and first segment (1120); nothing of the high renditions fits.
	p = planFill(ts, 40*time.Second, 1130, holdsNothing)
	if want := slices.Concat(prefixOf(a, 1, 10), prefixOf(b, 1, 1)); !slices.Equal(digestsOf(p.Fetch), want) {
		t.Fatalf("share 1130: planned %d chunks, want a's low prefix, b's init and 1 segment", len(p.Fetch))
	}
}

// TestFillPlanLeavesUnviewedTitlesAlone: a title with no views anywhere
// scores 0 and nothing of it is planned, however much room there is.
func TestFillPlanLeavesUnviewedTitlesAlone(t *testing.T) {
	a, b := fillManifest("a", 5), fillManifest("b", 5)
	p := planFill([]fillTitle{{ID: "a", Views: 2, Manifest: a}, {ID: "b", Manifest: b}}, time.Hour, 1<<30, holdsNothing)
	for _, d := range digestsOf(p.Fetch) {
		if slices.Contains(prefixOf(b, 0, 5), d) || slices.Contains(prefixOf(b, 1, 5), d) {
			t.Fatal("a chunk of the unviewed title is planned")
		}
	}
	if !slices.Equal(p.Titles, []string{"a"}) {
		t.Errorf("titles planned %v, want [a]", p.Titles)
	}
	if p := planFill([]fillTitle{{ID: "b", Manifest: b}}, time.Hour, 1<<30, holdsNothing); len(p.Fetch) != 0 || len(p.Titles) != 0 {
		t.Errorf("no views at all: planned %d chunks of %v", len(p.Fetch), p.Titles)
	}
}

// TestFillPlanSkipsHeldChunks: a chunk in the store (a pinned replica) is
// neither fetched nor counted against the share; one in the cache is not
// fetched but counts against it (it occupies the cache).
func TestFillPlanSkipsHeldChunks(t *testing.T) {
	a := fillManifest("a", 5)
	low := a.Renditions[1]
	inStore, inCache := low.Segments[0].Digest, low.Segments[1].Digest
	held := func(d Digest) (bool, bool) { return d == inStore, d == inCache }
	p := planFill([]fillTitle{{ID: "a", Views: 1, Manifest: a}}, 12*time.Second, 1<<30, held)
	want := []Digest{low.Init.Digest, low.Segments[2].Digest}
	if got := digestsOf(p.Fetch); !slices.Equal(got[:2], want) || slices.Contains(got, inStore) || slices.Contains(got, inCache) {
		t.Fatalf("the plan fetches held chunks or misses others")
	}
	if p.CachedBytes != 100 {
		t.Errorf("cached bytes %d, want the 100 of the cached segment", p.CachedBytes)
	}
	// A share of 210 holds the init, the cached segment and one more; the
	// stored segment takes none of it.
	p = planFill([]fillTitle{{ID: "a", Views: 1, Manifest: a}}, 12*time.Second, 210, held)
	if got := digestsOf(p.Fetch); !slices.Equal(got, want) || p.FetchBytes+p.CachedBytes != 210 {
		t.Fatalf("share 210: fetch %d chunks, %d+%d bytes", len(got), p.FetchBytes, p.CachedBytes)
	}
}

// TestFillTokenBucketPacesBytes: over any span the bytes reserved never
// run ahead of burst + rate·span, however the chunks are sized, and a
// chunk larger than the burst is granted after a wait.
func TestFillTokenBucketPacesBytes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const rate, burst = 1000.0, 1000.0 // bytes/s
	b := newTokenBucket(rate, burst, t0)
	now := t0
	var spent int64
	for i, size := range []int64{300, 700, 200, 1500, 50, 50, 900, 3000, 10} {
		wait := b.reserve(now, size)
		now = now.Add(wait) // spend when told
		spent += size
		if allowed := burst + rate*now.Sub(t0).Seconds(); float64(spent) > allowed+1e-6 {
			t.Fatalf("chunk %d: %d bytes spent by %v, allowed %.0f", i, spent, now.Sub(t0), allowed)
		}
		if i == 1 && wait != 0 {
			t.Errorf("the first 1000 bytes are the burst: waited %v", wait)
		}
		if i == 2 && wait != 200*time.Millisecond {
			t.Errorf("200 bytes over the burst at 1000 B/s: waited %v, want 200ms", wait)
		}
	}
	// An idle bucket refills to its burst, no more.
	b = newTokenBucket(rate, burst, t0)
	if w := b.reserve(t0.Add(time.Hour), 1000); w != 0 {
		t.Errorf("a full bucket made 1000 bytes wait %v", w)
	}
	if w := b.reserve(t0.Add(time.Hour), 1); w == 0 {
		t.Error("an hour idle filled the bucket past its burst")
	}
}

// TestFillLocalViewsDecayWithAHalfLife: a view counts 1, half after a
// half-life, and counts add up.
func TestFillLocalViewsDecayWithAHalfLife(t *testing.T) {
	c := decayCounts{halfLife: 10 * time.Minute}
	t0 := time.Unix(1000, 0)
	c.add("a", t0)
	c.add("a", t0)
	if v := c.value("a", t0.Add(10*time.Minute)); math.Abs(v-1) > 1e-9 {
		t.Fatalf("2 views one half-life ago count %v, want 1", v)
	}
	c.add("a", t0.Add(20*time.Minute))
	if v := c.value("a", t0.Add(20*time.Minute)); math.Abs(v-1.5) > 1e-9 {
		t.Fatalf("after a new view: %v, want 1.5", v)
	}
	c.prune(t0.Add(10 * time.Hour))
	if len(c.m) != 0 {
		t.Error("views 10 hours old were not pruned")
	}
}

// TestFillNeverEvictsPinnedChunks: a pinned chunk is in the store; filling
// the cache far past its size evicts cached chunks only, and the planner
// counts the pinned chunk as held (nothing to fetch, no share taken).
func TestFillNeverEvictsPinnedChunks(t *testing.T) {
	log, _ := bufferedLogger(t)
	store, err := NewChunkStore(t.TempDir(), -1, log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	pinned, err := store.Put(bytes.NewReader(bytes.Repeat([]byte("pinned"), 1000)))
	if err != nil {
		t.Fatal(err)
	}
	cache := newTestDiskCache(t, DiskCacheConfig{Dir: t.TempDir(), MaxBytes: 64 << 10, MemoryBytes: -1})
	for i := range 200 {
		diskCachePut(t, cache, bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 2000))
	}
	cache.CleanUp()
	if st := cache.Stats(); st.Evictions == 0 || st.Bytes > 64<<10 {
		t.Fatalf("the cache did not evict: %+v", st)
	}
	if !store.Has(pinned.Digest) {
		t.Fatal("the pinned chunk left the store")
	}
	m := &Manifest{Renditions: []Rendition{{Name: "low", Init: Chunk{Digest: pinned.Digest, Size: pinned.Size}}}}
	p := planFill([]fillTitle{{ID: "a", Views: 1, Manifest: m}}, time.Minute, 1, func(d Digest) (bool, bool) {
		return store.Has(d), cache.Has(d)
	})
	if len(p.Fetch) != 0 || p.CachedBytes != 0 {
		t.Errorf("the planner would fetch or count the pinned chunk: %+v", p)
	}
}

// fillService is a started Service alone, with the cluster's manifest
// cache (as in a cluster) and its HTTP.
func fillService(t *testing.T, edit func(*Config)) (*Service, *httptest.Server) {
	t.Helper()
	cfg := DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	s, err := NewService(cfg, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetNodeName("self")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.manifests = newManifestCache(8)
	mux := http.NewServeMux()
	s.Route(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv
}

// TestFillCandidatesAreTheViewedReadyRemoteTitles: local titles (this node
// holds them), remote titles not ready and removed titles are no fill
// candidates; a remote title viewed only here is one, with its local
// count.
func TestFillCandidatesAreTheViewedReadyRemoteTitles(t *testing.T) {
	s, _ := fillService(t, nil)
	put := func(id string, state State, views int64) {
		m := fillManifest(id, 3)
		if _, err := s.cat.PutRemote(Title{ID: id, Origin: "n0", Title: id, State: state, Views: views,
			ManifestDigest: sha256.Sum256([]byte(id))}, m); err != nil {
			t.Fatal(err)
		}
	}
	put("remote", StateReady, 3)
	put("busy", StateProcessing, 3)
	put("gone", StateReady, 3)
	put("here", StateReady, 0)
	put("never", StateReady, 0)
	if err := s.MergeRemoval("gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.cat.Create(Title{ID: "local", Title: "local"}); err != nil {
		t.Fatal(err)
	}
	if err := s.cat.SetReady("local", fillManifest("local", 3), Digest{}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		s.cat.AddView("local")
	}
	here, _ := s.cat.Get("here")
	s.noteView(here)
	ts, err := s.fillCandidates()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range ts {
		ids = append(ids, x.ID)
		if x.Manifest == nil || x.Origin != "n0" {
			t.Errorf("candidate %s: origin %q, manifest %v", x.ID, x.Origin, x.Manifest != nil)
		}
		if x.ID == "here" && math.Abs(x.Local-1) > 1e-3 {
			t.Errorf("the title viewed here has local count %v, want 1", x.Local)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"here", "remote"}) {
		t.Fatalf("candidates %v, want [here remote]", ids)
	}
}

// TestFillViewReportsAreCountedOnceAtTheOrigin: a signed report of n views
// of a local title adds n; the same report again (a replay) and an older
// one add nothing; an unsigned one is refused, and a report for a title
// not packaged here is 404.
func TestFillViewReportsAreCountedOnceAtTheOrigin(t *testing.T) {
	s, srv := fillService(t, nil)
	s.Secret = "cluster-secret"
	if err := s.cat.Create(Title{ID: "t1", Title: "t1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cat.PutRemote(Title{ID: "r1", Origin: "n0", Title: "r1", State: StateProcessing}, nil); err != nil {
		t.Fatal(err)
	}
	post := func(id string, seq, n int64, sign bool) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+viewsPath+id+"/"+strconv.FormatInt(seq, 10)+"/"+strconv.FormatInt(n, 10), nil)
		if sign {
			SignPeerRequest(req, s.Secret, "n2")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	views := func() int64 {
		x, err := s.cat.Get("t1")
		if err != nil {
			t.Fatal(err)
		}
		return x.Views
	}
	for _, c := range []struct {
		seq, n int64
		sign   bool
		code   int
		views  int64
	}{
		{10, 3, true, http.StatusNoContent, 3},
		{10, 3, true, http.StatusNoContent, 3}, // replay
		{9, 5, true, http.StatusNoContent, 3},  // older
		{11, 2, false, http.StatusUnauthorized, 3},
		{11, 2, true, http.StatusNoContent, 5},
	} {
		if code := post("t1", c.seq, c.n, c.sign); code != c.code || views() != c.views {
			t.Fatalf("report seq %d n %d signed %v: %d, views %d; want %d, %d", c.seq, c.n, c.sign, code, views(), c.code, c.views)
		}
	}
	if code := post("r1", 12, 1, true); code != http.StatusNotFound {
		t.Errorf("a report for another node's title: %d, want 404", code)
	}
}

// TestFillViewsOfALocalTitleAreAnnouncedWhenTheyMove: the origin announces
// a title again when its views moved, once per fill_interval, and not
// while they stay.
func TestFillViewsOfALocalTitleAreAnnouncedWhenTheyMove(t *testing.T) {
	cfg := DefaultConfig()
	cfg.FillInterval = 100 * time.Millisecond
	s, err := NewService(cfg, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told []TitleEntry
	s.SetNodeName("n0")
	s.OnTitleChange = func(e TitleEntry) {
		mu.Lock()
		told = append(told, e)
		mu.Unlock()
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.cat.Create(Title{ID: "t1", Title: "t1"}); err != nil {
		t.Fatal(err)
	}
	last := func() (int, int64) {
		mu.Lock()
		defer mu.Unlock()
		if len(told) == 0 {
			return 0, -1
		}
		return len(told), told[len(told)-1].Views
	}
	testutil.Eventually(t, 5*time.Second, "the new title announced", func() bool { n, _ := last(); return n == 1 })
	for range 3 {
		s.cat.AddView("t1")
	}
	testutil.Eventually(t, 5*time.Second, "the title announced again with 3 views", func() bool { _, v := last(); return v == 3 })
	n, _ := last()
	time.Sleep(5 * cfg.FillInterval)
	if m, _ := last(); m != n {
		t.Errorf("views unchanged: announced %d more times", m-n)
	}
}

// TestFillConfigDefaultsAndValidation: the fill's defaults, and a bad
// value named by its YAML key.
func TestFillConfigDefaultsAndValidation(t *testing.T) {
	d := DefaultConfig()
	if d.FillMbps != 20 || d.FillInterval != 30*time.Second || d.FillPrefix != 2*time.Minute || d.FillCacheShare != 0.5 {
		t.Errorf("fill defaults %v Mbit/s, %v, %v, %v", d.FillMbps, d.FillInterval, d.FillPrefix, d.FillCacheShare)
	}
	for key, edit := range map[string]func(*Config){
		"fill_interval":    func(c *Config) { c.FillInterval = time.Millisecond },
		"fill_prefix":      func(c *Config) { c.FillPrefix = -time.Second },
		"fill_cache_share": func(c *Config) { c.FillCacheShare = 1.5 },
	} {
		c := DefaultConfig()
		edit(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("bad %s: %v", key, err)
		}
	}
	// A negative budget turns the fill off; it is valid.
	c := DefaultConfig()
	c.FillMbps = -1
	if err := c.Validate(); err != nil {
		t.Errorf("fill_mbps -1: %v", err)
	}
}
