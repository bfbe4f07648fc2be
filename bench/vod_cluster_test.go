package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// The VoD cluster benchmark of issue 10: origin offload and byte hit
// ratio of Gradient's cluster chunk cache on a Zipf(0.8) trace, against
// Belady's optimal and plain LRU computed offline on the same trace, and
// against nginx proxy_cache edges replaying the same trace.
//
// Model:
//   - the origin is node 0: every title is uploaded there (vod.ladder: [],
//     source only, so packaging is a remux); the viewers only ever ask the
//     edges, nodes 1…E. Origin bytes are the chunk bytes node 0 served (its
//     fetcher's bytes_served["local"]: only peers ask it for chunks);
//   - each edge's vod.cache_size is 10 % of the catalog's bytes / E;
//   - titles: one ffmpeg encode per title of a 24 s 320x180 testsrc2 with
//     its own hue rotation (libx264 ultrafast, 200 kbit/s, GOP 1 s, no
//     audio), so every segment of every title has distinct bytes (and
//     digests); the init sections come out identical (same encoder
//     settings), which the content-addressed store shares: one hot chunk;
//   - the trace: viewers, each on an edge drawn uniformly, a title drawn by
//     Zipf(0.8) over the catalog (rank = title number), watching a prefix
//     drawn uniformly from 1…all segments: the init, then those segments
//     in order. 2000 viewers are replayed 16 at a time, each viewer's
//     requests in order and back to back, then 200 more one request at a
//     time with the cluster settled between requests (the probe), each
//     request classified by the edge's bytes_served counters (cache: a
//     hit; peer: a flight from an owner; origin: a flight from the
//     origin), for latency by source;
//   - Belady and LRU are computed offline on the same trace (each viewer's
//     requests back to back, viewers in order; the replay interleaves 16
//     of them), per edge with an edge's cache size, and as one cache of
//     all the edges' bytes over the whole trace: the bound of a
//     cooperative cluster, which the targets are checked against;
//   - nginx: one nginx process (a master and its workers) with E edge
//     servers, each with its own proxy_cache zone (same max_size as a
//     Gradient edge, proxy_cache_lock on, valid 1y), in front of one
//     origin server block serving node 0's chunk files; origin bytes are
//     the $body_bytes_sent of the origin's access log. tcp_nopush is off:
//     with it, a keep-alive client waits ~40 ms (a delayed ACK) for each
//     cache hit. nginx's max_size is not a hard bound: its cache manager
//     trims the cache only when it wakes, every 10 s while under the bound,
//     so in a fast replay its edges hold more than max_size (the bytes in
//     its cache folders are sampled and printed). So its cache manager is
//     woken every 50 ms (manager_sleep=50ms manager_files=10000
//     manager_threshold=1s, nginx ≥ 1.11.5) and holds each edge near its
//     max_size: the peak sampled is printed beside it; "LRU per edge" is
//     what the same edges would do with the bound kept exactly;
//   - Gradient is run twice on fresh clusters, both with the default
//     prefetch_segments 3 (a node prefetches only into a cache of at least
//     200 chunks, which these are not): vod.replicas 1, caches only, no
//     chunk pinned anywhere but the origin (the figures the caching
//     targets are checked on); and vod.replicas 2, the product's default,
//     where each chunk is pinned on its first owner other than the origin
//     (outside cache_size) as titles become ready: the origin uploads each
//     chunk once, before the replay (its bytes are printed and counted in
//     that run's offload), and the edges' misses go to the pinned owner.

// vodClusterParams are the benchmark's sizes; GRADIENT_VODCLUSTER
// ("titles=10,viewers=50,edges=2,probe=20") shrinks them for development.
type vodClusterParams struct {
	titles, viewers, edges, probe, concurrency int
	seconds                                    int     // per title
	cacheFraction                              float64 // of the catalog's bytes, over all edges
	zipf                                       float64
}

func vodClusterParamsFromEnv(b *testing.B) vodClusterParams {
	p := vodClusterParams{titles: 200, viewers: 2000, edges: 4, probe: 200, concurrency: 16, seconds: 24, cacheFraction: 0.10, zipf: 0.8}
	env := os.Getenv("GRADIENT_VODCLUSTER")
	if env == "" {
		return p
	}
	for _, kv := range strings.Split(env, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("GRADIENT_VODCLUSTER: %q is not key=positive integer", kv)
		}
		switch k {
		case "titles":
			p.titles = n
		case "viewers":
			p.viewers = n
		case "edges":
			p.edges = n
		case "probe":
			p.probe = n
		case "concurrency":
			p.concurrency = n
		default:
			b.Fatalf("GRADIENT_VODCLUSTER: unknown key %q", k)
		}
	}
	return p
}

// vodClusterTitles encodes the catalog's clips once into a folder under
// the system temp folder keyed by the encoding parameters, and returns
// their paths (title i at rank i).
func vodClusterTitles(b *testing.B, n, seconds int) []string {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("gradient-bench-vodcluster-v2-320x180-%ds-ultrafast-200k-g25", seconds))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	out := make([]string, n)
	t0 := time.Now()
	made := 0
	for i := range out {
		out[i] = filepath.Join(dir, fmt.Sprintf("title-%03d.mp4", i))
		if _, err := os.Stat(out[i]); err == nil {
			continue
		}
		// A hue rotation of its own (37° steps: distinct for 360 titles)
		// and a point of the pattern's clock make each title's frames, and
		// so its segments, distinct.
		tmp := out[i] + ".part.mp4"
		args := []string{"-hide_banner", "-loglevel", "error", "-y",
			"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=320x180:rate=25,hue=h=%d", (i*37)%360),
			"-ss", strconv.Itoa(i % 10), "-t", strconv.Itoa(seconds),
			"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
			"-b:v", "200k", "-maxrate", "200k", "-bufsize", "400k", "-g", "25", "-keyint_min", "25",
			"-an", "-movflags", "+faststart", tmp}
		if o, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
			os.Remove(tmp)
			b.Fatalf("make title %d: ffmpeg %s: %v\n%s", i, strings.Join(args, " "), err, o)
		}
		if err := os.Rename(tmp, out[i]); err != nil {
			b.Fatal(err)
		}
		made++
	}
	if made > 0 {
		fmt.Printf("  made %d title clips in %s in %v\n", made, dir, time.Since(t0).Round(time.Second))
	}
	return out
}

