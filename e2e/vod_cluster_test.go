package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/vod"
)

// VoD across a cluster of real `gradient node` processes on loopback,
// gossiping with a key (so that their peer chunk requests are signed with
// the cluster secret, as beyond loopback).

// vodProc is a `gradient node` process of a VoD cluster.
type vodProc struct {
	*procNode
	data string
}

func (p *vodProc) base() string { return "http://" + p.http }

// startVoDProc starts a node process named name that joins join (none
// when empty), with vodYAML (indented under "vod:") as its VoD
// configuration.
func startVoDProc(t *testing.T, bin, name, join, vodYAML string) *vodProc {
	t.Helper()
	n := testutil.StartNode(t, testutil.NodeOptions{Bin: bin, Name: name, GossipKey: clusterKey, Join: join, Extra: `overlay:
  probe_interval: 300ms
  probe_timeout: 200ms
  suspicion_mult: 4
  push_pull_interval: 2s
vod:
` + vodYAML + "\n"})
	return &vodProc{procNode: &procNode{name: name, http: n.HTTP, rtsp: n.RTSP, gossip: n.Gossip, proc: n.Proc}, data: n.Data}
}

// startVoDCluster starts n node processes n0… that join n0, and waits
// until each sees all of them alive.
func startVoDCluster(t *testing.T, n int, vodYAML string) []*vodProc {
	t.Helper()
	bin := buildGradient(t)
	var ps []*vodProc
	for i := range n {
		join := ""
		if i > 0 {
			join = ps[0].gossip
		}
		ps = append(ps, startVoDProc(t, bin, fmt.Sprintf("n%d", i), join, vodYAML))
	}
	waitAlive(t, ps, n)
	return ps
}

// waitAlive waits until every process sees want members alive.
func waitAlive(t *testing.T, ps []*vodProc, want int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, fmt.Sprintf("%d members alive everywhere", want), func() bool {
		for _, p := range ps {
			if len(aliveMembers(t, p)) != want {
				return false
			}
		}
		return true
	})
}

// aliveMembers are the names of the members p's /api/v1/cluster lists
// alive, sorted.
func aliveMembers(t *testing.T, p *vodProc) []string {
	st, ok := p.status(t)
	if !ok {
		return nil
	}
	var out []string
	for _, m := range st.Members {
		if m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	slices.Sort(out)
	return out
}

// vodAdd uploads clip to p with `gradient vod add`, which waits until the
// title is ready, and returns its id.
func vodAdd(t *testing.T, p *vodProc, clip, title string) string {
	t.Helper()
	cmd := exec.Command(buildGradient(t), "vod", "add", "--node", p.base(), "--title", title, clip)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gradient vod add: %v\n%s%s", err, out, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// waitReadyAt waits until p lists title id ready.
func waitReadyAt(t *testing.T, p *vodProc, id string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, p.name+" lists the title ready", func() bool {
		var tj vod.TitleJSON
		return getJSONInto(t, p.base()+"/api/v1/vod/titles/"+id, &tj) == http.StatusOK && tj.State == vod.StateReady
	})
}

// httpText GETs url and returns its status and body.
func httpText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// titleChunks are the chunk paths (/vod/chunks/<hex>.<ext>) of every
// rendition of title id as p's playlists name them, by rendition
// playlist, each init section first.
func titleChunks(t *testing.T, p *vodProc, id string) map[string][]string {
	t.Helper()
	code, master := httpText(t, p.base()+"/vod/"+id+"/index.m3u8")
	if code != http.StatusOK {
		t.Fatalf("%s: index.m3u8: %d", p.name, code)
	}
	out := map[string][]string{}
	for _, l := range strings.Split(master, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		code, body := httpText(t, p.base()+"/vod/"+id+"/"+l)
		if code != http.StatusOK {
			t.Fatalf("%s: %s: %d", p.name, l, code)
		}
		for _, ml := range strings.Split(body, "\n") {
			if i := strings.Index(ml, "/vod/chunks/"); i >= 0 {
				u := ml[i:]
				if j := strings.IndexByte(u, '"'); j >= 0 {
					u = u[:j]
				}
				out[l] = append(out[l], strings.TrimSpace(u))
			}
		}
		if len(out[l]) < 2 {
			t.Fatalf("%s: %s names %d chunks:\n%s", p.name, l, len(out[l]), body)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: the master playlist names no rendition:\n%s", p.name, master)
	}
	return out
}

// chunkDigest is the digest a chunk path names.
func chunkDigest(t *testing.T, path string) vod.Digest {
	t.Helper()
	name := path[strings.LastIndexByte(path, '/')+1:]
	h, _, _ := strings.Cut(name, ".")
	d, err := vod.ParseDigest(h)
	if err != nil {
		t.Fatalf("chunk path %q: %v", path, err)
	}
	return d
}

// fetchChunk GETs a chunk path from base and checks the bytes against the
// digest the path names. A response cut off is an error, as is a complete
// response with other bytes (wrong is true then).
func fetchChunk(base, path string) (wrong bool, err error) {
	resp, err := http.Get(base + path)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s: %s", path, resp.Status)
	}
	name := path[strings.LastIndexByte(path, '/')+1:]
	want, _, _ := strings.Cut(name, ".")
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
		return true, fmt.Errorf("%s: %d bytes that do not match the digest", path, len(b))
	}
	return false, nil
}

