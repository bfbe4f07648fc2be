package vod

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// Errors a Catalog returns; test them with errors.Is.
var (
	// ErrTitleNotFound: no title has that id (HTTP 404).
	ErrTitleNotFound = errors.New("vod: title not found")
	// ErrTitleExists: Create with an id already in the catalog.
	ErrTitleExists = errors.New("vod: title already exists")
	// ErrNotProcessing: SetProgress on a title that is ready or failed.
	ErrNotProcessing = errors.New("vod: title is not processing")
	// ErrCatalogTooNew: the database was written by a newer Gradient whose
	// schema this build does not know; it is left untouched.
	ErrCatalogTooNew = errors.New("vod: catalog schema is newer than this build")
)

// catalogMigrations are the schema, one entry per version: entry i takes a
// database from PRAGMA user_version i to i+1, in one transaction. Append
// only; never edit an entry that has shipped.
var catalogMigrations = []string{
	// 1: titles, the chunks each references, and full-text search.
	`
CREATE TABLE titles (
	id          TEXT PRIMARY KEY NOT NULL,
	title       TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL CHECK (state IN ('processing', 'ready', 'failed')),
	progress    INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
	error       TEXT NOT NULL DEFAULT '',
	created     INTEGER NOT NULL,            -- Unix nanoseconds
	duration_ns INTEGER NOT NULL DEFAULT 0,
	bytes       INTEGER NOT NULL DEFAULT 0,
	poster      TEXT NOT NULL DEFAULT '',    -- hex digest, '' for none
	manifest    TEXT,                        -- Manifest JSON, NULL until ready
	views       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX titles_created ON titles (created DESC);
CREATE INDEX titles_state ON titles (state);

-- Every chunk (and poster) a title's manifest names, so that deleting a
-- title drops only the chunks no other title shares.
CREATE TABLE title_chunks (
	title_id TEXT NOT NULL REFERENCES titles (id) ON DELETE CASCADE,
	digest   BLOB NOT NULL,
	PRIMARY KEY (title_id, digest)
) WITHOUT ROWID;
CREATE INDEX title_chunks_digest ON title_chunks (digest);

-- A standalone FTS5 table keyed by the title id (titles has no stable
-- integer rowid for an external-content table), kept in sync by triggers.
CREATE VIRTUAL TABLE titles_fts USING fts5 (
	id UNINDEXED, title, description,
	tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER titles_fts_insert AFTER INSERT ON titles BEGIN
	INSERT INTO titles_fts (id, title, description) VALUES (new.id, new.title, new.description);
END;
CREATE TRIGGER titles_fts_delete AFTER DELETE ON titles BEGIN
	DELETE FROM titles_fts WHERE id = old.id;
END;
CREATE TRIGGER titles_fts_update AFTER UPDATE OF id, title, description ON titles BEGIN
	DELETE FROM titles_fts WHERE id = old.id;
	INSERT INTO titles_fts (id, title, description) VALUES (new.id, new.title, new.description);
END;
`,
	// 2: titles of the other nodes of the cluster (cluster.go): where a
	// title was packaged ('' for here), the digest of its manifest chunk,
	// and the ids removed anywhere, so that a removed title never comes
	// back from a late copy of its catalog entry.
	`
ALTER TABLE titles ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE titles ADD COLUMN manifest_digest TEXT NOT NULL DEFAULT '';
CREATE TABLE removed_titles (
	id      TEXT PRIMARY KEY NOT NULL,
	removed INTEGER NOT NULL             -- Unix nanoseconds
) WITHOUT ROWID;
`,
}

// Search limits: a query's first maxSearchTerms words are used, each cut to
// maxSearchTermRunes, so a 1 MB search string is a small FTS query.
const (
	maxSearchTerms     = 16
	maxSearchTermRunes = 64
)

// titleColumns are what List and Unfinished read; Get and Delete add the
// manifest.
const titleColumns = `id, title, description, state, progress, error, created, duration_ns, bytes, poster, views, origin, manifest_digest`