// vodClusterNode is a `gradient node` process of the benchmark's cluster.
type vodClusterNode struct {
	name, http, gossip, data string
	proc                     *testutil.Process
}

func (n *vodClusterNode) base() string { return "http://" + n.http }

func startVodClusterNode(b *testing.B, bin, name string, cacheSize int64, prefetch, replicas int, join string) *vodClusterNode {
	n := &vodClusterNode{name: name, data: b.TempDir(),
		http:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
		gossip: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp"))}
	cfg := filepath.Join(b.TempDir(), "node.yaml")
	// Remux only. With replicas 1 nothing is pinned: every chunk an edge
	// serves came from its cache, a peer's or the origin.
	yaml := fmt.Sprintf("vod:\n  ladder: []\n  replicas: %d\n  cache_size: %d\n  prefetch_segments: %d\n", replicas, cacheSize, prefetch)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"node", "--name", name, "--http", n.http, "--rtsp", "off", "--srt", "off", "--rtmp", "off",
		"--ice-udp", "127.0.0.1:0", "--gossip", n.gossip, "--data", n.data, "--log-level", "warn", "--config", cfg}
	if join != "" {
		args = append(args, "--join", join)
	}
	n.proc = testutil.Start(b, bin, args...)
	testutil.Eventually(b, 30*time.Second, name+" answers /healthz", func() bool {
		r, err := http.Get(n.base() + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	return n
}

func getJSONB(b *testing.B, u string, v any) {
	resp, err := http.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		b.Fatalf("GET %s: %v", u, err)
	}
}

func (n *vodClusterNode) cacheStatus(b *testing.B) vod.CacheStatus {
	var st vod.CacheStatus
	getJSONB(b, n.base()+"/api/v1/vod/cache", &st)
	return st
}

func (n *vodClusterNode) readyTitles(b *testing.B) map[string]bool {
	var list struct{ Titles []vod.TitleJSON }
	getJSONB(b, n.base()+"/api/v1/vod/titles", &list)
	ready := map[string]bool{}
	for _, t := range list.Titles {
		if t.State == vod.StateFailed {
			b.Fatalf("%s: title %s failed: %s", n.name, t.ID, t.Error)
		}
		if t.State == vod.StateReady {
			ready[t.ID] = true
		}
	}
	return ready
}

// vodChunk is a chunk of the catalog: its URL path and size.
type vodChunk struct {
	path string
	size int64
}

// titleChunks are the chunks of a title's source rendition on node n,
// init first, with their sizes from the chunk files in n's store.
func (n *vodClusterNode) titleChunks(b *testing.B, id string) []vodChunk {
	resp, err := http.Get(n.base() + "/vod/" + id + "/source.m3u8")
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("%s: /vod/%s/source.m3u8: %s", n.name, id, resp.Status)
	}
	var out []vodChunk
	for _, l := range strings.Split(string(body), "\n") {
		i := strings.Index(l, "/vod/chunks/")
		if i < 0 {
			continue
		}
		u := l[i:]
		if j := strings.IndexByte(u, '"'); j >= 0 {
			u = u[:j]
		}
		hex, _, _ := strings.Cut(u[len("/vod/chunks/"):], ".")
		st, err := os.Stat(filepath.Join(n.data, "vod", "chunks", hex[:2], hex))
		if err != nil {
			b.Fatalf("chunk %s of title %s is not in the origin's store: %v", u, id, err)
		}
		out = append(out, vodChunk{path: u, size: st.Size()})
	}
	if len(out) < 2 {
		b.Fatalf("title %s: the playlist names %d chunks:\n%s", id, len(out), body)
	}
	return out
}

// vodViewer is one viewer of the trace: the edge (0…E-1) it asks, and the
// chunks it fetches in order.
type vodViewer struct {
	edge, title int
	watch       int // chunks fetched: the init and watch-1 segments
}

// vodTrace draws n viewers: an edge uniformly, a title by Zipf(s) over
// the titles (rank i+1 for title i), a prefix of 1…all segments
// uniformly; requests are the init and that prefix.
func vodTrace(rng *rand.Rand, n, edges int, s float64, titles [][]int) []vodViewer {
	cdf := make([]float64, len(titles))
	sum := 0.0
	for i := range titles {
		sum += 1 / math.Pow(float64(i+1), s)
		cdf[i] = sum
	}
	out := make([]vodViewer, n)
	for v := range out {
		x := rng.Float64() * sum
		t := 0
		for t < len(cdf)-1 && cdf[t] < x {
			t++
		}
		segs := len(titles[t]) - 1
		k := 1 + rng.IntN(segs)
		out[v] = vodViewer{edge: rng.IntN(edges), title: t, watch: 1 + k}
	}
	return out
}

// cacheSim replays per-cache request sequences (chunk ids) through a
// byte-bounded cache and returns the hit and total bytes.
type cacheSim func(seq []int, sizes []int64, capacity int64) (hit, total int64)

// lruSim is plain LRU: every miss is admitted (if it fits at all), the
// least recently used chunks are evicted to make room.
func lruSim(seq []int, sizes []int64, capacity int64) (hit, total int64) {
	last := map[int]int{} // chunk → time of last use, for chunks held
	var held int64
	for t, c := range seq {
		total += sizes[c]
		if _, ok := last[c]; ok {
			hit += sizes[c]
			last[c] = t
			continue
		}
		if sizes[c] > capacity {
			continue
		}
		for held+sizes[c] > capacity {
			victim, oldest := -1, math.MaxInt
			for x, lt := range last {
				if lt < oldest {
					victim, oldest = x, lt
				}
			}
			held -= sizes[victim]
			delete(last, victim)
		}
		last[c] = t
		held += sizes[c]
	}
	return hit, total
}

// beladySim is Belady's MIN made byte-weighted: on a miss the chunk is
// admitted unless it is itself the one used farthest in the future, and
// the chunks whose next use is farthest (never first) are evicted until
// it fits. With chunks of different sizes this is a heuristic, not the
// optimum (which is NP-hard), but it is the usual offline yardstick; the
// catalog's segments are of similar sizes.
func beladySim(seq []int, sizes []int64, capacity int64) (hit, total int64) {
	next := make([]int, len(seq))
	seen := map[int]int{}
	for t := len(seq) - 1; t >= 0; t-- {
		if n, ok := seen[seq[t]]; ok {
			next[t] = n
		} else {
			next[t] = math.MaxInt
		}
		seen[seq[t]] = t
	}
	nextUse := map[int]int{} // chunk held → its next use
	var held int64
	for t, c := range seq {
		total += sizes[c]
		if _, ok := nextUse[c]; ok {
			hit += sizes[c]
			nextUse[c] = next[t]
			continue
		}
		if sizes[c] > capacity || next[t] == math.MaxInt {
			continue
		}
		for held+sizes[c] > capacity {
			victim, far := -1, -1
			for x, n := range nextUse {
				if n > far {
					victim, far = x, n
				}
			}
			if far < next[t] {
				break // the newcomer is the farthest: bypass it
			}
			held -= sizes[victim]
			delete(nextUse, victim)
		}
		if held+sizes[c] <= capacity {
			nextUse[c] = next[t]
			held += sizes[c]
		}
	}
	return hit, total
}

// oracleSim holds, from its first request on, the chunks requested most
// often in the whole sequence (fewest bytes first among equals) that fit
// in capacity, knowing every count in advance, and never evicts: each
// held chunk's requests after its first are hits. When the requests are
// independent draws from fixed popularities (as this trace's titles are),
// no online policy is expected to beat the most popular chunks held for
// good (Aho, Denning and Ullman's A0); knowing the trace's own counts
// rather than the popularities makes this an optimistic version of that
// bound.
func oracleSim(seq []int, sizes []int64, capacity int64) (hit, total int64) {
	count := map[int]int64{}
	for _, c := range seq {
		count[c]++
		total += sizes[c]
	}
	ids := make([]int, 0, len(count))
	for c := range count {
		ids = append(ids, c)
	}
	slices.SortFunc(ids, func(a, b int) int {
		if count[a] != count[b] {
			return cmp.Compare(count[b], count[a])
		}
		if sizes[a] != sizes[b] {
			return cmp.Compare(sizes[a], sizes[b])
		}
		return cmp.Compare(a, b)
	})
	var held int64
	for _, c := range ids {
		if held+sizes[c] > capacity {
			continue
		}
		held += sizes[c]
		hit += (count[c] - 1) * sizes[c]
	}
	return hit, total
}

// diskCacheSim replays a sequence through a real vod.DiskCache (the
// nodes' cache, in a temporary folder) of the given capacity, each chunk
// a synthetic one of its size: a hit is an Open that finds it, a miss is
// followed by a Put, as the node's fetcher does.
func diskCacheSim(b *testing.B) cacheSim {
	return func(seq []int, sizes []int64, capacity int64) (hit, total int64) {
		dir := b.TempDir()
		c, err := vod.NewDiskCache(vod.DiskCacheConfig{Dir: dir, MaxBytes: capacity}, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		content := func(id int) []byte {
			buf := make([]byte, sizes[id])
			binary.LittleEndian.PutUint64(buf, uint64(id)+1)
			return buf
		}
		digests := make(map[int]vod.Digest)
		for _, id := range seq {
			total += sizes[id]
			d, ok := digests[id]
			if !ok {
				d = vod.Digest(sha256.Sum256(content(id)))
				digests[id] = d
			}
			if rc, _, err := c.Open(d); err == nil {
				rc.Close()
				hit += sizes[id]
				continue
			}
			if _, err := c.Put(bytes.NewReader(content(id))); err != nil {
				b.Fatal(err)
			}
		}
		return hit, total
	}
}

// replayResult is what one system answered to the trace.
type replayResult struct {
	requests, errors int
	bytes            int64
	elapsed          time.Duration
	lat              []time.Duration
	byClass          map[string][]time.Duration // probe only
	bytesByClass     map[string]int64
}

func (r *replayResult) merge(o *replayResult) {
	r.requests += o.requests
	r.errors += o.errors
	r.bytes += o.bytes
	r.lat = append(r.lat, o.lat...)
}

func vodClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns, DisableCompression: true, IdleConnTimeout: time.Minute,
	}, Timeout: time.Minute}
}

