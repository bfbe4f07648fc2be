package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// vodCluster starts three gossiping nodes with a cluster key, the VoD
// replicas given, and waits until each sees the others.
func vodCluster(t *testing.T, replicas int) []*Node {
	t.Helper()
	key := base64.StdEncoding.EncodeToString([]byte("vod-cluster-key!"))
	edit := func(c *Config) { c.VoD.Replicas = replicas }
	n0 := testOverlayNodeWith(t, "n0", key, nil, edit)
	seed := []string{n0.Config().Gossip.Addr}
	nodes := []*Node{n0, testOverlayNodeWith(t, "n1", key, seed, edit), testOverlayNodeWith(t, "n2", key, seed, edit)}
	testutil.Eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	return nodes
}

// chunkURLs are the chunk paths a node's rendition playlist names, its
// init section first.
func chunkURLs(t *testing.T, n *Node, id string) []string {
	t.Helper()
	code, body := httpGet(t, "http://"+n.HTTPAddr()+"/vod/"+id+"/source.m3u8")
	if code != http.StatusOK {
		t.Fatalf("%s: source.m3u8 %d", n.Config().Name, code)
	}
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if i := strings.Index(l, "/vod/chunks/"); i >= 0 {
			u := l[i:]
			if j := strings.IndexByte(u, '"'); j >= 0 {
				u = u[:j]
			}
			out = append(out, u)
		}
	}
	if len(out) < 2 {
		t.Fatalf("the playlist names %d chunks:\n%s", len(out), body)
	}
	return out
}

// getChunk fetches a chunk path from n and checks its bytes against the
// digest its name carries.
func getChunk(t *testing.T, n *Node, path string) error {
	resp, err := http.Get("http://" + n.HTTPAddr() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &chunkErr{path + ": " + resp.Status}
	}
	name := path[strings.LastIndexByte(path, '/')+1:]
	want, _, _ := strings.Cut(name, ".")
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
		return &chunkErr{path + ": bytes do not match the digest"}
	}
	return nil
}

type chunkErr struct{ s string }

func (e *chunkErr) Error() string { return e.s }

func cacheStatus(t *testing.T, n *Node) vod.CacheStatus {
	t.Helper()
	var st vod.CacheStatus
	if code := getJSON(t, "http://"+n.HTTPAddr()+"/api/v1/vod/cache", &st); code != http.StatusOK {
		t.Fatalf("%s: /api/v1/vod/cache %d", n.Config().Name, code)
	}
	return st
}

// originServed is how many peer requests the origin answered from its
// store: the chunks that left the origin.
func originServed(n *Node) uint64 { return n.VoD.Fetcher().Stats().Hits }

// TestVoDRemoteTitlePlaysThroughAnyNodeWithOneOriginFetchPerChunk: a title
// packaged on n0 plays through n2; n2's chunks come from the cluster
// (signed peer requests, verified), a flash crowd of 100 requests for one
// cold chunk at n2 makes exactly one request at the origin, and no chunk
// leaves the origin twice.
func TestVoDRemoteTitlePlaysThroughAnyNodeWithOneOriginFetchPerChunk(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 20, GOP: 25, Audio: "aac"})
	nodes := vodCluster(t, 1) // no replicas: every chunk n2 gets is a fetch
	n0, n2 := nodes[0], nodes[2]
	id := uploadReady(t, n0, clip, "Through Any Node")
	// n1 and n2 both list it ready: each has fetched the manifest from the
	// origin (a peer request the origin counts like a chunk's), so none
	// is left to land among the chunk requests counted below.
	testutil.Eventually(t, 10*time.Second, "n1 and n2 list the title ready", func() bool {
		for _, n := range nodes[1:] {
			if x, ok := listedTitle(t, n, id); !ok || x.State != vod.StateReady {
				return false
			}
		}
		return true
	})
	urls := chunkURLs(t, n2, id)
	before := originServed(n0)

	// Flash crowd on the last segment (the others would be prefetched
	// after it, and counted at the origin too).
	last := urls[len(urls)-1]
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := getChunk(t, n2, last); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("flash crowd: %v", err)
	}
	if got := originServed(n0) - before; got != 1 {
		t.Fatalf("100 concurrent requests at n2 for one cold chunk: the origin served %d requests, want 1", got)
	}

	// A viewer's segment makes n2 fetch the next prefetch_segments (3)
	// ahead of it.
	if err := getChunk(t, n2, urls[1]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the 3 segments after it prefetched into n2's cache", func() bool {
		return cacheStatus(t, n2).Cache.Chunks >= 1+1+3
	})

	// ffprobe plays the title through n2.
	out, err := exec.Command("ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", "http://"+n2.HTTPAddr()+"/vod/"+id+"/index.m3u8").CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe through n2: %v\n%s", err, out)
	}
	// One line per program of the master playlist.
	if pk, _ := strconv.Atoi(strings.Fields(string(out) + " 0")[0]); pk < 20*25-2 {
		t.Fatalf("ffprobe read %s video packets through n2, want the clip's %d", strings.TrimSpace(string(out)), 20*25)
	}
	for _, u := range urls {
		if err := getChunk(t, n2, u); err != nil {
			t.Fatal(err)
		}
	}
	st := cacheStatus(t, n2)
	if !st.Cluster || st.Fetch.BytesServed["peer"]+st.Fetch.BytesServed["origin"] == 0 || st.Cache.Chunks < int64(len(urls)) {
		t.Fatalf("n2's cache status %+v: want chunks from peers, all %d in its cache", st, len(urls))
	}
	if st.Fetch.Hits == 0 || st.HitRatio <= 0 {
		t.Errorf("n2 served its cached chunks again with no hit counted: %+v", st.Fetch)
	}
	// Each chunk left the origin at most once (plus the manifest).
	if got := originServed(n0) - before; got > uint64(len(urls)) {
		t.Errorf("the origin served %d peer requests for %d chunks", got, len(urls))
	}
	t.Logf("n2: %d chunks, origin served %d peer requests, n2 hit ratio %.2f, bytes by source %v",
		len(urls), originServed(n0)-before, st.HitRatio, st.Fetch.BytesServed)

	// An unsigned peer request is refused.
	code, _ := httpGet(t, "http://"+n0.HTTPAddr()+"/internal/vod/chunks/"+urls[1][len("/vod/chunks/"):len("/vod/chunks/")+64])
	if code != http.StatusUnauthorized {
		t.Errorf("unsigned peer chunk request: %d, want 401", code)
	}
}