// Catalog is the titles packaged on this node, in SQLite (WAL) through the
// pure-Go modernc.org/sqlite driver. It is safe for concurrent use: reads
// go through the connection pool side by side, writes are serialised in
// the process (SQLite has one writer) and wait on the busy timeout for any
// other process.
type Catalog struct {
	db   *sql.DB
	path string
	log  *slog.Logger
	// wmu serialises this process's writes so they never meet SQLITE_BUSY
	// from each other.
	wmu sync.Mutex
	// changed, when set (by the Service, before any write), is told the id
	// of every title created, advanced, made ready or failed, or deleted
	// by Delete. It is called with wmu held, so it must not block or
	// write.
	changed func(id string)
}

func (c *Catalog) notify(id string) {
	if c.changed != nil {
		c.changed(id)
	}
}

// OpenCatalog opens the catalog database at path, creating it (and its
// folder) if needed, and brings its schema up to date. A database written
// by a newer build is refused with ErrCatalogTooNew.
func OpenCatalog(path string, log *slog.Logger) (*Catalog, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "vod-catalog")
	if path == "" {
		return nil, errors.New("vod catalog: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("vod catalog %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("vod catalog %s: %w", abs, err)
	}
	db, err := sql.Open("sqlite", catalogDSN(abs))
	if err != nil {
		return nil, fmt.Errorf("vod catalog %s: %w", abs, err)
	}
	// WAL lets readers run beside the single writer; a few connections are
	// plenty for a catalog and keep file handles bounded.
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)

	c := &Catalog{db: db, path: abs, log: log}
	ctx := context.Background()
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("vod catalog %s: open: %w", abs, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("vod catalog %s: journal mode is %q, want wal", abs, mode)
	}
	from, to, err := migrate(ctx, db, catalogMigrations)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("vod catalog %s: %w", abs, err)
	}
	if from != to {
		log.Info("catalog schema migrated", "path", abs, "from", from, "to", to)
	}
	log.Debug("catalog open", "path", abs, "schema", to)
	return c, nil
}

// catalogDSN is a file: URI (so any character in the path is escaped, not
// taken for a query) with the connection settings every pooled connection
// gets: WAL, a busy timeout, full fsync on commit (a title is in the
// catalog only once it is durable), foreign keys, and BEGIN IMMEDIATE so a
// write transaction never has to upgrade a read lock.
func catalogDSN(abs string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// migrate applies migrations[v:] to a database at user_version v, each in
// its own transaction together with the new user_version, and returns the
// versions before and after.
func migrate(ctx context.Context, db *sql.DB, migrations []string) (from, to int, err error) {
	from = -1
	for {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return from, to, fmt.Errorf("migrate: begin: %w", err)
		}
		var v int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
			tx.Rollback()
			return from, to, fmt.Errorf("migrate: read schema version: %w", err)
		}
		if from < 0 {
			from = v
		}
		to = v
		if v > len(migrations) {
			tx.Rollback()
			return from, to, fmt.Errorf("%w: database is at schema version %d, this build knows up to %d (written by a newer Gradient?)",
				ErrCatalogTooNew, v, len(migrations))
		}
		if v == len(migrations) {
			tx.Rollback()
			return from, to, nil
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return from, to, fmt.Errorf("migrate: schema version %d to %d: %w", v, v+1, err)
		}
		// PRAGMA takes no bound parameters; v+1 is our own integer.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
			tx.Rollback()
			return from, to, fmt.Errorf("migrate: set schema version %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return from, to, fmt.Errorf("migrate: schema version %d to %d: commit: %w", v, v+1, err)
		}
		to = v + 1
	}
}

// Close closes the database.
func (c *Catalog) Close() error {
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("vod catalog %s: close: %w", c.path, err)
	}
	return nil
}