// peerHolds asks p, as a peer would (signed, no fill), for chunk d: p
// answers 200 only when its store or cache holds it.
func peerHolds(t *testing.T, p *vodProc, d vod.Digest) bool {
	req, _ := http.NewRequest(http.MethodHead, p.base()+"/internal/vod/chunks/"+d.String(), nil)
	vod.SignPeerRequest(req, clusterKey, "e2e")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// storeHas reports whether p's chunk store holds d: its file is in the
// store's folder (a pinned copy; fetched chunks go to the cache folder).
// Unlike peerHolds it reads nothing through the node, so the node's memory
// tier does not get the chunk.
func storeHas(p *vodProc, d vod.Digest) bool {
	_, err := os.Stat(storeFile(p, d))
	return err == nil
}

func storeFile(p *vodProc, d vod.Digest) string {
	return filepath.Join(p.data, "vod", "chunks", d.String()[:2], d.String())
}

// peerGet is peerHolds's GET: status and body.
func peerGet(t *testing.T, p *vodProc, d vod.Digest) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.base()+"/internal/vod/chunks/"+d.String(), nil)
	vod.SignPeerRequest(req, clusterKey, "e2e")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func procCache(t *testing.T, p *vodProc) vod.CacheStatus {
	t.Helper()
	var st vod.CacheStatus
	if code := getJSONInto(t, p.base()+"/api/v1/vod/cache", &st); code != http.StatusOK {
		t.Fatalf("%s: /api/v1/vod/cache: %d", p.name, code)
	}
	return st
}

// pinOwner is the node that pins d as its replica (vod.replicas 2): the
// first rendezvous owner among the alive members other than the origin.
func pinOwner(d vod.Digest, alive []string, origin string) string {
	var others []string
	for _, n := range alive {
		if n != origin {
			others = append(others, n)
		}
	}
	return vod.Owners(d, others)[0]
}

func byName(ps []*vodProc, name string) *vodProc {
	for _, p := range ps {
		if p.name == name {
			return p
		}
	}
	return nil
}

// waitPinned waits until every chunk is in its pin owner's store.
func waitPinned(t *testing.T, ps []*vodProc, ds []vod.Digest, origin string) {
	t.Helper()
	var names []string
	for _, p := range ps {
		names = append(names, p.name)
	}
	testutil.Eventually(t, 60*time.Second, "every chunk pinned on its replica owner", func() bool {
		for _, d := range ds {
			if !storeHas(byName(ps, pinOwner(d, names, origin)), d) {
				return false
			}
		}
		return true
	})
}

func allDigests(t *testing.T, chunks map[string][]string) []vod.Digest {
	var ds []vod.Digest
	for _, paths := range chunks {
		for _, u := range paths {
			ds = append(ds, chunkDigest(t, u))
		}
	}
	return ds
}