// fetchChunk GETs base+c.path whole and returns its latency and the
// response's headers, or an error when it is not the chunk (status,
// length).
func fetchChunk(client *http.Client, base string, c vodChunk, buf []byte) (time.Duration, http.Header, error) {
	t0 := time.Now()
	resp, err := client.Get(base + c.path)
	if err != nil {
		return 0, nil, err
	}
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	el := time.Since(t0)
	if resp.StatusCode != 200 || n != c.size {
		return el, resp.Header, fmt.Errorf("%s%s: %s, %d bytes, want %d", base, c.path, resp.Status, n, c.size)
	}
	return el, resp.Header, nil
}

// replayConcurrent has conc workers take the viewers in order, each
// fetching its viewer's chunks in order, back to back, from its edge.
func replayConcurrent(viewers []vodViewer, chunks []vodChunk, titles [][]int, edges []string, conc int) *replayResult {
	client := vodClient(conc * 2)
	defer client.CloseIdleConnections()
	res := &replayResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan vodViewer)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			my := &replayResult{}
			var firstErr error
			for v := range work {
				for _, ci := range titles[v.title][:v.watch] {
					el, _, err := fetchChunk(client, edges[v.edge], chunks[ci], buf)
					if err != nil {
						my.errors++
						if firstErr == nil {
							firstErr = err
						}
						continue
					}
					my.requests++
					my.bytes += chunks[ci].size
					my.lat = append(my.lat, el)
				}
			}
			if firstErr != nil {
				fmt.Printf("    first error of a replay worker: %v\n", firstErr)
			}
			mu.Lock()
			res.merge(my)
			mu.Unlock()
		}()
	}
	for _, v := range viewers {
		work <- v
	}
	close(work)
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// replaySerial fetches the viewers' chunks one at a time, classifying each
// response with classify (called once the response was read whole;
// prepare is called before each request).
func replaySerial(viewers []vodViewer, chunks []vodChunk, titles [][]int, edges []string, prepare func(edge int), classify func(edge int, h http.Header, size int64) string) *replayResult {
	client := vodClient(4)
	defer client.CloseIdleConnections()
	res := &replayResult{byClass: map[string][]time.Duration{}, bytesByClass: map[string]int64{}}
	buf := make([]byte, 256<<10)
	start := time.Now()
	for _, v := range viewers {
		for _, ci := range titles[v.title][:v.watch] {
			prepare(v.edge)
			el, h, err := fetchChunk(client, edges[v.edge], chunks[ci], buf)
			if err != nil {
				res.errors++
				fmt.Printf("    probe: %v\n", err)
				continue
			}
			res.requests++
			res.bytes += chunks[ci].size
			res.lat = append(res.lat, el)
			cl := classify(v.edge, h, chunks[ci].size)
			res.byClass[cl] = append(res.byClass[cl], el)
			res.bytesByClass[cl] += chunks[ci].size
		}
	}
	res.elapsed = time.Since(start)
	return res
}