// Create adds a title in state processing with progress 0. Only ID (not
// empty), Title, Description and Created (now when zero) are taken from t.
// An id already in the catalog is ErrTitleExists.
func (c *Catalog) Create(t Title) error {
	if t.ID == "" {
		return errors.New("vod catalog: create: empty title id")
	}
	created := t.Created
	if created.IsZero() {
		created = time.Now()
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res, err := c.db.Exec(`INSERT INTO titles (id, title, description, state, progress, created)
		VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (id) DO NOTHING`,
		t.ID, t.Title, t.Description, string(StateProcessing), created.UnixNano())
	if err != nil {
		return fmt.Errorf("vod catalog: create %q: %w", t.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: create %q: %w", t.ID, err)
	} else if n == 0 {
		return fmt.Errorf("vod catalog: create %q: %w", t.ID, ErrTitleExists)
	}
	c.log.Info("title created", "id", logText(t.ID))
	c.notify(t.ID)
	return nil
}

// SetProgress records the packaging progress of a processing title, in
// percent (clamped to 0..100). A title that is no longer processing is
// ErrNotProcessing, so a late progress report never undoes ready or
// failed.
func (c *Catalog) SetProgress(id string, pct int) error {
	pct = max(0, min(100, pct))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res, err := c.db.Exec(`UPDATE titles SET progress = ? WHERE id = ? AND state = ?`,
		pct, id, string(StateProcessing))
	if err != nil {
		return fmt.Errorf("vod catalog: progress of %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("vod catalog: progress of %q: %w", id, err)
	}
	if n == 1 {
		c.notify(id)
		return nil
	}
	var state string
	switch err := c.db.QueryRow(`SELECT state FROM titles WHERE id = ?`, id).Scan(&state); {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("vod catalog: progress of %q: %w", id, ErrTitleNotFound)
	case err != nil:
		return fmt.Errorf("vod catalog: progress of %q: %w", id, err)
	}
	return fmt.Errorf("vod catalog: progress of %q: title is %s: %w", id, state, ErrNotProcessing)
}

// Rename changes a local title's name and description.
func (c *Catalog) Rename(id, title, description string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res, err := c.db.Exec(`UPDATE titles SET title = ?, description = ? WHERE id = ? AND origin = ''`, title, description, id)
	if err != nil {
		return fmt.Errorf("vod catalog: rename %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: rename %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("vod catalog: rename %q: %w", id, ErrTitleNotFound)
	}
	c.notify(id)
	return nil
}

// SetReady stores a title's manifest and poster (zero for none) and makes
// it ready: progress 100, duration and bytes from the manifest, and the
// chunks it references recorded, all in one transaction. Call it only once
// every chunk the manifest names is durable in the ChunkStore.
func (c *Catalog) SetReady(id string, m *Manifest, poster Digest) error {
	if m == nil {
		return fmt.Errorf("vod catalog: ready %q: nil manifest", id)
	}
	js, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("vod catalog: ready %q: encode manifest: %w", id, err)
	}
	posterHex := ""
	if poster != (Digest{}) {
		posterHex = poster.String()
	}

	c.wmu.Lock()
	defer c.wmu.Unlock()
	tx, err := c.db.Begin()
	if err != nil {
		return fmt.Errorf("vod catalog: ready %q: %w", id, err)
	}
	defer tx.Rollback() // no-op after Commit
	res, err := tx.Exec(`UPDATE titles SET state = ?, progress = 100, error = '',
		duration_ns = ?, bytes = ?, poster = ?, manifest = ?, manifest_digest = '' WHERE id = ?`,
		string(StateReady), int64(m.Duration), m.Bytes(), posterHex, string(js), id)
	if err != nil {
		return fmt.Errorf("vod catalog: ready %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: ready %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("vod catalog: ready %q: %w", id, ErrTitleNotFound)
	}
	if _, err := tx.Exec(`DELETE FROM title_chunks WHERE title_id = ?`, id); err != nil {
		return fmt.Errorf("vod catalog: ready %q: clear chunk references: %w", id, err)
	}
	ins, err := tx.Prepare(`INSERT OR IGNORE INTO title_chunks (title_id, digest) VALUES (?, ?)`)
	if err != nil {
		return fmt.Errorf("vod catalog: ready %q: %w", id, err)
	}
	defer ins.Close()
	for _, d := range manifestDigests(m, poster) {
		if _, err := ins.Exec(id, d[:]); err != nil {
			return fmt.Errorf("vod catalog: ready %q: chunk reference %s: %w", id, d, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("vod catalog: ready %q: commit: %w", id, err)
	}
	c.log.Info("title ready", "id", logText(id), "duration", m.Duration, "bytes", m.Bytes(), "renditions", len(m.Renditions))
	c.notify(id)
	return nil
}

// manifestDigests is every chunk a title references: each rendition's init
// section and segments, and the poster when there is one.
func manifestDigests(m *Manifest, poster Digest) []Digest {
	var ds []Digest
	for _, r := range m.Renditions {
		ds = append(ds, r.Init.Digest)
		for _, s := range r.Segments {
			ds = append(ds, s.Digest)
		}
	}
	if poster != (Digest{}) {
		ds = append(ds, poster)
	}
	return ds
}

// SetFailed marks a title failed with the reason (what the user is shown).
// A ready title may fail too (a damaged chunk); its manifest is kept so
// that deleting it still finds its chunks.
func (c *Catalog) SetFailed(id, reason string) error {
	if reason == "" {
		reason = "unknown error"
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res, err := c.db.Exec(`UPDATE titles SET state = ?, error = ? WHERE id = ?`,
		string(StateFailed), reason, id)
	if err != nil {
		return fmt.Errorf("vod catalog: fail %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: fail %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("vod catalog: fail %q: %w", id, ErrTitleNotFound)
	}
	c.log.Warn("title failed", "id", logText(id), "reason", logText(reason))
	c.notify(id)
	return nil
}

// Get returns a title, with its Manifest when it has one (ready).
func (c *Catalog) Get(id string) (Title, error) {
	row := c.db.QueryRow(`SELECT `+titleColumns+`, manifest FROM titles WHERE id = ?`, id)
	t, err := scanTitle(row, true)
	if errors.Is(err, sql.ErrNoRows) {
		return Title{}, fmt.Errorf("vod catalog: get %q: %w", id, ErrTitleNotFound)
	}
	if err != nil {
		return Title{}, fmt.Errorf("vod catalog: get %q: %w", id, err)
	}
	return t, nil
}

// List returns the titles without their manifests. With an empty query it
// is every title, newest first. Otherwise it is a full-text search over
// title and description: every word of the query must be the start of a
// word of the title (so "tri" and "trip" find "Big Trip"), best matches
// first. Any text is a safe query: it is split into words that are quoted
// for FTS5, never passed as FTS5 syntax; a query with no words finds
// nothing.
func (c *Catalog) List(query string) ([]Title, error) {
	var rows *sql.Rows
	var err error
	if strings.TrimSpace(query) == "" {
		rows, err = c.db.Query(`SELECT ` + titleColumns + ` FROM titles ORDER BY created DESC, id`)
	} else {
		match := ftsQuery(query)
		if match == "" {
			return []Title{}, nil
		}
		rows, err = c.db.Query(`SELECT `+prefixColumns("t.", titleColumns)+`
			FROM titles_fts f JOIN titles t ON t.id = f.id
			WHERE titles_fts MATCH ? ORDER BY f.rank, t.created DESC, t.id`, match)
	}
	if err != nil {
		return nil, fmt.Errorf("vod catalog: list: %w", err)
	}
	ts, err := scanTitles(rows)
	if err != nil {
		return nil, fmt.Errorf("vod catalog: list: %w", err)
	}
	return ts, nil
}

// Unfinished returns the titles left processing (by a crash or kill), oldest
// first, without manifests, for the service to re-package or fail. Titles
// of other nodes are not among them: their origin packages them.
func (c *Catalog) Unfinished() ([]Title, error) {
	rows, err := c.db.Query(`SELECT `+titleColumns+` FROM titles WHERE state = ? AND origin = '' ORDER BY created, id`,
		string(StateProcessing))
	if err != nil {
		return nil, fmt.Errorf("vod catalog: unfinished: %w", err)
	}
	ts, err := scanTitles(rows)
	if err != nil {
		return nil, fmt.Errorf("vod catalog: unfinished: %w", err)
	}
	return ts, nil
}

// Delete removes a title and returns it as it was, with its manifest, so
// the caller can drop the chunks Referenced no longer lists. A missing id
// (a second delete) is ErrTitleNotFound.
func (c *Catalog) Delete(id string) (Title, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	tx, err := c.db.Begin()
	if err != nil {
		return Title{}, fmt.Errorf("vod catalog: delete %q: %w", id, err)
	}
	defer tx.Rollback()
	t, err := scanTitle(tx.QueryRow(`SELECT `+titleColumns+`, manifest FROM titles WHERE id = ?`, id), true)
	if errors.Is(err, sql.ErrNoRows) {
		return Title{}, fmt.Errorf("vod catalog: delete %q: %w", id, ErrTitleNotFound)
	}
	if err != nil {
		return Title{}, fmt.Errorf("vod catalog: delete %q: %w", id, err)
	}
	// Explicit, not only ON DELETE CASCADE: correct whatever foreign_keys is.
	if _, err := tx.Exec(`DELETE FROM title_chunks WHERE title_id = ?`, id); err != nil {
		return Title{}, fmt.Errorf("vod catalog: delete %q: chunk references: %w", id, err)
	}
	if _, err := tx.Exec(`DELETE FROM titles WHERE id = ?`, id); err != nil {
		return Title{}, fmt.Errorf("vod catalog: delete %q: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return Title{}, fmt.Errorf("vod catalog: delete %q: commit: %w", id, err)
	}
	c.log.Info("title deleted", "id", logText(id))
	c.notify(id)
	return t, nil
}

// AddView counts one view of a title (the popularity figures).
func (c *Catalog) AddView(id string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res, err := c.db.Exec(`UPDATE titles SET views = views + 1 WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("vod catalog: view of %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: view of %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("vod catalog: view of %q: %w", id, ErrTitleNotFound)
	}
	return nil
}

// Referenced returns every chunk the titles in the catalog reference (each
// rendition's init section and segments, and posters) with the number of
// titles that reference it. After Delete, a chunk of the deleted manifest
// that is not in the map is no longer used by any title and may be dropped
// from the ChunkStore; a sweep after a crash drops every stored chunk not
// in it (mind titles still processing, whose chunks are not yet listed).
func (c *Catalog) Referenced() (map[Digest]int, error) {
	rows, err := c.db.Query(`SELECT digest, COUNT(*) FROM title_chunks GROUP BY digest`)
	if err != nil {
		return nil, fmt.Errorf("vod catalog: referenced chunks: %w", err)
	}
	defer rows.Close()
	refs := make(map[Digest]int)
	for rows.Next() {
		var b []byte
		var n int
		if err := rows.Scan(&b, &n); err != nil {
			return nil, fmt.Errorf("vod catalog: referenced chunks: %w", err)
		}
		var d Digest
		if len(b) != len(d) {
			return nil, fmt.Errorf("vod catalog: referenced chunks: digest of %d bytes, want %d", len(b), len(d))
		}
		copy(d[:], b)
		refs[d] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("vod catalog: referenced chunks: %w", err)
	}
	return refs, nil
}

// TitlesWithChunk returns the ids of the titles that reference chunk d.
func (c *Catalog) TitlesWithChunk(d Digest) ([]string, error) {
	rows, err := c.db.Query(`SELECT title_id FROM title_chunks WHERE digest = ? ORDER BY title_id`, d[:])
	if err != nil {
		return nil, fmt.Errorf("vod catalog: titles with chunk %s: %w", d, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("vod catalog: titles with chunk %s: %w", d, err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// ftsQuery turns user text into an FTS5 MATCH expression that is only ever
// a conjunction of quoted prefix terms: the text is split into words
// (letters, digits, marks; everything else, FTS5 operators and quotes
// included, separates words), each word is put in double quotes with any
// quote doubled and given a trailing * for prefix matching. It returns ""
// when the text has no word.
func ftsQuery(s string) string {
	var b strings.Builder
	terms, runes := 0, 0
	inWord := false
	for _, r := range s {
		word := unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r)
		if !word {
			if inWord {
				b.WriteString(`"*`)
				inWord = false
				if terms == maxSearchTerms {
					break
				}
			}
			continue
		}
		if !inWord {
			if terms == maxSearchTerms {
				break
			}
			if terms > 0 {
				b.WriteByte(' ')
			}
			b.WriteByte('"')
			inWord = true
			terms++
			runes = 0
		}
		if runes == maxSearchTermRunes {
			continue
		}
		if r == '"' { // not a word character today; kept safe if that changes
			b.WriteString(`""`)
		} else {
			b.WriteRune(r)
		}
		runes++
	}
	if inWord {
		b.WriteString(`"*`)
	}
	return b.String()
}

// logText cuts user text (ids, reasons) to a length fit for a log line.
func logText(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:max], len(s))
}

// prefixColumns qualifies each column of a comma-separated list.
func prefixColumns(prefix, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = prefix + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

type rowScanner interface {
	Scan(dest ...any) error
}

// scanTitle reads titleColumns (and the manifest when withManifest).
func scanTitle(row rowScanner, withManifest bool) (Title, error) {
	var (
		t                   Title
		state, poster, mdig string
		created, durationNS int64
		manifest            sql.NullString
		dest                = []any{&t.ID, &t.Title, &t.Description, &state, &t.Progress, &t.Error, &created, &durationNS, &t.Bytes, &poster, &t.Views, &t.Origin, &mdig}
	)
	if withManifest {
		dest = append(dest, &manifest)
	}
	if err := row.Scan(dest...); err != nil {
		return Title{}, err
	}
	t.State = State(state)
	t.Created = time.Unix(0, created).UTC()
	t.Duration = time.Duration(durationNS)
	if poster != "" {
		d, err := ParseDigest(poster)
		if err != nil {
			return Title{}, fmt.Errorf("title %q: poster: %w", t.ID, err)
		}
		t.Poster = d
	}
	if mdig != "" {
		d, err := ParseDigest(mdig)
		if err != nil {
			return Title{}, fmt.Errorf("title %q: manifest digest: %w", t.ID, err)
		}
		t.ManifestDigest = d
	}
	if manifest.Valid {
		var m Manifest
		if err := json.Unmarshal([]byte(manifest.String), &m); err != nil {
			return Title{}, fmt.Errorf("title %q: manifest: %w", t.ID, err)
		}
		t.Manifest = &m
	}
	return t, nil
}

func scanTitles(rows *sql.Rows) ([]Title, error) {
	defer rows.Close()
	ts := []Title{}
	for rows.Next() {
		t, err := scanTitle(rows, false)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return ts, nil
}

// SetRecording stores the manifest of a title being recorded (the
// segments so far), with its duration, bytes and chunk references, in one
// transaction; the title stays processing (shown as recording). Call it
// once every chunk the manifest names is durable. A title that is no
// longer processing (deleted, finished) is ErrNotProcessing or
// ErrTitleNotFound.
func (c *Catalog) SetRecording(id string, m *Manifest) error {
	js, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("vod catalog: recording %q: encode manifest: %w", id, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	tx, err := c.db.Begin()
	if err != nil {
		return fmt.Errorf("vod catalog: recording %q: %w", id, err)
	}
	defer tx.Rollback()
	res, err := tx.Exec(`UPDATE titles SET duration_ns = ?, bytes = ?, manifest = ? WHERE id = ? AND state = ?`,
		int64(m.Duration), m.Bytes(), string(js), id, string(StateProcessing))
	if err != nil {
		return fmt.Errorf("vod catalog: recording %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: recording %q: %w", id, err)
	} else if n == 0 {
		var state string
		if err := tx.QueryRow(`SELECT state FROM titles WHERE id = ?`, id).Scan(&state); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("vod catalog: recording %q: %w", id, ErrTitleNotFound)
		}
		return fmt.Errorf("vod catalog: recording %q: title is %s: %w", id, state, ErrNotProcessing)
	}
	ins, err := tx.Prepare(`INSERT OR IGNORE INTO title_chunks (title_id, digest) VALUES (?, ?)`)
	if err != nil {
		return fmt.Errorf("vod catalog: recording %q: %w", id, err)
	}
	defer ins.Close()
	for _, d := range manifestDigests(m, Digest{}) {
		if _, err := ins.Exec(id, d[:]); err != nil {
			return fmt.Errorf("vod catalog: recording %q: chunk reference %s: %w", id, d, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("vod catalog: recording %q: commit: %w", id, err)
	}
	return nil
}

// SetManifestDigest records the digest of a ready local title's manifest
// stored as a chunk, and references the chunk so that it is kept while
// the title exists. A title that is gone, no longer ready or not packaged
// here is ErrTitleNotFound.
func (c *Catalog) SetManifestDigest(id string, d Digest) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	tx, err := c.db.Begin()
	if err != nil {
		return fmt.Errorf("vod catalog: manifest digest of %q: %w", id, err)
	}
	defer tx.Rollback()
	res, err := tx.Exec(`UPDATE titles SET manifest_digest = ? WHERE id = ? AND state = ? AND origin = ''`,
		d.String(), id, string(StateReady))
	if err != nil {
		return fmt.Errorf("vod catalog: manifest digest of %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("vod catalog: manifest digest of %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("vod catalog: manifest digest of %q: no ready local title: %w", id, ErrTitleNotFound)
	}
	if _, err := tx.Exec(`INSERT OR IGNORE INTO title_chunks (title_id, digest) VALUES (?, ?)`, id, d[:]); err != nil {
		return fmt.Errorf("vod catalog: manifest digest of %q: chunk reference: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("vod catalog: manifest digest of %q: commit: %w", id, err)
	}
	return nil
}

// Remove deletes a title like Delete and remembers its id as removed (see
// Removed), in one transaction, so that no copy of the title from another
// node is taken in again. An id not in the catalog is ErrTitleNotFound; it
// is remembered only when recordMissing (a removal made on another node:
// the title may arrive here later).
func (c *Catalog) Remove(id string, recordMissing bool) (Title, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	tx, err := c.db.Begin()
	if err != nil {
		return Title{}, fmt.Errorf("vod catalog: remove %q: %w", id, err)
	}
	defer tx.Rollback()
	t, err := scanTitle(tx.QueryRow(`SELECT `+titleColumns+`, manifest FROM titles WHERE id = ?`, id), true)
	missing := errors.Is(err, sql.ErrNoRows)
	if err != nil && !missing {
		return Title{}, fmt.Errorf("vod catalog: remove %q: %w", id, err)
	}
	if missing && !recordMissing {
		return Title{}, fmt.Errorf("vod catalog: remove %q: %w", id, ErrTitleNotFound)
	}
	if !missing {
		if _, err := tx.Exec(`DELETE FROM title_chunks WHERE title_id = ?`, id); err != nil {
			return Title{}, fmt.Errorf("vod catalog: remove %q: chunk references: %w", id, err)
		}
		if _, err := tx.Exec(`DELETE FROM titles WHERE id = ?`, id); err != nil {
			return Title{}, fmt.Errorf("vod catalog: remove %q: %w", id, err)
		}
	}
	if _, err := tx.Exec(`INSERT OR IGNORE INTO removed_titles (id, removed) VALUES (?, ?)`, id, time.Now().UnixNano()); err != nil {
		return Title{}, fmt.Errorf("vod catalog: remove %q: remember the removal: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return Title{}, fmt.Errorf("vod catalog: remove %q: commit: %w", id, err)
	}
	if missing {
		return Title{}, fmt.Errorf("vod catalog: remove %q: %w", id, ErrTitleNotFound)
	}
	c.log.Info("title removed", "id", logText(id), "origin", t.Origin)
	return t, nil
}

// Removed returns the ids of every title removed here or anywhere in the
// cluster.
func (c *Catalog) Removed() ([]string, error) {
	rows, err := c.db.Query(`SELECT id FROM removed_titles ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("vod catalog: removed titles: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("vod catalog: removed titles: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("vod catalog: removed titles: %w", err)
	}
	return ids, nil
}

// PutRemote inserts or updates the row of a title packaged on another
// node (t.Origin, not empty) with its manifest (nil while unknown) and
// the manifest's digest. A removed id and a title packaged here are left
// alone; PutRemote reports whether the row was written. The row
// references no chunks: they are the origin's.
func (c *Catalog) PutRemote(t Title, m *Manifest) (bool, error) {
	if t.ID == "" || t.Origin == "" {
		return false, fmt.Errorf("vod catalog: remote title %q: empty id or origin", t.ID)
	}
	var manifest sql.NullString
	mdig := ""
	if m != nil {
		js, err := json.Marshal(m)
		if err != nil {
			return false, fmt.Errorf("vod catalog: remote title %q: encode manifest: %w", t.ID, err)
		}
		manifest = sql.NullString{String: string(js), Valid: true}
		mdig = t.ManifestDigest.String()
	}
	state := t.State
	if state != StateReady && state != StateFailed {
		state = StateProcessing // "recording" is how the origin shows it, not a catalog state
	}
	if state == StateReady && m == nil {
		state = StateProcessing
	}
	posterHex := ""
	if t.Poster != (Digest{}) {
		posterHex = t.Poster.String()
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	tx, err := c.db.Begin()
	if err != nil {
		return false, fmt.Errorf("vod catalog: remote title %q from %s: %w", t.ID, t.Origin, err)
	}
	defer tx.Rollback()
	res, err := tx.Exec(`INSERT INTO titles (id, title, description, state, progress, error, created,
			duration_ns, bytes, poster, manifest, views, origin, manifest_digest)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
		WHERE NOT EXISTS (SELECT 1 FROM removed_titles WHERE id = ?)
		ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description,
			state = excluded.state, progress = excluded.progress, error = excluded.error,
			created = excluded.created, duration_ns = excluded.duration_ns, bytes = excluded.bytes,
			poster = excluded.poster, manifest = excluded.manifest, views = max(titles.views, excluded.views),
			origin = excluded.origin, manifest_digest = excluded.manifest_digest
		WHERE titles.origin <> ''`,
		t.ID, t.Title, t.Description, string(state), max(0, min(100, t.Progress)), t.Error, t.Created.UnixNano(),
		int64(t.Duration), t.Bytes, posterHex, manifest, t.Views, t.Origin, mdig, t.ID)
	if err != nil {
		return false, fmt.Errorf("vod catalog: remote title %q from %s: %w", t.ID, t.Origin, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("vod catalog: remote title %q from %s: %w", t.ID, t.Origin, err)
	}
	if n > 0 && m != nil {
		// The chunks it names, so that a chunk request finds its title and
		// a removal drops the chunks pinned or cached here.
		ds := manifestDigests(m, t.Poster)
		if t.ManifestDigest != (Digest{}) {
			ds = append(ds, t.ManifestDigest)
		}
		if _, err := tx.Exec(`DELETE FROM title_chunks WHERE title_id = ?`, t.ID); err != nil {
			return false, fmt.Errorf("vod catalog: remote title %q chunks: %w", t.ID, err)
		}
		ins, err := tx.Prepare(`INSERT OR IGNORE INTO title_chunks (title_id, digest) VALUES (?, ?)`)
		if err != nil {
			return false, fmt.Errorf("vod catalog: remote title %q chunks: %w", t.ID, err)
		}
		defer ins.Close()
		for _, d := range ds {
			if _, err := ins.Exec(t.ID, d[:]); err != nil {
				return false, fmt.Errorf("vod catalog: remote title %q chunks: %w", t.ID, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("vod catalog: remote title %q from %s: %w", t.ID, t.Origin, err)
	}
	return n > 0, nil
}