// TestVoDClusterTitleAddedAtOneNodePlaysThroughAnotherInChromium: a title
// added at n0 with the CLI plays through n2's player page in Chromium,
// seeks to 70 % and plays on, and n2's chunks came from its peers. (No
// replicas: n2 holds none of the title, so whichever chunks the player
// asks for, they come through n2's fetcher.)
func TestVoDClusterTitleAddedAtOneNodePlaysThroughAnotherInChromium(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 16, GOP: 25, Audio: "aac"})
	ps := startVoDCluster(t, 3, "  segment_duration: 2s\n  replicas: 1\n  ladder: [{name: \"180p\", height: 180, kbps: 300}]")
	n0, n2 := ps[0], ps[2]
	id := vodAdd(t, n0, clip, "Across The Cluster")
	waitReadyAt(t, n2, id)

	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(n2.base()+"/vod/"+id+"/")); err != nil {
		t.Fatal(err)
	}
	var v vodVideo
	testutil.Eventually(t, 40*time.Second, "the player at n2 plays 30 frames", func() bool {
		v = vodPlayerState(ctx)
		return v.Frames >= 30 && v.Duration > 0
	})
	target := 0.7 * v.Duration
	before := v.Frames
	if err := chromedp.Run(ctx, chromedp.Evaluate(fmt.Sprintf(`document.getElementById('v').currentTime = %f`, target), nil)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 40*time.Second, "the player at n2 plays 30 frames after seeking to 70 %", func() bool {
		v = vodPlayerState(ctx)
		return v.Frames >= before+30 && v.Time >= target
	})
	st := procCache(t, n2)
	up := st.Fetch.BytesServed["peer"] + st.Fetch.BytesServed["origin"]
	if !st.Cluster || up == 0 || st.Cache.Chunks == 0 {
		t.Fatalf("n2's /api/v1/vod/cache: %+v: want chunks fetched from its peers into its cache", st)
	}
	t.Logf("n2 played to %.1f s of %.1f; bytes served by source %v, upstream fetches %v", v.Time, v.Duration, st.Fetch.BytesServed, st.Fetch.UpstreamFetches)
	testutil.Screenshot(t, ctx, "vod-cluster-player")
}

// TestVoDClusterKill9OfTheSourceMidChunkFailsOverWithARange: a viewer at
// an edge asks for a ~10 MB chunk the edge does not hold; the edge fetches
// it from its first source S (a rendezvous owner, or the origin). S is
// throttled with SIGSTOP/SIGCONT until the viewer has some of the bytes,
// and then, with the chunk only partly sent, S is killed with SIGKILL.
// The edge must go on from the next source with a Range request: the
// viewer's response completes, with the right bytes, within a second of
// the kill. (The viewer's one response carries on: had the edge fetched
// the chunk again from its start, it would have cut the viewer off.)
func TestVoDClusterKill9OfTheSourceMidChunkFailsOverWithARange(t *testing.T) {
	sourceFailsMidChunk(t, true)
}

// TestVoDClusterSourceThatHangsMidChunkIsLeftAfterTheStallTimeout: as
// above, but S is left stopped (a hang, not a close): the edge abandons it
// after the stall timeout (2 s) and the viewer's response completes within
// the stall timeout + 1 s of S's last byte.
func TestVoDClusterSourceThatHangsMidChunkIsLeftAfterTheStallTimeout(t *testing.T) {
	sourceFailsMidChunk(t, false)
}

func sourceFailsMidChunk(t *testing.T, kill bool) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 30, GOP: 50, Bitrate: "8M"})
	// No prefetch: a segment the edge was not asked for stays cold there,
	// for the next attempt below.
	ps := startVoDCluster(t, 3, "  segment_duration: 10s\n  prefetch_segments: -1\n  ladder: []")
	n0 := ps[0]
	names := []string{"n0", "n1", "n2"}
	id := vodAdd(t, n0, clip, "Big Chunks")
	for _, p := range ps[1:] {
		waitReadyAt(t, p, id)
	}
	chunks := titleChunks(t, n0, id)
	segs := chunks["source.m3u8"][1:]
	// In one of S's 1 ms slices the kernel's loopback socket buffers may
	// take most of a 10 MB chunk; when the whole of it got through, the
	// next segment (cold at its edge) is tried.
	for seg := 0; seg < len(segs); seg++ {
		if sourceFailsMidChunkOnce(t, kill, ps, names, segs[seg], seg == len(segs)-1) {
			return
		}
	}
}