// vodCluster is an origin and its edges, every title uploaded to the
// origin and listed ready everywhere.
type vodCluster struct {
	nodes  []*vodClusterNode // the origin first
	chunks []vodChunk        // distinct chunks (one digest in two titles is one chunk)
	titles [][]int           // each title's chunks (indexes into chunks), init first
}

func (c *vodCluster) edgeURLs() []string {
	var out []string
	for _, n := range c.nodes[1:] {
		out = append(out, n.base())
	}
	return out
}

// stop stops the nodes one at a time, the edges first: a node leaving
// waits for the others to hear its leave, which they cannot if they are
// stopping too.
func (c *vodCluster) stop(b *testing.B) {
	for i := len(c.nodes) - 1; i >= 0; i-- {
		n := c.nodes[i]
		n.proc.Cmd.Process.Signal(syscall.SIGTERM)
		if err := n.proc.Wait(b, 20*time.Second); err != nil {
			out := n.proc.Output()
			fmt.Printf("    %s stopped with %v; the end of its output: %s\n", n.name, err, out[max(0, len(out)-600):])
		}
	}
}

// startVodCluster starts the origin and the edges (each edge's vod cache
// edgeCache bytes, prefetch_segments prefetch), uploads the clips to the
// origin and waits until every node lists every title ready.
func startVodCluster(b *testing.B, bin string, clips []string, edges int, edgeCache int64, prefetch, replicas int) *vodCluster {
	origin := startVodClusterNode(b, bin, "origin", 1<<20, prefetch, replicas, "")
	c := &vodCluster{nodes: []*vodClusterNode{origin}}
	for i := range edges {
		c.nodes = append(c.nodes, startVodClusterNode(b, bin, fmt.Sprintf("edge%d", i+1), edgeCache, prefetch, replicas, origin.gossip))
	}
	t0 := time.Now()
	ids := make([]string, len(clips))
	for i, clip := range clips {
		f, err := os.Open(clip)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := http.Post(origin.base()+"/api/v1/vod/titles?title="+url.QueryEscape(fmt.Sprintf("title %03d", i)), "video/mp4", f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || loc == "" {
			b.Fatalf("upload title %d: %s", i, resp.Status)
		}
		ids[i] = loc[strings.LastIndexByte(loc, '/')+1:]
	}
	for _, n := range c.nodes {
		testutil.Eventually(b, time.Duration(60+2*len(ids))*time.Second, n.name+" lists every title ready", func() bool {
			r := n.readyTitles(b)
			for _, id := range ids {
				if !r[id] {
					return false
				}
			}
			return true
		})
	}
	fmt.Printf("  %d titles uploaded to the origin, packaged and listed ready on every node in %v\n", len(ids), time.Since(t0).Round(time.Second))
	index := map[string]int{}
	c.titles = make([][]int, len(ids))
	for i, id := range ids {
		for _, ch := range origin.titleChunks(b, id) {
			j, ok := index[ch.path]
			if !ok {
				j = len(c.chunks)
				index[ch.path] = j
				c.chunks = append(c.chunks, ch)
			}
			c.titles[i] = append(c.titles[i], j)
		}
	}
	return c
}

// gradientRun is what one Gradient cluster made of the trace.
type gradientRun struct {
	name         string
	main, probe  *replayResult
	originBytes  int64  // chunk bytes the origin served
	pinBytes     int64  // chunk bytes it served before the replay (pinning replicas)
	originReqs   uint64 // chunk requests it answered
	edgeUpstream map[string]uint64
	edgeLines    []string
}

// replayGradient replays the trace on c: the main part concurrently, then
// the probe one request at a time, each classified by the bytes_served
// counters of the edge that answered it.
func replayGradient(b *testing.B, c *vodCluster, name string, main, probe []vodViewer, conc int) *gradientRun {
	nodes := c.nodes
	before := make([]vod.CacheStatus, len(nodes))
	for i, n := range nodes {
		before[i] = n.cacheStatus(b)
	}
	fmt.Printf("  load average before the %s replay: %s\n", name, loadAvg())
	run := &gradientRun{name: name, edgeUpstream: map[string]uint64{}}
	run.main = replayConcurrent(main, c.chunks, c.titles, c.edgeURLs(), conc)
	settle := func() {
		deadline := time.Now().Add(30 * time.Second)
		for _, n := range nodes {
			for n.cacheStatus(b).Fetch.FlightsInFlight > 0 && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	// Between settle and the response, the edge's bytes_served moves only
	// by the response, in the source that served it: prefetches write no
	// response, and the owners they ask are other nodes, which the
	// settled cluster does not have in flight. The counter moves once the
	// handler has written the whole body, which may be a moment after the
	// client read it: classify waits for it.
	var snap vod.CacheStatus
	run.probe = replaySerial(probe, c.chunks, c.titles, c.edgeURLs(),
		func(edge int) {
			settle()
			snap = nodes[1+edge].cacheStatus(b)
		},
		func(edge int, _ http.Header, size int64) string {
			deadline := time.Now().Add(2 * time.Second)
			for {
				now := nodes[1+edge].cacheStatus(b)
				best, most, sum := "unknown", uint64(0), uint64(0)
				for src, v := range now.Fetch.BytesServed {
					d := v - snap.Fetch.BytesServed[src]
					sum += d
					if d > most {
						best, most = src, d
					}
				}
				if sum >= uint64(size) || time.Now().After(deadline) {
					switch best {
					case "local", "cache":
						return "hit"
					}
					return best
				}
				time.Sleep(time.Millisecond)
			}
		})
	settle()
	after := make([]vod.CacheStatus, len(nodes))
	for i, n := range nodes {
		after[i] = n.cacheStatus(b)
	}
	delta := func(i int, src string) uint64 {
		return after[i].Fetch.BytesServed[src] - before[i].Fetch.BytesServed[src]
	}
	run.originBytes = int64(delta(0, "local"))
	run.originReqs = after[0].Fetch.Hits - before[0].Fetch.Hits
	for i := 1; i < len(nodes); i++ {
		for _, from := range []string{"peer", "origin"} {
			run.edgeUpstream[from] += after[i].Fetch.UpstreamFetches[from] - before[i].Fetch.UpstreamFetches[from]
		}
		st := after[i]
		run.edgeLines = append(run.edgeLines, fmt.Sprintf("%s: cache %.2f of %.2f MB, %d chunks, admitted %d, evicted %d (of which never read %d); MB served (to viewers and peers) from cache %.1f, through a flight from a peer %.1f, from the origin %.1f",
			nodes[i].name, float64(st.Cache.Bytes)/1e6, float64(st.Cache.MaxBytes)/1e6, st.Cache.Chunks, st.Cache.Admitted-before[i].Cache.Admitted,
			st.Cache.Evictions-before[i].Cache.Evictions, st.Cache.Rejected-before[i].Cache.Rejected,
			float64(delta(i, "cache"))/1e6, float64(delta(i, "peer"))/1e6, float64(delta(i, "origin"))/1e6))
	}
	return run
}

// BenchmarkVodClusterOriginOffload: see the comment at the top of the
// file. Run with `go test -run '^$' -bench VodClusterOriginOffload
// -benchtime 1x ./bench/`.
func BenchmarkVodClusterOriginOffload(b *testing.B) {
	nginxBin := vodSkipWithout(b, "nginx")
	vodSkipWithout(b, "ffmpeg")
	p := vodClusterParamsFromEnv(b)
	header(b, fmt.Sprintf("VoD cluster: origin + %d edge node processes on loopback, %d titles of %d s, %d viewers Zipf(%.1f) watching a prefix, caches = %.0f %% of the catalog; Gradient vs nginx proxy_cache",
		p.edges, p.titles, p.seconds, p.viewers+p.probe, p.zipf, p.cacheFraction*100))
	fmt.Printf("  load average before: %s\n", loadAvg())
	clips := vodClusterTitles(b, p.titles, p.seconds)
	var clipBytes int64
	for _, c := range clips {
		st, err := os.Stat(c)
		if err != nil {
			b.Fatal(err)
		}
		clipBytes += st.Size()
	}
	// The packaged catalog is a remux of the clips: about their bytes
	// (the exact share is printed once packaged).
	edgeCache := max(1<<20, int64(float64(clipBytes)*p.cacheFraction)/int64(p.edges))
	bin := gradientBinary(b)

	// Gradient with caches only (replicas 1, default prefetch_segments 3)
	// first; its origin's store is what nginx's origin serves.
	cl := startVodCluster(b, bin, clips, p.edges, edgeCache, 3, 1)
	chunks, titles := cl.chunks, cl.titles
	var catalog int64
	for _, c := range chunks {
		catalog += c.size
	}
	segs := 0
	for _, t := range titles {
		segs += len(t) - 1
	}
	fmt.Printf("  catalog: %d distinct chunks (%d segments, %d distinct init sections), %.1f MB; each of %d edges caches %.2f MB: the edges hold %.1f %% of the catalog\n",
		len(chunks), segs, len(chunks)-segs, float64(catalog)/1e6, p.edges, float64(edgeCache)/1e6, 100*float64(edgeCache)*float64(p.edges)/float64(catalog))

	rng := rand.New(rand.NewPCG(10, 80))
	all := vodTrace(rng, p.viewers+p.probe, p.edges, p.zipf, titles)
	main, probe := all[:p.viewers], all[p.viewers:]
	var traceBytes int64
	var traceReqs int
	for _, v := range all {
		for _, c := range titles[v.title][:v.watch] {
			traceBytes += chunks[c].size
			traceReqs++
		}
	}
	fmt.Printf("  trace: %d viewers, %d chunk requests, %.1f MB; replayed %d viewers at a time, then %d probe viewers one request at a time\n",
		len(all), traceReqs, float64(traceBytes)/1e6, p.concurrency, len(probe))

	// Offline: Belady and LRU on the same trace, per edge (each edge's
	// request subsequence, its cache size) and for one cache of all the
	// edges' bytes over the whole trace (the bound of a cooperative
	// cluster, which need hold each chunk once).
	sizes := make([]int64, len(chunks))
	for i, c := range chunks {
		sizes[i] = c.size
	}
	perEdge := make([][]int, p.edges)
	var merged []int
	for _, v := range all {
		perEdge[v.edge] = append(perEdge[v.edge], titles[v.title][:v.watch]...)
		merged = append(merged, titles[v.title][:v.watch]...)
	}
	offline := func(sim cacheSim) (edges, cluster float64) {
		var hit, total int64
		for _, seq := range perEdge {
			h, t := sim(seq, sizes, edgeCache)
			hit += h
			total += t
		}
		h, t := sim(merged, sizes, edgeCache*int64(p.edges))
		return float64(hit) / float64(total), float64(h) / float64(t)
	}
	beladyEdges, beladyCluster := offline(beladySim)
	lruEdges, lruCluster := offline(lruSim)
	_, oracleCluster := offline(oracleSim)
	// The node's own cache policy (vod.DiskCache, W-TinyLFU) as one cache
	// of all the edges' bytes on the same sequence: what the policy can do
	// when the cluster's caches hold no chunk twice, apart from how the
	// nodes share the chunks.
	_, policyCluster := offline(diskCacheSim(b))

	runs := []*gradientRun{replayGradient(b, cl, "gradient, replicas 1 (caches only)", main, probe, p.concurrency)}
	// nginx, on the same chunk files.
	nginx := startNginxEdges(b, nginxBin, filepath.Join(cl.nodes[0].data, "vod", "chunks"), p.edges, edgeCache)
	cl.stop(b)
	nOrigin0 := nginx.originBytes(b) // the readiness checks' 404s
	fmt.Printf("  load average before the nginx replay: %s\n", loadAvg())
	sampled := nginx.sampleCacheBytes(250 * time.Millisecond)
	nMain := replayConcurrent(main, chunks, titles, nginx.edges, p.concurrency)
	nProbe := replaySerial(probe, chunks, titles, nginx.edges, func(int) {}, func(_ int, h http.Header, _ int64) string {
		switch h.Get("X-Cache") {
		case "HIT":
			return "hit"
		case "MISS", "EXPIRED", "STALE", "UPDATING", "REVALIDATED":
			return "origin"
		}
		return "unknown"
	})
	nOrigin := nginx.originBytes(b) - nOrigin0
	nMean, nPeak := sampled()
	nginx.stop()
	// Gradient as deployed by default: replicas 2, each chunk pinned on
	// its first non-origin owner. The pinning (the origin's upload of each
	// chunk, once) runs as titles become ready; it is waited for and its
	// bytes counted.
	cl2 := startVodCluster(b, bin, clips, p.edges, edgeCache, 3, 2)
	if len(cl2.chunks) != len(chunks) {
		b.Fatalf("the second cluster packaged %d chunks, the first %d", len(cl2.chunks), len(chunks))
	}
	pinBytes := waitPinned(b, cl2, catalog)
	r2 := replayGradient(b, cl2, "gradient, replicas 2 (default: pinned replicas)", main, probe, p.concurrency)
	r2.pinBytes = pinBytes
	runs = append(runs, r2)
	cl2.stop(b)

	// Report.
	for _, r := range runs {
		fmt.Printf("  %s: replay %v (%.0f req/s), probe %v; %d errors; origin answered %d chunk requests; edges asked peers %d and the origin %d times\n",
			r.name, r.main.elapsed.Round(time.Millisecond), float64(r.main.requests)/r.main.elapsed.Seconds(), r.probe.elapsed.Round(time.Millisecond),
			r.main.errors+r.probe.errors, r.originReqs, r.edgeUpstream["peer"], r.edgeUpstream["origin"])
		for _, l := range r.edgeLines {
			fmt.Printf("    %s\n", l)
		}
	}
	fmt.Printf("  nginx: replay %v (%.0f req/s), probe %v; %d errors; an edge's cache folder held %.2f MB on average, %.2f MB at most, for max_size %.2f MB (sampled every 250 ms; manager_sleep=50ms)\n",
		nMain.elapsed.Round(time.Millisecond), float64(nMain.requests)/nMain.elapsed.Seconds(), nProbe.elapsed.Round(time.Millisecond), nMain.errors+nProbe.errors,
		float64(nMean)/1e6, float64(nPeak)/1e6, float64(edgeCache)/1e6)
	for _, r := range append([]*replayResult{nMain, nProbe}, runs[0].main, runs[0].probe, runs[1].main, runs[1].probe) {
		if r.errors > 0 {
			b.Errorf("%d requests not answered whole", r.errors)
		}
	}

	nHit := 1 - float64(nOrigin)/float64(traceBytes)
	fmt.Printf("offline on the trace, byte hit ratio: Belady %.3f per edge (independent edges) / %.3f as one cache of all edges' bytes; LRU %.3f per edge / %.3f as one cache; the nodes' DiskCache (W-TinyLFU) as one cache %.3f (%.2f× Belady)\n",
		beladyEdges, beladyCluster, lruEdges, lruCluster, policyCluster, policyCluster/beladyCluster)
	fmt.Printf("offline on the trace, one cache of all edges' bytes: the most requested chunks of the whole trace held from their first request (counts known in advance; the bound for a policy that cannot see the future on independent requests) %.3f = %.2f× Belady\n",
		oracleCluster, oracleCluster/beladyCluster)
	fmt.Printf("nginx %s proxy_cache edges (anchor): origin %.1f MB of %.1f MB served, offload %.1f %%; byte hit ratio %.3f = %.2f× Belady per edge, %.2f× LRU per edge\n",
		nginxVersion(nginxBin), float64(nOrigin)/1e6, float64(traceBytes)/1e6, 100*nHit, nHit, nHit/beladyEdges, nHit/lruEdges)
	for _, r := range runs {
		h := 1 - float64(r.originBytes)/float64(traceBytes)
		fmt.Printf("%s: origin %.1f MB of %.1f MB served during the replay (prefetches included), offload %.1f %%; byte hit ratio %.3f = %.2f× Belady as one cache (%.2f× per edge), %.2f× LRU as one cache (%.2f× per edge); origin bytes %.2f× nginx's\n",
			r.name, float64(r.originBytes)/1e6, float64(traceBytes)/1e6, 100*h, h, h/beladyCluster, h/beladyEdges, h/lruCluster, h/lruEdges, float64(r.originBytes)/float64(max(nOrigin, 1)))
		if r.pinBytes > 0 {
			all := r.originBytes + r.pinBytes
			fmt.Printf("%s: with the pinning upload before the replay (%.1f MB, the catalog is %.1f MB): origin %.1f MB, offload %.1f %%; %.2f× nginx's origin bytes\n",
				r.name, float64(r.pinBytes)/1e6, float64(catalog)/1e6, float64(all)/1e6, 100*(1-float64(all)/float64(traceBytes)), float64(all)/float64(max(nOrigin, 1)))
		}
	}
	fmt.Printf("  %-8s chunk latency, whole replay (%d viewers at a time, every source): p50 %.2f ms p99 %.2f ms\n",
		"nginx", p.concurrency, ms(quantileOf(nMain.lat, 0.5)), ms(quantileOf(nMain.lat, 0.99)))
	for _, r := range runs {
		fmt.Printf("  %-8s chunk latency, whole replay (%d viewers at a time, every source): p50 %.2f ms p99 %.2f ms\n",
			r.name, p.concurrency, ms(quantileOf(r.main.lat, 0.5)), ms(quantileOf(r.main.lat, 0.99)))
	}
	byClass := func(name string, r *replayResult) {
		var parts []string
		for _, cl := range []string{"hit", "peer", "origin", "unknown"} {
			l := r.byClass[cl]
			if len(l) == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %d (%.0f %% of bytes) p50 %.2f ms p99 %.2f ms", cl, len(l),
				100*float64(r.bytesByClass[cl])/float64(r.bytes), ms(quantileOf(l, 0.5)), ms(quantileOf(l, 0.99))))
		}
		fmt.Printf("  %-8s chunk latency by source, serial probe: %s\n", name, strings.Join(parts, "; "))
	}
	byClass("nginx", nProbe)
	for _, r := range runs {
		byClass(r.name, r.probe)
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	g := runs[0]
	gHit := 1 - float64(g.originBytes)/float64(traceBytes)
	fmt.Printf("VoD cluster, replicas 1 (caches only): offload %.1f %% — target ≥ 95 %%: %s (Belady's bound with these caches is %.1f %%)\n", 100*gHit, verdict(gHit >= 0.95), 100*beladyCluster)
	g2 := runs[1]
	g2All := g2.originBytes + g2.pinBytes
	g2Hit := 1 - float64(g2All)/float64(traceBytes)
	fmt.Printf("VoD cluster, replicas 2 (default, pinned replicas): offload %.1f %% with the pinning upload counted (%.1f %% during the replay) — target ≥ 95 %%: %s; origin bytes %.1f MB vs nginx %.1f MB (%.2f×)\n",
		100*g2Hit, 100*(1-float64(g2.originBytes)/float64(traceBytes)), verdict(g2Hit >= 0.95), float64(g2All)/1e6, float64(nOrigin)/1e6, float64(g2All)/float64(max(nOrigin, 1)))
	fmt.Printf("VoD cluster: byte hit ratio %.3f = %.2f× Belady (one cache of all edges' bytes) — target ≥ 0.85: %s (the most-requested-chunks oracle gets %.2f×, the nodes' policy offline %.2f×); LRU (one cache) %.3f — target above: %s\n",
		gHit, gHit/beladyCluster, verdict(gHit >= 0.85*beladyCluster), oracleCluster/beladyCluster, policyCluster/beladyCluster, lruCluster, verdict(gHit > lruCluster))
	// nginx edges that kept max_size would evict LRU and admit every
	// miss: the per-edge LRU figure.
	nBounded := int64((1 - lruEdges) * float64(traceBytes))
	fmt.Printf("VoD cluster, replicas 1: origin bytes %.1f MB vs nginx %.1f MB as measured (%.2f×; peak cache vs max_size above) and %.1f MB with max_size kept (LRU per edge, offline; %.2f×) — target ≤ nginx: %s as measured, %s with the bound kept (load average after: %s)\n",
		float64(g.originBytes)/1e6, float64(nOrigin)/1e6, float64(g.originBytes)/float64(max(nOrigin, 1)), float64(nBounded)/1e6, float64(g.originBytes)/float64(max(nBounded, 1)),
		verdict(g.originBytes <= nOrigin), verdict(g.originBytes <= nBounded), loadAvg())
	b.ReportMetric(100*gHit, "offload-%")
	b.ReportMetric(gHit/beladyCluster, "x-belady")
	b.ReportMetric(float64(g.originBytes)/1e6, "origin-MB")
	b.ReportMetric(float64(nOrigin)/1e6, "nginx-origin-MB")
	b.ReportMetric(100*g2Hit, "offload-r2-%")
}

// waitPinned waits until the origin of a replicas ≥ 2 cluster has served
// the pinning of its titles' chunks (its bytes served stop growing after
// reaching most of the catalog), and returns those bytes.
func waitPinned(b *testing.B, c *vodCluster, catalog int64) int64 {
	origin := c.nodes[0]
	served := func() int64 { return int64(origin.cacheStatus(b).Fetch.BytesServed["local"]) }
	deadline := time.Now().Add(3 * time.Minute)
	last, stable := served(), 0
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		now := served()
		if now == last && now >= catalog*9/10 {
			stable++
			if stable >= 6 {
				fmt.Printf("  replicas 2: the origin served %.1f MB pinning replicas (catalog %.1f MB)\n", float64(now)/1e6, float64(catalog)/1e6)
				return now
			}
		} else {
			stable = 0
		}
		last = now
	}
	b.Fatalf("pinning did not settle: the origin served %d bytes of a %d-byte catalog", last, catalog)
	return 0
}

// nginxEdges is one nginx process: an origin server block serving the
// chunk files, and edge server blocks each with its own proxy_cache.
type nginxEdges struct {
	edges     []string
	cacheDirs []string
	originLog string
	stop      func()
}

// cacheBytes are the bytes of the files in each edge's cache folder.
func (n *nginxEdges) cacheBytes() []int64 {
	out := make([]int64, len(n.cacheDirs))
	for i, d := range n.cacheDirs {
		filepath.WalkDir(d, func(_ string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil {
					out[i] += fi.Size()
				}
			}
			return nil
		})
	}
	return out
}

