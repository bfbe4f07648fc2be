package vod

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTestCatalog(t *testing.T, path string) *Catalog {
	t.Helper()
	c, err := OpenCatalog(path, quietLog)
	if err != nil {
		t.Fatalf("OpenCatalog(%s): %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// quietLog keeps the 1 MB hostile titles out of the test output.
var quietLog = slog.New(slog.DiscardHandler)

func digestOf(s string) Digest { return Digest(sha256.Sum256([]byte(s))) }

// testManifest is a two-rendition manifest whose chunk digests are made
// from prefix, plus shared (when not "") as the first segment of both
// renditions.
func testManifest(prefix, shared string) *Manifest {
	m := &Manifest{TargetDuration: 4 * time.Second, Duration: 10 * time.Second}
	for i, name := range []string{"source", "360p"} {
		r := Rendition{
			Name: name, Width: 1920 / (i + 1), Height: 1080 / (i + 1),
			Kbps: 5000 / (i + 1), PeakKbps: 6000 / (i + 1),
			Codecs: "avc1.64001f,mp4a.40.2",
			Init:   Chunk{Digest: digestOf(prefix + name + "init"), Size: 700},
		}
		for s := 0; s < 3; s++ {
			d := digestOf(fmt.Sprintf("%s%s%d", prefix, name, s))
			if s == 0 && shared != "" {
				d = digestOf(shared)
			}
			r.Segments = append(r.Segments, Chunk{
				Digest: d, Size: int64(1000 * (s + 1)),
				Start: time.Duration(s) * 4 * time.Second, Duration: 4 * time.Second,
			})
		}
		r.Segments[2].Duration = 2 * time.Second
		m.Renditions = append(m.Renditions, r)
	}
	return m
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func titleIDs(ts []Title) []string {
	ids := []string{}
	for _, t := range ts {
		ids = append(ids, t.ID)
	}
	return ids
}

func TestCatalogMigratesFreshAndSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "catalog.db") // folder created too
	c, err := OpenCatalog(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := userVersion(t, c.db); v != len(catalogMigrations) {
		t.Fatalf("fresh catalog at schema %d, want %d", v, len(catalogMigrations))
	}
	var mode string
	if err := c.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	var busy int
	if err := c.db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy <= 0 {
		t.Fatalf("busy_timeout = %d, %v; want > 0", busy, err)
	}
	created := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	if err := c.Create(Title{ID: "a1", Title: "Big Trip", Description: "mountains", Created: created}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReady("a1", testManifest("a", ""), digestOf("poster")); err != nil {
		t.Fatal(err)
	}
	if err := c.AddView("a1"); err != nil {
		t.Fatal(err)
	}
	want, err := c.Get("a1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := openTestCatalog(t, path)
	if v := userVersion(t, c2.db); v != len(catalogMigrations) {
		t.Fatalf("reopened catalog at schema %d, want %d", v, len(catalogMigrations))
	}
	got, err := c2.Get("a1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	if !got.Created.Equal(created) {
		t.Fatalf("created %v, want %v (nanoseconds kept)", got.Created, created)
	}
	if ts, err := c2.List("trip"); err != nil || !reflect.DeepEqual(titleIDs(ts), []string{"a1"}) {
		t.Fatalf("search after reopen: %v, %v", titleIDs(ts), err)
	}
}

func TestCatalogRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	c := openTestCatalog(t, path)
	future := len(catalogMigrations) + 5
	if _, err := c.db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, future)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	_, err := OpenCatalog(path, nil)
	if !errors.Is(err, ErrCatalogTooNew) {
		t.Fatalf("OpenCatalog of a newer schema: %v, want ErrCatalogTooNew", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(future)) {
		t.Errorf("error %q does not name the database's version %d", err, future)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v := userVersion(t, db); v != future {
		t.Fatalf("refused database changed to version %d, want it left at %d", v, future)
	}
}

func TestMigrateFailureRollsBackThatStep(t *testing.T) {
	db, err := sql.Open("sqlite", catalogDSN(filepath.Join(t.TempDir(), "m.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ms := []string{
		`CREATE TABLE one (x INTEGER);`,
		`CREATE TABLE two (x INTEGER); INSERT INTO one VALUES (1); THIS IS NOT SQL;`,
	}
	from, to, err := migrate(context.Background(), db, ms)
	if err == nil {
		t.Fatal("migrate with a broken step succeeded")
	}
	if from != 0 || to != 1 || userVersion(t, db) != 1 {
		t.Fatalf("from %d to %d, user_version %d; want 0, 1, 1", from, to, userVersion(t, db))
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'two'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("table of the failed step: count %d, %v; want it rolled back", n, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM one`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows of the failed step: %d, %v; want none", n, err)
	}
	// Fixed, the next start carries on from version 1.
	ms[1] = `CREATE TABLE two (x INTEGER);`
	if from, to, err = migrate(context.Background(), db, ms); err != nil || from != 1 || to != 2 {
		t.Fatalf("second migrate: %d to %d, %v; want 1 to 2", from, to, err)
	}
}

func TestCatalogLifecycle(t *testing.T) {
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	if err := c.Create(Title{ID: "trip", Title: "Big Trip", Description: "A road movie across the Alps", Created: t0,
		State: StateReady, Progress: 77, Views: 9}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(Title{ID: "cat", Title: "Cat Video", Description: "a cat sleeps", Created: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(Title{ID: "trip", Title: "again"}); !errors.Is(err, ErrTitleExists) {
		t.Fatalf("duplicate Create: %v, want ErrTitleExists", err)
	}
	if err := c.Create(Title{Title: "no id"}); err == nil {
		t.Fatal("Create with an empty id succeeded")
	}

	got, err := c.Get("trip")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateProcessing || got.Progress != 0 || got.Views != 0 || got.Manifest != nil || got.Title != "Big Trip" {
		t.Fatalf("new title: %+v; want processing, 0 %%, 0 views, no manifest (caller's state ignored)", got)
	}

	if err := c.SetProgress("trip", 40); err != nil {
		t.Fatal(err)
	}
	if got, _ = c.Get("trip"); got.Progress != 40 || got.State != StateProcessing {
		t.Fatalf("after SetProgress 40: %d %s", got.Progress, got.State)
	}
	if err := c.SetProgress("trip", 250); err != nil {
		t.Fatal(err)
	}
	if got, _ = c.Get("trip"); got.Progress != 100 {
		t.Fatalf("progress 250 stored as %d, want clamped to 100", got.Progress)
	}

	m := testManifest("trip", "")
	poster := digestOf("trip poster")
	if err := c.SetReady("trip", m, poster); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReady("trip", nil, poster); err == nil {
		t.Fatal("SetReady with a nil manifest succeeded")
	}
	got, err = c.Get("trip")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateReady || got.Progress != 100 || got.Duration != m.Duration || got.Bytes != m.Bytes() || got.Poster != poster {
		t.Fatalf("ready title: %+v", got)
	}
	if got.Bytes != 2*(700+1000+2000+3000) {
		t.Fatalf("bytes %d, want %d", got.Bytes, 2*(700+1000+2000+3000))
	}
	if !reflect.DeepEqual(got.Manifest, m) {
		t.Fatalf("manifest round trip:\n got %+v\nwant %+v", got.Manifest, m)
	}
	if err := c.SetProgress("trip", 10); !errors.Is(err, ErrNotProcessing) {
		t.Fatalf("SetProgress on a ready title: %v, want ErrNotProcessing", err)
	}
	if got, _ = c.Get("trip"); got.Progress != 100 || got.State != StateReady {
		t.Fatalf("a late progress report changed a ready title: %d %s", got.Progress, got.State)
	}

	// List: newest first, no manifests.
	all, err := c.List("")
	if err != nil {
		t.Fatal(err)
	}
	if ids := titleIDs(all); !reflect.DeepEqual(ids, []string{"cat", "trip"}) {
		t.Fatalf("List(\"\") = %v, want newest first [cat trip]", ids)
	}
	for _, ti := range all {
		if ti.Manifest != nil {
			t.Fatalf("List loaded the manifest of %q", ti.ID)
		}
	}
	if all[1].State != StateReady || all[1].Duration != m.Duration || all[1].Poster != poster {
		t.Fatalf("List's ready title lacks its fields: %+v", all[1])
	}

	// Search.
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"trip", []string{"trip"}},
		{"tri", []string{"trip"}},
		{"TRIP", []string{"trip"}},
		{"big trip", []string{"trip"}},
		{"alps", []string{"trip"}},     // description word
		{"road alp", []string{"trip"}}, // description prefix, two words
		{"Álps", []string{"trip"}},     // diacritics folded
		{"cat", []string{"cat"}},
		{"sleeps cat", []string{"cat"}},
		{"a", []string{"cat", "trip"}},  // "A road", "a cat"
		{"submarine", []string{}},       // no hit
		{"trip cat", []string{}},        // words are ANDed
		{"  ", []string{"cat", "trip"}}, // blank is everything
	} {
		ts, err := c.List(tc.q)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.q, err)
		}
		ids := titleIDs(ts)
		if tc.q == "a" { // both hit; order is by rank
			ids = sortedCopy(ids)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.q, ids, tc.want)
		}
		for _, ti := range ts {
			if ti.Manifest != nil {
				t.Errorf("search %q loaded a manifest", tc.q)
			}
		}
	}

	// Views.
	for i := 0; i < 3; i++ {
		if err := c.AddView("trip"); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ = c.Get("trip"); got.Views != 3 {
		t.Fatalf("views %d, want 3", got.Views)
	}

	// Delete returns what it deleted, with the manifest.
	del, err := c.Delete("trip")
	if err != nil {
		t.Fatal(err)
	}
	if del.ID != "trip" || del.Views != 3 || !reflect.DeepEqual(del.Manifest, m) || del.Poster != poster {
		t.Fatalf("Delete returned %+v", del)
	}
	if _, err := c.Get("trip"); !errors.Is(err, ErrTitleNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrTitleNotFound", err)
	}
	if _, err := c.Delete("trip"); !errors.Is(err, ErrTitleNotFound) {
		t.Fatalf("second Delete: %v, want ErrTitleNotFound", err)
	}
	if ts, err := c.List("trip"); err != nil || len(ts) != 0 {
		t.Fatalf("search finds a deleted title: %v, %v", titleIDs(ts), err)
	}
	if ts, err := c.List(""); err != nil || !reflect.DeepEqual(titleIDs(ts), []string{"cat"}) {
		t.Fatalf("List after delete: %v, %v", titleIDs(ts), err)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func TestCatalogMissingTitle(t *testing.T) {
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
	for name, err := range map[string]error{
		"SetProgress": c.SetProgress("nope", 5),
		"SetReady":    c.SetReady("nope", testManifest("x", ""), Digest{}),
		"SetFailed":   c.SetFailed("nope", "x"),
		"AddView":     c.AddView("nope"),
	} {
		if !errors.Is(err, ErrTitleNotFound) {
			t.Errorf("%s of a missing title: %v, want ErrTitleNotFound", name, err)
		}
	}
	if _, err := c.Get("nope"); !errors.Is(err, ErrTitleNotFound) {
		t.Errorf("Get: %v", err)
	}
	if _, err := c.Delete("nope"); !errors.Is(err, ErrTitleNotFound) {
		t.Errorf("Delete: %v", err)
	}
	if refs, err := c.Referenced(); err != nil || len(refs) != 0 {
		t.Errorf("a failed SetReady left references: %v, %v", refs, err)
	}
}

func TestCatalogFailedAndUnfinishedAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := OpenCatalog(path, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"p1", "ready", "failed", "p2"} {
		if err := c.Create(Title{ID: id, Title: id, Created: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetProgress("p1", 60); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReady("ready", testManifest("r", ""), Digest{}); err != nil {
		t.Fatal(err)
	}
	const reason = "packaging: write chunk: no space left on device"
	if err := c.SetFailed("failed", reason); err != nil {
		t.Fatal(err)
	}
	c.Close() // as after a crash: p1 and p2 were being packaged

	c = openTestCatalog(t, path)
	un, err := c.Unfinished()
	if err != nil {
		t.Fatal(err)
	}
	if ids := titleIDs(un); !reflect.DeepEqual(ids, []string{"p1", "p2"}) {
		t.Fatalf("Unfinished = %v, want [p1 p2] oldest first", ids)
	}
	if un[0].Progress != 60 || un[0].State != StateProcessing {
		t.Fatalf("unfinished title %+v", un[0])
	}
	f, err := c.Get("failed")
	if err != nil {
		t.Fatal(err)
	}
	if f.State != StateFailed || f.Error != reason || f.Manifest != nil {
		t.Fatalf("failed title after reopen: %+v", f)
	}
	if err := c.SetProgress("failed", 50); !errors.Is(err, ErrNotProcessing) {
		t.Fatalf("SetProgress on a failed title: %v, want ErrNotProcessing", err)
	}

	// The service fails what it cannot re-package: Unfinished empties.
	for _, id := range []string{"p1", "p2"} {
		if err := c.SetFailed(id, "interrupted by a restart"); err != nil {
			t.Fatal(err)
		}
	}
	if un, err := c.Unfinished(); err != nil || len(un) != 0 {
		t.Fatalf("Unfinished after failing them: %v, %v", titleIDs(un), err)
	}

	// A ready title that fails (a damaged chunk) keeps its manifest, so a
	// delete still knows its chunks.
	if err := c.SetFailed("ready", "damaged: chunk digest mismatch"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Get("ready")
	if err != nil || r.State != StateFailed || r.Manifest == nil || r.Error != "damaged: chunk digest mismatch" {
		t.Fatalf("damaged title: %+v, %v", r, err)
	}
}

func TestCatalogReferencedSharedChunks(t *testing.T) {
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
	ma, mb := testManifest("a", "shared"), testManifest("b", "shared")
	pa := digestOf("poster a")
	for _, id := range []string{"a", "b", "c"} {
		if err := c.Create(Title{ID: id, Title: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetReady("a", ma, pa); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReady("b", mb, Digest{}); err != nil {
		t.Fatal(err)
	}
	refs, err := c.Referenced()
	if err != nil {
		t.Fatal(err)
	}
	shared := digestOf("shared")
	// Per manifest: 2 inits + 2 own segments each + the shared one.
	if len(refs) != 2*(2+2*2)+1+1 {
		t.Fatalf("%d referenced chunks, want %d", len(refs), 2*(2+2*2)+1+1)
	}
	if refs[shared] != 2 || refs[pa] != 1 || refs[ma.Renditions[0].Init.Digest] != 1 {
		t.Fatalf("shared %d, poster %d, init %d; want 2, 1, 1", refs[shared], refs[pa], refs[ma.Renditions[0].Init.Digest])
	}

	del, err := c.Delete("a")
	if err != nil {
		t.Fatal(err)
	}
	refs, err = c.Referenced()
	if err != nil {
		t.Fatal(err)
	}
	// What the caller drops: the deleted manifest's chunks nobody references.
	var drop []Digest
	for _, d := range manifestDigests(del.Manifest, del.Poster) {
		if refs[d] == 0 {
			drop = append(drop, d)
		}
	}
	if len(drop) != 2+2*2+1 { // a's inits, own segments and poster; not the shared one
		t.Fatalf("would drop %d chunks, want %d", len(drop), 2+2*2+1)
	}
	if refs[shared] != 1 {
		t.Fatalf("shared chunk referenced %d times after deleting a, want 1 (b still uses it)", refs[shared])
	}
	if _, err := c.Delete("b"); err != nil {
		t.Fatal(err)
	}
	if refs, err = c.Referenced(); err != nil || len(refs) != 0 {
		t.Fatalf("references left with no ready title: %d, %v", len(refs), err)
	}
}

func TestCatalogConcurrentViews(t *testing.T) {
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
	for _, id := range []string{"hot", "cold"} {
		if err := c.Create(Title{ID: id, Title: id}); err != nil {
			t.Fatal(err)
		}
	}
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := c.AddView("hot"); err != nil {
					errs <- err
				}
			}
		}()
		go func() { // readers alongside the writers
			defer wg.Done()
			for i := 0; i < each/5; i++ {
				if _, err := c.List(""); err != nil {
					errs <- err
				}
				if _, err := c.Get("hot"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hot, err := c.Get("hot")
	if err != nil {
		t.Fatal(err)
	}
	if hot.Views != workers*each {
		t.Fatalf("views %d, want exactly %d", hot.Views, workers*each)
	}
	if cold, _ := c.Get("cold"); cold.Views != 0 {
		t.Fatalf("cold views %d, want 0", cold.Views)
	}
}

// hostileStrings are titles and descriptions a user might send.
func hostileStrings() []string {
	return []string{
		`Robert'); DROP TABLE titles;--`,
		`"quoted" 'single' ` + "`back`",
		`NEAR(trip cat) AND OR NOT * ^ : - + {title}: "`,
		"ctrl\x00nul\x01\x07\x1b[31mred\r\n\ttab\x7f",
		"bad utf8 \xff\xfe\xc3\x28 end",
		"emoji 🎬 and Ünïcödé and 日本語",
		strings.Repeat("long title word ", 1<<16), // 1 MB
	}
}

func TestCatalogHostileTitleRoundTrip(t *testing.T) {
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
	hs := hostileStrings()
	for i, h := range hs {
		id := fmt.Sprintf("h%d-%s", i, h[:min(len(h), 40)]) // hostile ids too
		if err := c.Create(Title{ID: id, Title: h, Description: h}); err != nil {
			t.Fatalf("Create %d: %v", i, err)
		}
		if err := c.SetFailed(id, h); err != nil {
			t.Fatalf("SetFailed %d: %v", i, err)
		}
		got, err := c.Get(id)
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if got.ID != id || got.Title != h || got.Description != h || got.Error != h {
			t.Fatalf("hostile string %d not returned byte for byte (len %d, got title len %d)", i, len(h), len(got.Title))
		}
	}
	all, err := c.List("")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(hs) {
		t.Fatalf("List has %d titles, want %d (a title broke the table?)", len(all), len(hs))
	}
	byTitle := map[string]bool{}
	for _, ti := range all {
		byTitle[ti.Title] = true
	}
	for i, h := range hs {
		if !byTitle[h] {
			t.Errorf("List lost or altered hostile title %d", i)
		}
	}
	// Searchable by their words.
	for q, want := range map[string]int{"robert drop": 1, "日本語": 1, "ünïcödé": 1, "ctrl": 1, "long title": 1, "near trip": 1} {
		ts, err := c.List(q)
		if err != nil || len(ts) != want {
			t.Errorf("List(%q): %d hits, %v; want %d", q, len(ts), err, want)
		}
	}
}

func TestCatalogHostileSearchIsSafe(t *testing.T) {
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
	if err := c.Create(Title{ID: "trip", Title: "Big Trip", Description: "the Alps"}); err != nil {
		t.Fatal(err)
	}
	queries := append(hostileStrings(),
		`"`, `""`, `"""`, `NEAR(`, `NEAR(big trip, 2)`, `big OR`, `AND`, `NOT trip`, `trip*`, `*`, `^big`,
		`title:trip`, `{title description}: trip`, `(trip`, `trip)`, `-trip`, `+`, `'`, `\`, `%`, `_`,
		"\x00", "\xff", strings.Repeat(`"NEAR(`, 200000), strings.Repeat("a ", 500000),
	)
	for _, q := range queries {
		if _, err := c.List(q); err != nil {
			t.Errorf("List(%.40q): %v", q, err)
		}
	}
	// FTS5 syntax around real words is taken as words, not operators.
	for _, q := range []string{`"big`, `trip"`, `(big`, `big)`, `^big`, `trip*`, `(trip)`, `-alps`, `big:`} {
		ts, err := c.List(q)
		if err != nil || !reflect.DeepEqual(titleIDs(ts), []string{"trip"}) {
			t.Errorf("List(%q) = %v, %v; want [trip]", q, titleIDs(ts), err)
		}
	}
	for _, q := range []string{`NOT trip`, `big OR submarine`, `NEAR(big trip)`} { // operators are words: ANDed
		if ts, err := c.List(q); err != nil || len(ts) != 0 {
			t.Errorf("List(%q) = %v, %v; want no hit (no FTS5 operators)", q, titleIDs(ts), err)
		}
	}
}

func TestFTSQuery(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		`"`:                      "",
		"  --  ":                 "",
		"trip":                   `"trip"*`,
		`Big "Trip"`:             `"Big"* "Trip"*`,
		`NEAR(a b)`:              `"NEAR"* "a"* "b"*`,
		"a\x00b\xffc":            `"a"* "b"* "c"*`,
		"日本語 Ünï":                `"日本語"* "Ünï"*`,
		strings.Repeat("x", 100): `"` + strings.Repeat("x", maxSearchTermRunes) + `"*`,
	} {
		if got := ftsQuery(in); got != want {
			t.Errorf("ftsQuery(%.30q) = %q, want %q", in, got, want)
		}
	}
	many := ftsQuery(strings.Repeat("w ", 100))
	if n := strings.Count(many, `"*`); n != maxSearchTerms {
		t.Errorf("%d terms kept of 100, want %d", n, maxSearchTerms)
	}
}

// A path with characters that mean something in a URI (the DSN is a file:
// URI) opens that exact file.
func TestCatalogOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird #dir %20 & x=1")
	path := filepath.Join(dir, "cat?alog.db")
	c := openTestCatalog(t, path)
	if err := c.Create(Title{ID: "x", Title: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at its path: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "cat?alog.db") {
			t.Errorf("unexpected file %q beside the catalog", e.Name())
		}
	}
}

// Two handles on one file (two processes, say) write side by side: the
// busy timeout, not an error, settles who writes, and no view is lost.
func TestCatalogTwoHandlesOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	a := openTestCatalog(t, path)
	b := openTestCatalog(t, path)
	if err := a.Create(Title{ID: "t", Title: "shared"}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for _, c := range []*Catalog{a, b} {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if err := c.AddView("t"); err != nil {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := b.Get("t")
	if err != nil {
		t.Fatal(err)
	}
	if got.Views != 2*workers*each {
		t.Fatalf("views %d, want %d", got.Views, 2*workers*each)
	}
}