// sourceFailsMidChunkOnce runs the test on one segment; false: the
// source was not slow enough (the viewer had the whole chunk before S
// failed) and last is false.
func sourceFailsMidChunkOnce(t *testing.T, kill bool, ps []*vodProc, names []string, path string, last bool) bool {
	n0 := ps[0]
	// The segment's edge is whichever of n1 and n2 is not its replica
	// owner, so the edge must fetch it.
	d := chunkDigest(t, path)
	pinner := byName(ps, pinOwner(d, names, "n0"))
	edge := ps[1]
	if pinner == edge {
		edge = ps[2]
	}
	testutil.Eventually(t, 60*time.Second, pinner.name+" pins the segment", func() bool { return storeHas(pinner, d) })
	if peerHolds(t, edge, d) {
		t.Fatalf("%s holds the segment before any viewer asked it for it", edge.name)
	}
	// The edge's first source: its first rendezvous owner among the
	// members other than the origin (n0), itself left out (no fetch has
	// ranked the peers yet).
	var srcName string
	for _, o := range vod.Owners(d, slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "n0" })) {
		if o != edge.name {
			srcName = o
			break
		}
	}
	src := byName(ps, srcName)
	next := n0
	if srcName == "n0" {
		next = pinner
	}
	pid := src.proc.Cmd.Process.Pid
	// Stop S, then start the viewer; S runs in 1 ms slices until the
	// viewer has its first bytes.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	type result struct {
		sum  [32]byte
		n    int64
		size int64
		err  error
		end  time.Time
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { r.end = time.Now(); done <- r }()
		resp, err := http.Get(edge.base() + path)
		if err != nil {
			r.err = err
			return
		}
		defer resp.Body.Close()
		r.size = resp.ContentLength
		if resp.StatusCode != http.StatusOK {
			r.err = fmt.Errorf("%s", resp.Status)
			return
		}
		h := sha256.New()
		buf := make([]byte, 32<<10)
		for {
			m, err := resp.Body.Read(buf)
			h.Write(buf[:m])
			got.Add(int64(m))
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = err
				return
			}
		}
		r.n = got.Load()
		h.Sum(r.sum[:0])
	}()
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() == 0 && time.Now().Before(deadline) {
		syscall.Kill(pid, syscall.SIGCONT)
		time.Sleep(time.Millisecond)
		syscall.Kill(pid, syscall.SIGSTOP)
		time.Sleep(30 * time.Millisecond)
	}
	// S stopped: what it had queued drains, and then nothing comes.
	time.Sleep(200 * time.Millisecond)
	atKill := got.Load()
	select {
	case r := <-done:
		syscall.Kill(pid, syscall.SIGCONT)
		if last {
			t.Fatalf("the viewer's response ended before the kill (%d bytes, %v): the source was not slow enough, on every segment", r.n, r.err)
		}
		t.Logf("the viewer's response of %s ended before the kill (%d bytes, %v): the source was not slow enough; next segment", path, r.n, r.err)
		return false
	default:
	}
	if atKill == 0 {
		t.Fatal("no byte reached the viewer in 10 s of the source's 1 ms slices")
	}
	failAt := time.Now()
	if kill {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	} else {
		// S has been stopped since before the settle: its last byte came
		// then at the latest.
		failAt = failAt.Add(-200 * time.Millisecond)
		defer syscall.Kill(pid, syscall.SIGCONT)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the viewer's response did not complete within 15 s of %s's failure", srcName)
	}
	took := r.end.Sub(failAt)
	if r.err != nil {
		t.Fatalf("the viewer's response failed after %s's failure: %v", srcName, r.err)
	}
	if vod.Digest(r.sum) != d || r.n != r.size {
		t.Fatalf("the viewer got %d bytes (Content-Length %d) hashing to %x, want %s", r.n, r.size, r.sum, d)
	}
	how := "killed"
	if !kill {
		how = "stopped for good"
	}
	t.Logf("chunk of %d bytes from %s to %s: %d bytes at the viewer when %s was %s; the response completed %v after that, from %s",
		r.size, srcName, edge.name, atKill, srcName, how, took.Round(time.Millisecond), next.name)
	if atKill >= r.size {
		t.Fatalf("the viewer had the whole chunk before %s failed", srcName)
	}
	bound := time.Second
	if !kill {
		bound += 2 * time.Second // the stall timeout
	}
	if took > bound {
		t.Errorf("the response completed %v after %s failed, want within %v", took, srcName, bound)
	}
	if !regexp.MustCompile(`chunk source failed: next source.* digest=` + d.String() + ` peer=` + srcName + ` `).MatchString(edge.proc.Output()) {
		t.Errorf("%s did not log the failure of %s as the segment's source", edge.name, srcName)
	}
	if !kill && !strings.Contains(edge.proc.Output(), "stalled") {
		t.Errorf("%s did not log the stall of %s", edge.name, srcName)
	}
	return true
}

