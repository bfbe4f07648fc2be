package vod

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// clusterNode is a Service named name in its own folder, serving HTTP,
// with its announcements and removals recorded.
type clusterNode struct {
	s   *Service
	srv *httptest.Server
	dir string

	mu      sync.Mutex
	entries map[string]TitleEntry
	told    []TitleEntry // every entry OnTitleChange was given, in order
	removed []string
}

func newClusterNode(t *testing.T, name, dir string, fetch func(ctx context.Context, d Digest, origin string) ([]byte, error)) *clusterNode {
	t.Helper()
	s, err := NewService(DefaultConfig(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterNode{s: s, dir: dir, entries: map[string]TitleEntry{}}
	s.SetNodeName(name)
	s.OnTitleChange = func(e TitleEntry) {
		c.mu.Lock()
		c.entries[e.ID] = e
		c.told = append(c.told, e)
		c.mu.Unlock()
	}
	s.OnTitleRemoved = func(id string) {
		c.mu.Lock()
		c.removed = append(c.removed, id)
		c.mu.Unlock()
	}
	s.FetchManifest = fetch
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Route(mux)
	c.srv = httptest.NewServer(mux)
	t.Cleanup(c.close)
	return c
}

func (c *clusterNode) close() {
	c.srv.Close()
	c.s.Close()
}

func (c *clusterNode) entry(id string) (TitleEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	return e, ok
}

func (c *clusterNode) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(c.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// readyLocalTitle makes a ready title on c from chunks stored in its store
// (no packaging) and waits until its ready entry, with the manifest
// chunk's digest, is announced.
func readyLocalTitle(t *testing.T, c *clusterNode, title string) (string, TitleEntry, []Digest) {
	t.Helper()
	m := &Manifest{TargetDuration: 4 * time.Second, Duration: 8 * time.Second}
	r := Rendition{Name: "source", Width: 640, Height: 360, Kbps: 800, PeakKbps: 900, Codecs: "avc1.64001f,mp4a.40.2"}
	var ds []Digest
	for i := 0; i < 3; i++ {
		b := make([]byte, 1000)
		rand.Read(b)
		ch, err := c.s.Store().Put(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, ch.Digest)
		if i == 0 {
			r.Init = ch
			continue
		}
		ch.Start, ch.Duration = time.Duration(i-1)*4*time.Second, 4*time.Second
		r.Segments = append(r.Segments, ch)
	}
	m.Renditions = []Rendition{r}
	id := newID()
	if err := c.s.cat.Create(Title{ID: id, Title: title, Description: "a long way home"}); err != nil {
		t.Fatal(err)
	}
	if err := c.s.cat.SetReady(id, m, Digest{}); err != nil {
		t.Fatal(err)
	}
	var e TitleEntry
	testutil.Eventually(t, 5*time.Second, "the ready entry with its manifest digest is announced", func() bool {
		var ok bool
		e, ok = c.entry(id)
		return ok && e.State == StateReady && e.ManifestDigest != ""
	})
	return id, e, ds
}

// fetchFrom fetches manifest chunks from origin's store, as the node's
// fetcher would over HTTP.
func fetchFrom(origin **clusterNode) func(ctx context.Context, d Digest, _ string) ([]byte, error) {
	return func(ctx context.Context, d Digest, _ string) ([]byte, error) {
		rc, _, err := (*origin).s.Store().Open(d)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
}

// TestARemoteTitleIsListedAndPlayedFromItsVerifiedManifest: a title ready
// on node a is announced with a small entry naming its manifest chunk;
// merged on node b, it is listed with origin a, and b serves the same
// master and media playlists as a (same chunk URLs). a ignores an entry
// of its own title, whatever origin the entry names.
func TestARemoteTitleIsListedAndPlayedFromItsVerifiedManifest(t *testing.T) {
	var a *clusterNode
	a = newClusterNode(t, "a", t.TempDir(), nil)
	b := newClusterNode(t, "b", t.TempDir(), fetchFrom(&a))
	id, e, _ := readyLocalTitle(t, a, "Big Trip")
	if e.Origin != "a" || e.Title != "Big Trip" || len(e.Renditions) != 1 || e.Renditions[0].Width != 640 {
		t.Fatalf("entry: %+v", e)
	}
	if js, _ := json.Marshal(e); len(js) > 800 {
		t.Errorf("a ready title's entry is %d bytes of JSON, want at most 800 (one gossip packet)", len(js))
	}
	long := e
	long.Description = strings.Repeat("é", 3000)
	if got := a.s.entryOf(Title{ID: id, Description: long.Description}).Description; len(got) > maxEntryDescription || !strings.HasPrefix(long.Description, got) {
		t.Errorf("a long description is cut to %d bytes, want at most %d at a character boundary", len(got), maxEntryDescription)
	}

	if err := b.s.MergeRemoteTitle(e); err != nil {
		t.Fatal(err)
	}
	var list struct{ Titles []TitleJSON }
	_, body := b.get(t, "/api/v1/vod/titles")
	json.Unmarshal([]byte(body), &list)
	if len(list.Titles) != 1 || list.Titles[0].ID != id || list.Titles[0].Origin != "a" || list.Titles[0].State != StateReady {
		t.Fatalf("b lists %s, want the title of origin a, ready", body)
	}
	if _, body := b.get(t, "/api/v1/vod/titles?q=trip"); !strings.Contains(body, id) {
		t.Errorf("b's search for \"trip\" does not find the remote title: %s", body)
	}
	if _, body := a.get(t, "/api/v1/vod/titles/"+id); !strings.Contains(body, `"origin":"a"`) {
		t.Errorf("a shows its own title as %s, want origin a", body)
	}
	for _, p := range []string{"/vod/" + id + "/index.m3u8", "/vod/" + id + "/source.m3u8"} {
		ca, pa := a.get(t, p)
		cb, pb := b.get(t, p)
		if ca != http.StatusOK || cb != http.StatusOK || pa != pb || !strings.Contains(pb, "#EXTM3U") {
			t.Errorf("%s: a %d, b %d; same body %v\n%s", p, ca, cb, pa == pb, pb)
		}
	}
	// Merging it again is a no-op; an entry of a's own title is ignored.
	if err := b.s.MergeRemoteTitle(e); err != nil {
		t.Fatal(err)
	}
	own := e
	own.Origin, own.Title = "x", "Hijacked"
	if err := a.s.MergeRemoteTitle(own); err != nil {
		t.Fatal(err)
	}
	own.Origin = "a"
	if err := a.s.MergeRemoteTitle(own); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.s.Get(id); got.Origin != "" || got.Title != "Big Trip" {
		t.Errorf("a's own title became %+v after entries naming it", got)
	}
}

// TestARemoteManifestThatFailsVerificationIsNotPlayable: bytes that do not
// hash to the entry's manifest digest, or that hash right but are not a
// manifest, leave the title listed, processing, and its playlists 409.
func TestARemoteManifestThatFailsVerificationIsNotPlayable(t *testing.T) {
	var a *clusterNode
	a = newClusterNode(t, "a", t.TempDir(), nil)
	var serve func(d Digest) []byte
	b := newClusterNode(t, "b", t.TempDir(), func(_ context.Context, d Digest, _ string) ([]byte, error) { return serve(d), nil })
	id, e, _ := readyLocalTitle(t, a, "Tampered")

	serve = func(d Digest) []byte {
		b, _ := fetchFrom(&a)(context.Background(), d, "a")
		return bytes.Replace(b, []byte(`"source"`), []byte(`"evil!!"`), 1)
	}
	err := b.s.MergeRemoteTitle(e)
	if !errors.Is(err, ErrManifestUnverified) || !strings.Contains(err.Error(), "hash to") {
		t.Fatalf("merge with a tampered manifest: %v, want ErrManifestUnverified (digest mismatch)", err)
	}
	got, err := b.s.Get(id)
	if err != nil || got.State != StateProcessing || got.Manifest != nil || got.Origin != "a" {
		t.Fatalf("b holds %+v (%v), want it listed, processing, without manifest", got, err)
	}
	if code, _ := b.get(t, "/vod/"+id+"/index.m3u8"); code != http.StatusConflict {
		t.Errorf("playlist of the unverified title: %d, want 409", code)
	}

	// Bytes that hash right but are not a manifest.
	junk := []byte("not a manifest")
	e2 := e
	e2.ID, e2.ManifestDigest = "junkmanifest", digestOf(string(junk)).String()
	serve = func(Digest) []byte { return junk }
	if err := b.s.MergeRemoteTitle(e2); !errors.Is(err, ErrManifestUnverified) {
		t.Fatalf("merge with an unparsable manifest: %v, want ErrManifestUnverified", err)
	}
	if got, _ := b.s.Get("junkmanifest"); got.State != StateProcessing || got.Manifest != nil {
		t.Errorf("title with an unparsable manifest: %+v, want processing without manifest", got)
	}

	// The right bytes, once the retry time is past, make it playable.
	serve = func(d Digest) []byte { b, _ := fetchFrom(&a)(context.Background(), d, "a"); return b }
	b.s.cl.mu.Lock()
	delete(b.s.cl.failed, id)
	b.s.cl.mu.Unlock()
	if err := b.s.MergeRemoteTitle(e); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.get(t, "/vod/"+id+"/source.m3u8"); code != http.StatusOK {
		t.Errorf("playlist once verified: %d, want 200", code)
	}
}

// TestARemovedTitleNeverComesBack: b removes a's title (OnTitleRemoved is
// told); a merged copy of it, even after b restarts, is ignored; a, the
// origin, takes the removal in and drops the title and its chunks, the
// manifest chunk included, and ignores the title's entry from then on.
func TestARemovedTitleNeverComesBack(t *testing.T) {
	var a *clusterNode
	a = newClusterNode(t, "a", t.TempDir(), nil)
	bdir := t.TempDir()
	b := newClusterNode(t, "b", bdir, fetchFrom(&a))
	id, e, ds := readyLocalTitle(t, a, "Gone")
	if err := b.s.MergeRemoteTitle(e); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.get(t, "/vod/"+id+"/index.m3u8"); code != http.StatusOK {
		t.Fatalf("remote title not playable on b: %d", code)
	}
	req, _ := http.NewRequest(http.MethodDelete, b.srv.URL+"/api/v1/vod/titles/"+id, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on b: %v %v", resp, err)
	}
	b.mu.Lock()
	removed := strings.Join(b.removed, " ")
	b.mu.Unlock()
	if removed != id {
		t.Errorf("b's OnTitleRemoved was told %q, want %q", removed, id)
	}
	later := e
	later.Views, later.Progress = 99, 100
	for _, x := range []TitleEntry{e, later} {
		if err := b.s.MergeRemoteTitle(x); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.s.Get(id); !errors.Is(err, ErrTitleNotFound) {
		t.Fatalf("a removed title came back on b: %v", err)
	}
	b.close()
	b = newClusterNode(t, "b", bdir, fetchFrom(&a))
	if err := b.s.MergeRemoteTitle(later); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.get(t, "/api/v1/vod/titles/"+id); code != http.StatusNotFound {
		t.Fatalf("after a restart, b answers %d for the removed title, want 404", code)
	}

	// At the origin.
	e, _ = a.entry(id)
	ds = append(ds, mustDigest(e.ManifestDigest))
	if err := a.s.MergeRemoval(id); err != nil {
		t.Fatal(err)
	}
	if _, err := a.s.Get(id); !errors.Is(err, ErrTitleNotFound) {
		t.Fatalf("the origin still has the removed title: %v", err)
	}
	for _, d := range ds {
		if a.s.Store().Has(d) {
			t.Errorf("chunk %s of the removed title is still in the origin's store", d)
		}
	}
	if err := a.s.MergeRemoteTitle(TitleEntry{ID: id, Origin: "c", Title: "Gone", State: StateProcessing}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.s.Get(id); !errors.Is(err, ErrTitleNotFound) {
		t.Errorf("a removed id came back at the origin through another node's entry: %v", err)
	}
}

// TestATitleReadyBeforeTheClusterSchemaIsAnnouncedAtStart: a catalog at
// schema 1 with a ready title is migrated; at Start the title is local
// (no origin), its manifest is stored as a chunk and the ready entry
// announced with that chunk's digest; deleting it drops the chunk too.
func TestATitleReadyBeforeTheClusterSchemaIsAnnouncedAtStart(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", catalogDSN(filepath.Join(dir, "catalog.db")))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := migrate(context.Background(), db, catalogMigrations[:1]); err != nil {
		t.Fatal(err)
	}
	m := testManifest("old", "")
	js, _ := json.Marshal(m)
	if _, err := db.Exec(`INSERT INTO titles (id, title, state, progress, created, duration_ns, bytes, manifest)
		VALUES ('oldtitle', 'Old Title', 'ready', 100, ?, ?, ?, ?)`, time.Now().UnixNano(), int64(m.Duration), m.Bytes(), string(js)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	c := newClusterNode(t, "a", dir, nil)
	got, err := c.s.Get("oldtitle")
	if err != nil || got.Origin != "" || got.State != StateReady {
		t.Fatalf("migrated title: %+v, %v; want a ready local title", got, err)
	}
	var e TitleEntry
	testutil.Eventually(t, 5*time.Second, "the old title is announced with a manifest chunk", func() bool {
		var ok bool
		e, ok = c.entry("oldtitle")
		return ok && e.ManifestDigest != ""
	})
	d := mustDigest(e.ManifestDigest)
	rc, _, err := c.s.Store().Open(d)
	if err != nil {
		t.Fatalf("the manifest chunk is not in the store: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	var back Manifest
	if err := json.Unmarshal(b, &back); err != nil || len(back.Renditions) != 2 || back.Renditions[1].Segments[2].Digest != m.Renditions[1].Segments[2].Digest {
		t.Fatalf("the manifest chunk holds %d bytes that are not the manifest (%v)", len(b), err)
	}
	if err := c.s.Delete("oldtitle"); err != nil {
		t.Fatal(err)
	}
	if c.s.Store().Has(d) {
		t.Error("the manifest chunk outlived its title")
	}
}

// TestLocalTitlesAreAnnouncedAtEachStepAndAgainAtStart: a title is
// announced when created, every 10 points of progress (not every
// percent), when it fails, and again when its service starts anew.
func TestLocalTitlesAreAnnouncedAtEachStepAndAgainAtStart(t *testing.T) {
	dir := t.TempDir()
	c := newClusterNode(t, "a", dir, nil)
	if err := c.s.cat.Create(Title{ID: "steps", Title: "Steps"}); err != nil {
		t.Fatal(err)
	}
	for p := 1; p <= 100; p++ {
		if err := c.s.cat.SetProgress("steps", p); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let the announcer keep up, as with a real job
	}
	testutil.Eventually(t, 5*time.Second, "progress 100 is announced", func() bool {
		e, _ := c.entry("steps")
		return e.Progress == 100
	})
	if err := c.s.cat.SetFailed("steps", "broken"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the failure is announced", func() bool {
		e, _ := c.entry("steps")
		return e.State == StateFailed && e.Error == "broken" && e.Origin == "a"
	})
	c.mu.Lock()
	n, last := len(c.told), -10
	for _, e := range c.told {
		if e.State == StateProcessing && e.Progress-last < 10 && e.Progress != 0 && e.Progress != 100 {
			t.Errorf("progress %d announced %d points after %d", e.Progress, e.Progress-last, last)
		}
		last = e.Progress
	}
	c.mu.Unlock()
	if n > 13 {
		t.Errorf("%d announcements for one title's 100 progress steps and failure, want at most 13", n)
	}

	c.close()
	c = newClusterNode(t, "a", dir, nil)
	testutil.Eventually(t, 5*time.Second, "the restarted service announces its title again", func() bool {
		e, ok := c.entry("steps")
		return ok && e.State == StateFailed
	})
}