// TestVoDTitleStillPlaysWhenItsOriginIsGone: with vod.replicas 2, the
// chunks of a ready title are pinned on another node, so once its origin
// has gone every chunk still plays through the others.
func TestVoDTitleStillPlaysWhenItsOriginIsGone(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 6, GOP: 25, Audio: "aac"})
	nodes := vodCluster(t, 2)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]
	id := uploadReady(t, n0, clip, "Outlives Its Origin")
	t0, err := n0.VoD.Get(id)
	if err != nil || t0.Manifest == nil {
		t.Fatalf("the title on its origin: %v", err)
	}
	var ds []vod.Digest
	for _, rd := range t0.Manifest.Renditions {
		ds = append(ds, rd.Init.Digest)
		for _, c := range rd.Segments {
			ds = append(ds, c.Digest)
		}
	}
	testutil.Eventually(t, 60*time.Second, "every chunk pinned on n1 or n2", func() bool {
		for _, d := range ds {
			if !n1.VoD.Store().Has(d) && !n2.VoD.Store().Has(d) {
				return false
			}
		}
		return true
	})
	urls := chunkURLs(t, n2, id)
	n0.Close()
	testutil.Eventually(t, 10*time.Second, "n0 gone for n1 and n2", func() bool {
		return len(n1.Members.Alive()) == 2 && len(n2.Members.Alive()) == 2
	})
	for _, n := range []*Node{n1, n2} {
		for _, u := range urls {
			if err := getChunk(t, n, u); err != nil {
				t.Fatalf("%s with the origin gone: %v", n.Config().Name, err)
			}
		}
	}
}