// sampleCacheBytes samples cacheBytes every interval until the returned
// func is called, which returns the mean and the peak of an edge's bytes.
func (n *nginxEdges) sampleCacheBytes(interval time.Duration) func() (mean, peak int64) {
	stop, done := make(chan struct{}), make(chan struct{})
	var sum, count, peak int64
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for _, v := range n.cacheBytes() {
				sum += v
				count++
				peak = max(peak, v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int64, int64) {
		close(stop)
		<-done
		return sum / max(count, 1), peak
	}
}

// originBytes sums the $body_bytes_sent lines of the origin's access log.
func (n *nginxEdges) originBytes(b *testing.B) int64 {
	f, err := os.Open(n.originLog)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var sum int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			b.Fatalf("origin access log line %q", sc.Text())
		}
		sum += v
	}
	return sum
}

// startNginxEdges runs nginx (stopped at cleanup) with an origin serving
// chunkDir at Gradient's chunk URLs and `edges` caching proxies in front
// of it, each with a proxy_cache of maxSize bytes, proxy_cache_lock on.
func startNginxEdges(b *testing.B, bin, chunkDir string, edges int, maxSize int64) *nginxEdges {
	prefix := b.TempDir()
	u, err := user.Current()
	if err != nil {
		b.Fatal(err)
	}
	group := u.Gid
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		group = g.Name
	}
	originPort := testutil.FreePort(b, "tcp")
	res := &nginxEdges{originLog: filepath.Join(prefix, "origin.log")}
	var c strings.Builder
	fmt.Fprintf(&c, `daemon off;
master_process on;
user %s %s;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %s/client_body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 65s;
    types { }
    default_type application/octet-stream;
    log_format bytes '$body_bytes_sent';
    upstream origin {
        server 127.0.0.1:%d;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:%d;
        access_log %s bytes;
        location ~ "^/vod/chunks/([0-9a-f]{2})([0-9a-f]{62})\.(m4s|mp4)$" {
            alias %s/$1/$1$2;
            default_type video/mp4;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }
    }
`, u.Username, group, nginxWorkers(), prefix, prefix, prefix, prefix, prefix, prefix, prefix, originPort, originPort, res.originLog, chunkDir)
	for i := range edges {
		port := testutil.FreePort(b, "tcp")
		res.edges = append(res.edges, fmt.Sprintf("http://127.0.0.1:%d", port))
		res.cacheDirs = append(res.cacheDirs, filepath.Join(prefix, fmt.Sprintf("cache%d", i)))
		fmt.Fprintf(&c, `    proxy_cache_path %s/cache%d levels=1:2 keys_zone=edge%d:8m max_size=%d inactive=1y use_temp_path=off manager_sleep=50ms manager_files=10000 manager_threshold=1s;
    server {
        listen 127.0.0.1:%d;
        location /vod/chunks/ {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge%d;
            proxy_cache_key $uri;
            proxy_cache_lock on;
            proxy_cache_valid 200 1y;
            add_header X-Cache $upstream_cache_status always;
        }
    }
`, prefix, i, i, maxSize, port, i)
	}
	c.WriteString("}\n")
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(c.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath, "-p", prefix+"/", "-e", filepath.Join(prefix, "error.log"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	res.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM) // fast shutdown: the master stops its workers
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
	}
	b.Cleanup(res.stop)
	for _, e := range append([]string{fmt.Sprintf("http://127.0.0.1:%d", originPort)}, res.edges...) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := http.Get(e + "/healthz")
			if err == nil {
				r.Body.Close()
				break
			}
			select {
			case <-done:
				errLog, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
				b.Fatalf("nginx exited: %s\n%s", out.String(), errLog)
			default:
			}
			if time.Now().After(deadline) {
				b.Fatalf("nginx does not answer at %s", e)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Printf("  nginx: origin on 127.0.0.1:%d, %d proxy_cache edges of max_size %d bytes, configuration %s\n", originPort, edges, maxSize, confPath)
	return res
}