// TestVoDClusterCorruptPeersAreDetectedAndCounted: a chunk file flipped on
// a peer's disk is never served by it (its store verifies on read), and a
// peer that sends wrong bytes anyway (here a gossip member whose chunk
// route answers every chunk with one byte flipped) has every such copy
// detected by the node that fetched it: the viewer gets the right bytes
// (after at most one retry, as a player would) and never a whole wrong
// chunk, and each copy is counted in
// gradient_vod_integrity_failures_total{peer}.
func TestVoDClusterCorruptPeersAreDetectedAndCounted(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 20, GOP: 25, Audio: "aac"})
	ps := startVoDCluster(t, 3, "  segment_duration: 1s\n  ladder: []")
	n0, n1, n2 := ps[0], ps[1], ps[2]
	names := []string{"n0", "n1", "n2"}
	id := vodAdd(t, n0, clip, "Bit Flips")
	waitReadyAt(t, n2, id)
	paths := titleChunks(t, n2, id)["source.m3u8"]
	ds := allDigests(t, map[string][]string{"": paths})
	waitPinned(t, ps, ds, "n0")

	// A byte flipped in a chunk n1 pinned, on n1's disk.
	var flipped vod.Digest
	var flippedPath string
	for i, d := range ds {
		if pinOwner(d, names, "n0") == "n1" {
			flipped, flippedPath = d, paths[i]
			break
		}
	}
	if flippedPath == "" {
		t.Fatal("n1 pinned no chunk of the title")
	}
	file := storeFile(n1, flipped)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("n1's pinned copy: %v", err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := peerGet(t, n1, flipped)
	if code == http.StatusOK && vod.Digest(sha256.Sum256(body)) != flipped {
		t.Fatalf("n1 served its corrupt copy of %s to a peer", flipped)
	}
	if code != http.StatusNotFound {
		t.Errorf("n1 answered %d for its corrupt copy, want 404 (dropped)", code)
	}
	if wrong, err := fetchChunk(n2.base(), flippedPath); err != nil {
		t.Fatalf("the chunk whose copy on n1 is corrupt, through n2 (wrong bytes: %v): %v", wrong, err)
	}
	// The same chunk, now in n2's cache folder (fetched, never read back),
	// gets a byte flipped too: n2 refuses its copy and fetches it again.
	cfile := filepath.Join(n2.data, "vod", "cache", flipped.String()[:2], flipped.String())
	testutil.Eventually(t, 5*time.Second, "n2 caches the chunk", func() bool {
		_, err := os.Stat(cfile)
		return err == nil
	})
	if b, err = os.ReadFile(cfile); err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(cfile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := peerGet(t, n2, flipped); code == http.StatusOK && vod.Digest(sha256.Sum256(body)) != flipped {
		t.Fatalf("n2 served its corrupt cached copy of %s to a peer", flipped)
	}
	if wrong, err := fetchChunk(n2.base(), flippedPath); err != nil {
		t.Fatalf("the chunk whose cached copy on n2 is corrupt, through n2 (wrong bytes: %v): %v", wrong, err)
	}
	// A replica's bad copy is n1's problem, not the title's: the title
	// stays ready everywhere and plays through n1, and n1 pins the chunk
	// again (from the cluster, verified).
	for _, p := range ps {
		var tj vod.TitleJSON
		if getJSONInto(t, p.base()+"/api/v1/vod/titles/"+id, &tj); tj.State != vod.StateReady {
			t.Errorf("after n1 found its replica of a chunk corrupt, %s lists the title %s (%s)", p.name, tj.State, tj.Error)
		}
	}
	if wrong, err := fetchChunk(n1.base(), flippedPath); err != nil {
		t.Errorf("the chunk through n1, whose copy was corrupt (wrong bytes: %v): %v", wrong, err)
	}
	if code, _ := httpText(t, n1.base()+"/vod/"+id+"/source.m3u8"); code != http.StatusOK {
		t.Errorf("the title's playlist at n1 after its replica was found corrupt: %d", code)
	}
	testutil.Eventually(t, 20*time.Second, "n1 pins the chunk again", func() bool {
		b, err := os.ReadFile(file)
		return err == nil && vod.Digest(sha256.Sum256(b)) == flipped
	})

	// A member that sends wrong bytes despite that.
	bad := startBadPeer(t, n0.gossip, n0.base())
	waitAlive(t, ps, 4)
	var wrongs, retries atomic.Int64
	view := func(edge *vodProc, u string) {
		wrong, err := fetchChunk(edge.base(), u)
		if err != nil {
			if wrong {
				wrongs.Add(1)
			}
			retries.Add(1)
			wrong, err = fetchChunk(edge.base(), u)
		}
		if wrong {
			wrongs.Add(1)
		}
		if err != nil {
			t.Errorf("%s, after one retry: %v", edge.name, err)
		}
	}
	for _, edge := range []*vodProc{n1, n2} {
		// The chunks the bad member is the edge's first source of (by
		// rendezvous) are asked for at once, before the edge has ranked
		// its peers: once the bad member has sent a corrupt copy the edge
		// ranks it behind the others. Then the rest, in order.
		var first, rest []string
		for _, u := range paths {
			for _, o := range vod.Owners(chunkDigest(t, u), []string{"n1", "n2", "bad"}) { // the origin n0 is asked last
				if o != edge.name {
					if o == "bad" {
						first = append(first, u)
					} else {
						rest = append(rest, u)
					}
					break
				}
			}
		}
		var wg sync.WaitGroup
		for _, u := range first {
			wg.Add(1)
			go func() {
				defer wg.Done()
				view(edge, u)
			}()
		}
		wg.Wait()
		for _, u := range rest {
			view(edge, u)
		}
	}
	if wrongs.Load() > 0 {
		t.Fatalf("the viewer received %d whole chunks with wrong bytes", wrongs.Load())
	}
	// Prefetches may still run; then every copy the bad member sent an
	// edge must have been counted there.
	var total int64
	for _, edge := range []*vodProc{n1, n2} {
		var counted int64
		testutil.Eventually(t, 20*time.Second, edge.name+"'s integrity failures for the bad member match the copies it sent", func() bool {
			if procCache(t, edge).Fetch.FlightsInFlight != 0 {
				return false
			}
			counted = integrityMetric(t, edge, "bad")
			return counted == bad.sentTo(edge.name)
		})
		if est := procCache(t, edge).Fetch.Peers["bad"]; int64(est.Failures) < counted {
			t.Errorf("%s's estimate of the bad member counts %d failures for %d corrupt copies", edge.name, est.Failures, counted)
		}
		total += counted
	}
	if total == 0 {
		t.Fatalf("the bad member sent the edges no chunk: the test proved nothing (it served %d requests)", bad.asked.Load())
	}
	t.Logf("%d chunks through n1 and n2; the bad member sent them %d corrupt copies, all counted; the viewer retried %d times", len(paths), total, retries.Load())
}

// badPeer is a gossip member whose chunk route sends every chunk with one
// byte flipped (taken from the origin), under the right headers.
type badPeer struct {
	origin string // base URL of the origin, where the true bytes are
	asked  atomic.Int64
	mu     sync.Mutex
	chunks map[vod.Digest][]byte
	sent   map[string]int64 // corrupt copies sent, by asking node
}

func (bp *badPeer) sentTo(node string) int64 {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	return bp.sent[node]
}

func startBadPeer(t *testing.T, seed, origin string) *badPeer {
	t.Helper()
	bp := &badPeer{origin: origin, chunks: map[vod.Digest][]byte{}, sent: map[string]int64{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := strings.CutPrefix(r.URL.Path, "/internal/vod/chunks/")
		d, err := vod.ParseDigest(h)
		node, verr := vod.VerifyPeerRequest(r, clusterKey, time.Now())
		if !ok || err != nil || verr != nil {
			http.NotFound(w, r)
			return
		}
		bp.asked.Add(1)
		b := bp.originBytes(d)
		if b == nil {
			http.NotFound(w, r)
			return
		}
		b[len(b)/3] ^= 0x01
		w.Header().Set("Repr-Digest", d.ReprDigest())
		w.Header().Set("ETag", `"`+d.String()+`"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		cw := &countWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", time.Time{}, strings.NewReader(string(b)))
		if cw.n > 0 {
			bp.mu.Lock()
			bp.sent[node]++
			bp.mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	key, _ := base64.StdEncoding.DecodeString(clusterKey)
	mc := overlay.DefaultMembershipConfig()
	mc.Name = "bad"
	mc.BindAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	mc.Join = []string{seed}
	mc.Key = key
	mc.Meta.HTTP = strings.TrimPrefix(srv.URL, "http://")
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult, mc.PushPullInterval = 300*time.Millisecond, 200*time.Millisecond, 4, 2*time.Second
	m, err := overlay.NewMembership(mc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return bp
}

// originBytes is a copy of chunk d's true bytes, read once from the
// origin.
func (bp *badPeer) originBytes(d vod.Digest) []byte {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if b, ok := bp.chunks[d]; ok {
		return append([]byte(nil), b...)
	}
	req, _ := http.NewRequest(http.MethodGet, bp.origin+"/internal/vod/chunks/"+d.String(), nil)
	vod.SignPeerRequest(req, clusterKey, "bad")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	bp.chunks[d] = b
	return append([]byte(nil), b...)
}

type countWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// integrityMetric reads gradient_vod_integrity_failures_total{peer} from
// p's /metrics (0 when absent).
func integrityMetric(t *testing.T, p *vodProc, peer string) int64 {
	t.Helper()
	_, body := httpText(t, p.base()+"/metrics")
	re := regexp.MustCompile(`(?m)^gradient_vod_integrity_failures_total\{peer="` + regexp.QuoteMeta(peer) + `"\} (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return int64(v)
}

// TestVoDClusterKill9OfTheOriginLeavesEveryRenditionPlayable: with
// vod.replicas 2 (the default), once a title is ready every chunk of every
// rendition is pinned on n1 or n2; after the origin is killed with
// SIGKILL, every chunk still plays (digest-checked) through n1 and
// through n2, and ffprobe reads the whole title through n1.
func TestVoDClusterKill9OfTheOriginLeavesEveryRenditionPlayable(t *testing.T) {
	const seconds, fps = 12, 25
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: fps, Seconds: seconds, GOP: 25, Audio: "aac"})
	ps := startVoDCluster(t, 3, "  segment_duration: 2s\n  ladder: [{name: \"180p\", height: 180, kbps: 300}]")
	n0, n1, n2 := ps[0], ps[1], ps[2]
	id := vodAdd(t, n0, clip, "Outlives Its Origin")
	waitReadyAt(t, n1, id)
	waitReadyAt(t, n2, id)
	chunks := titleChunks(t, n1, id)
	if len(chunks) < 2 {
		t.Fatalf("want the source and a 180p rendition, got %v", chunks)
	}
	ds := allDigests(t, chunks)
	waitPinned(t, ps, ds, "n0")

	n0.proc.Cmd.Process.Kill()
	n0.proc.Wait(t, 10*time.Second)
	for _, p := range []*vodProc{n1, n2} {
		for pl, paths := range chunks {
			for _, u := range paths {
				if _, err := fetchChunk(p.base(), u); err != nil {
					t.Errorf("%s, %s, with the origin killed: %v", p.name, pl, err)
				}
			}
		}
	}
	// The playlists too are served by the others alone.
	if after := titleChunks(t, n2, id); !maps.EqualFunc(after, chunks, slices.Equal) {
		t.Errorf("n2's playlists after the origin's kill name other chunks: %v, want %v", after, chunks)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", n1.base()+"/vod/"+id+"/index.m3u8").CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe through n1 with the origin killed: %v\n%s", err, out)
	}
	// One line per program of the master playlist.
	for _, l := range strings.Fields(string(out)) {
		if pk, _ := strconv.Atoi(l); pk < seconds*fps-2 {
			t.Errorf("ffprobe read %s video packets of a rendition through n1, want the clip's %d", strings.TrimSpace(string(out)), seconds*fps)
		}
	}
	t.Logf("%d chunks in %d renditions played through n1 and n2 after the origin's kill; ffprobe: %s",
		len(ds), len(chunks), strings.Join(strings.Fields(string(out)), " "))
}

// TestVoDClusterJoinerTakesOverOnlyTheChunksItNowOwns: with three nodes
// and a title of many chunks, a fourth node joins. Computed with
// vod.Owners over the alive members /api/v1/cluster lists, the only
// chunks whose first owner changes are those the joiner now owns (about a
// quarter); the joiner's pinner pins exactly the chunks it is now the
// replica owner of, and n1 and n2 keep every chunk they pinned.
func TestVoDClusterJoinerTakesOverOnlyTheChunksItNowOwns(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 60, GOP: 25, Audio: "aac"})
	const vodYAML = "  segment_duration: 1s\n  ladder: []"
	ps := startVoDCluster(t, 3, vodYAML)
	n0 := ps[0]
	id := vodAdd(t, n0, clip, "Many Chunks")
	for _, p := range ps[1:] {
		waitReadyAt(t, p, id)
	}
	ds := allDigests(t, titleChunks(t, n0, id))
	waitPinned(t, ps, ds, "n0")
	before := aliveMembers(t, n0)
	held := map[string][]vod.Digest{}
	for _, d := range ds {
		o := pinOwner(d, before, "n0")
		held[o] = append(held[o], d)
	}

	n3 := startVoDProc(t, buildGradient(t), "n3", n0.gossip, vodYAML)
	ps = append(ps, n3)
	waitAlive(t, ps, 4)
	after := aliveMembers(t, n0)
	if !slices.Contains(after, "n3") || len(after) != 4 {
		t.Fatalf("alive after the join: %v", after)
	}
	var moved, mine []vod.Digest
	for _, d := range ds {
		was, now := vod.Owners(d, before)[0], vod.Owners(d, after)[0]
		if was != now {
			moved = append(moved, d)
			if now != "n3" {
				t.Errorf("chunk %s moved from %s to %s, not to the joiner", d, was, now)
			}
		}
		if pinOwner(d, after, "n0") == "n3" {
			mine = append(mine, d)
		}
	}
	// About 1/4 of the chunks: binomial(len(ds), 1/4) stays well within.
	if lo, hi := len(ds)/10, len(ds)/2; len(moved) < lo || len(moved) > hi {
		t.Errorf("%d of %d chunks changed first owner, want about a quarter (%d … %d)", len(moved), len(ds), lo, hi)
	}
	testutil.Eventually(t, 60*time.Second, fmt.Sprintf("n3 pins the %d chunks it is now the replica owner of", len(mine)), func() bool {
		for _, d := range mine {
			if !storeHas(n3, d) {
				return false
			}
		}
		return true
	})
	for _, d := range ds {
		if !slices.Contains(mine, d) && (storeHas(n3, d) || peerHolds(t, n3, d)) {
			t.Errorf("n3 holds chunk %s, whose replica owner is %s", d, pinOwner(d, after, "n0"))
		}
	}
	for _, name := range []string{"n1", "n2"} {
		for _, d := range held[name] {
			if !storeHas(byName(ps, name), d) || !peerHolds(t, byName(ps, name), d) {
				t.Errorf("%s no longer holds chunk %s it pinned before the join", name, d)
			}
		}
	}
	t.Logf("%d chunks: %d changed first owner (all to n3), n3 pinned %d; n1 kept %d, n2 kept %d",
		len(ds), len(moved), len(mine), len(held["n1"]), len(held["n2"]))
}