// TestVoDCorruptChunkOnTheOriginIsRepairedFromAReplica: with vod.replicas
// 2, a chunk of a title that rots on its origin's own disk is served
// correctly all the same (from the replica owner), the title stays ready,
// and the origin writes the chunk back into its store from the cluster.
func TestVoDCorruptChunkOnTheOriginIsRepairedFromAReplica(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 6, GOP: 25, Audio: "aac"})
	key := base64.StdEncoding.EncodeToString([]byte("vod-cluster-key!"))
	// No memory cache of verified chunks: every read of the store hashes
	// the file, as it does for a chunk not read lately.
	edit := func(c *Config) { c.VoD.Replicas = 2; c.VoD.MemoryCache = 1 }
	n0 := testOverlayNodeWith(t, "n0", key, nil, edit)
	seed := []string{n0.Config().Gossip.Addr}
	nodes := []*Node{n0, testOverlayNodeWith(t, "n1", key, seed, edit), testOverlayNodeWith(t, "n2", key, seed, edit)}
	testutil.Eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	n1, n2 := nodes[1], nodes[2]
	id := uploadReady(t, n0, clip, "Rots On Its Origin")
	t0, err := n0.VoD.Get(id)
	if err != nil || t0.Manifest == nil || len(t0.Manifest.Renditions[0].Segments) < 2 {
		t.Fatalf("the title on its origin: %v", err)
	}
	d := t0.Manifest.Renditions[0].Segments[1].Digest
	testutil.Eventually(t, 60*time.Second, "the chunk pinned on n1 or n2", func() bool {
		return n1.VoD.Store().Has(d) || n2.VoD.Store().Has(d)
	})

	// Flip a byte of the origin's copy.
	h := d.String()
	p := filepath.Join(n0.VoD.Store().Dir(), h[:2], h)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	good := slices.Clone(b)
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	var path string
	for _, u := range chunkURLs(t, n0, id) {
		if strings.Contains(u, h) {
			path = u
		}
	}
	if path == "" {
		t.Fatalf("chunk %s not in the playlist", h)
	}
	if err := getChunk(t, n0, path); err != nil {
		t.Fatalf("the corrupt chunk through its origin: %v", err)
	}
	testutil.Eventually(t, 30*time.Second, "the chunk written back into the origin's store", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && bytes.Equal(got, good)
	})
	if x, err := n0.VoD.Get(id); err != nil || x.State != vod.StateReady {
		t.Fatalf("the title after the repair: %+v, %v", x.State, err)
	}
	if err := getChunk(t, n0, path); err != nil {
		t.Fatalf("the repaired chunk: %v", err)
	}
	if x, ok := listedTitle(t, n1, id); !ok || x.State != vod.StateReady {
		t.Fatalf("the title as n1 lists it: %+v", x)
	}
}

// TestVoDParentTakesEveryMiss: a node with vod.parent fetches every chunk
// it does not hold through its parent (signed, asking it to fill): the
// parent fills from the origin and keeps the chunk, and no other owner is
// asked, where without a parent the chunks whose first owner is n2 would be
// filled by n2.
func TestVoDParentTakesEveryMiss(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 25, Audio: "aac"})
	key := base64.StdEncoding.EncodeToString([]byte("vod-cluster-key!"))
	edit := func(c *Config) { c.VoD.Replicas = 1 }
	n0 := testOverlayNodeWith(t, "n0", key, nil, edit)
	seed := []string{n0.Config().Gossip.Addr}
	n1 := testOverlayNodeWith(t, "n1", key, seed, edit)
	n2 := testOverlayNodeWith(t, "n2", key, seed, edit)
	n3 := testOverlayNodeWith(t, "n3", key, seed, func(c *Config) {
		c.VoD.Replicas = 1
		c.VoD.Parent = "http://" + n1.HTTPAddr() + "/"
	})
	nodes := []*Node{n0, n1, n2, n3}
	testutil.Eventually(t, 10*time.Second, "4 nodes alive everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 4 {
				return false
			}
		}
		return true
	})
	id := uploadReady(t, n0, clip, "Through The Parent")
	testutil.Eventually(t, 10*time.Second, "n3 lists the title ready", func() bool {
		x, ok := listedTitle(t, n3, id)
		return ok && x.State == vod.StateReady
	})
	urls := chunkURLs(t, n3, id)
	for _, u := range urls {
		if err := getChunk(t, n3, u); err != nil {
			t.Fatalf("n3: %v", err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "flights settled", func() bool {
		for _, n := range nodes[1:] {
			if n.VoD.Fetcher().Stats().FlightsInFlight > 0 {
				return false
			}
		}
		return true
	})
	s3, s1, s2 := n3.VoD.Fetcher().Stats(), n1.VoD.Fetcher().Stats(), n2.VoD.Fetcher().Stats()
	if s3.Peers["parent"].Samples < uint64(len(urls)) || s3.UpstreamFetches["origin"] != 0 {
		t.Errorf("n3 fetched %d chunks: from its parent %+v, from the origin %d", len(urls), s3.Peers["parent"], s3.UpstreamFetches["origin"])
	}
	if s1.UpstreamFetches["origin"] < uint64(len(urls)) {
		t.Errorf("the parent n1 filled %d chunks from the origin, want at least %d", s1.UpstreamFetches["origin"], len(urls))
	}
	if s2.Misses != 0 || s2.UpstreamFetches["origin"] != 0 {
		t.Errorf("n2, not the parent, was asked to fill: %d misses, %d origin fetches", s2.Misses, s2.UpstreamFetches["origin"])
	}
	if st := cacheStatus(t, n1); st.Cache.Chunks < int64(len(urls)) {
		t.Errorf("the parent's cache holds %d chunks, want the %d n3 fetched", st.Cache.Chunks, len(urls))
	}
}