// TestVodCacheSims checks the offline yardsticks on a hand-worked trace
// and on seeded random ones with chunks of different sizes, where the
// byte-weighted Belady (a heuristic there) does no worse than LRU and both
// count every byte once.
func TestVodCacheSims(t *testing.T) {
	// Unit sizes, room for 2: a b c a b c a.
	// LRU misses all 7. Belady: a, b miss; c (next use 5) bypassed,
	// a hit; b hit; c bypassed again; a hit: 3 hits.
	sizes := []int64{1, 1, 1}
	seq := []int{0, 1, 2, 0, 1, 2, 0}
	if h, tot := lruSim(seq, sizes, 2); h != 0 || tot != 7 {
		t.Errorf("LRU: %d of %d, want 0 of 7", h, tot)
	}
	if h, tot := beladySim(seq, sizes, 2); h != 3 || tot != 7 {
		t.Errorf("Belady: %d of %d, want 3 of 7", h, tot)
	}
	// The oracle holds a (3 requests) and b (2, first of the ties): 2 + 1.
	if h, tot := oracleSim(seq, sizes, 2); h != 3 || tot != 7 {
		t.Errorf("oracle: %d of %d, want 3 of 7", h, tot)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		n := 5 + rng.IntN(40)
		sizes := make([]int64, n)
		for i := range sizes {
			sizes[i] = 1 + rng.Int64N(100)
		}
		seq := make([]int, 500)
		for i := range seq {
			seq[i] = min(rng.IntN(n), rng.IntN(n)) // skewed
		}
		capacity := 50 + rng.Int64N(1000)
		lh, lt := lruSim(seq, sizes, capacity)
		bh, bt := beladySim(seq, sizes, capacity)
		if lt != bt || bh < lh {
			t.Fatalf("capacity %d: Belady %d of %d below LRU %d of %d", capacity, bh, bt, lh, lt)
		}
		// With chunks of one size Belady is the optimum: no static choice
		// beats it.
		units := make([]int64, n)
		for i := range units {
			units[i] = 1
		}
		ub, _ := beladySim(seq, units, capacity/50)
		uo, ot := oracleSim(seq, units, capacity/50)
		if ot != int64(len(seq)) || uo > ub {
			t.Fatalf("capacity %d: the oracle's %d of %d above Belady's %d", capacity/50, uo, ot, ub)
		}
	}
}
