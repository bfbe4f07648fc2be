package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// VoD across a cluster: every node lists every title of the cluster. A
// title is packaged on one node, its origin, which announces the title's
// catalog entry (TitleEntry, through OnTitleChange) whenever it changes;
// the node carries the entries to the other nodes, which take them in with
// MergeRemoteTitle: a row in their catalog with origin set, and, once the
// title is ready, its manifest, fetched as a chunk (FetchManifest) and
// verified against the digest the entry names. Playlists of such a title
// are built here like those of a local one; its chunks are fetched from
// the cluster by whoever serves them.
//
// A removal (Delete on any node) is final: OnTitleRemoved carries it to
// every node, where MergeRemoval deletes the row (and, at the origin, the
// chunks) and the id is remembered in the catalog, so that no late copy of
// the entry brings the title back.
//
// vod knows nothing of how entries travel: these are plain funcs and
// types, and the node wires them to the gossip.

// TitleEntry is a title's catalog entry as the cluster sees it. It is kept
// small (a few hundred bytes) so that it fits one gossip packet: the
// description is cut to maxEntryDescription bytes, the error to
// maxEntryError, and the manifest itself is not in it, only its digest.
type TitleEntry struct {
	ID          string    `json:"id"`
	Origin      string    `json:"origin"`
	Title       string    `json:"title"`
	Description string    `json:"description,omitempty"`
	State       State     `json:"state"`
	Progress    int       `json:"progress"`
	Error       string    `json:"error,omitempty"`
	Created     time.Time `json:"created"`
	// Duration is in nanoseconds.
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	// Poster and ManifestDigest are hex digests, empty for none.
	Poster         string          `json:"poster,omitempty"`
	ManifestDigest string          `json:"manifest_digest,omitempty"`
	Renditions     []RenditionJSON `json:"renditions,omitempty"`
	Views          int64           `json:"views"`
}

// Entry size limits; see TitleEntry.
const (
	maxEntryDescription = 200
	maxEntryError       = 200
)

// ErrManifestUnverified: a remote title's manifest could not be fetched,
// did not match its digest or did not parse; the title is listed but not
// playable until a later merge gets it.
var ErrManifestUnverified = errors.New("vod: manifest of a remote title not verified")

// errNotStarted: a merge before Start.
var errNotStarted = errors.New("service not started")

// manifestRetry is how long a remote title whose manifest could not be had
// waits before a merge of the same entry tries again.
const manifestRetry = 5 * time.Second

// cluster is the Service's cluster bookkeeping, under its own lock.
type cluster struct {
	mu       sync.Mutex
	nodeName string
	// pending are the local titles whose entries are to be announced;
	// wake tells the announcer.
	pending map[string]bool
	wake    chan struct{}
	// announced is what was last announced of each local title.
	announced map[string]announceMark
	// removed are the ids removed here or anywhere (the catalog's
	// removed_titles).
	removed map[string]bool
	// merged is the last entry of each remote title merged completely (its
	// JSON); failed holds an entry whose manifest was not had, and when
	// to try it again.
	merged map[string]string
	failed map[string]failedMerge
}

type announceMark struct {
	state    State
	progress int
	manifest Digest
	// views is not in moved: a view count is announced by announceViews,
	// at most once per vod.fill_interval.
	views int64
}

// moved tells whether a title moved enough since mark was announced to be
// announced again: another state or manifest, 10 points of progress (a
// job reports every percent; the cluster needs less), or the end.
func (mark announceMark) moved(to announceMark) bool {
	return mark.state != to.state || mark.manifest != to.manifest ||
		to.progress-mark.progress >= 10 || to.progress < mark.progress ||
		(to.progress == 100 && mark.progress != 100)
}

type failedMerge struct {
	entry string
	retry time.Time
}

func newCluster() cluster {
	return cluster{pending: map[string]bool{}, wake: make(chan struct{}, 1), announced: map[string]announceMark{},
		removed: map[string]bool{}, merged: map[string]string{}, failed: map[string]failedMerge{}}
}

// SetNodeName names this node as the cluster knows it: the API shows it as
// the origin of the local titles, and entries of that origin are this
// node's own. Call it before Start.
func (s *Service) SetNodeName(name string) {
	s.cl.mu.Lock()
	s.cl.nodeName = name
	s.cl.mu.Unlock()
}

// NodeName is the name given by SetNodeName ("" if none).
func (s *Service) NodeName() string {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	return s.cl.nodeName
}

// startCluster loads the removed ids, queues an announcement of every
// local title and starts the announcer; called by Start once the catalog
// is open.
func (s *Service) startCluster() error {
	ids, err := s.cat.Removed()
	if err != nil {
		return err
	}
	ts, err := s.cat.List("")
	if err != nil {
		return err
	}
	s.cl.mu.Lock()
	for _, id := range ids {
		s.cl.removed[id] = true
	}
	for _, t := range ts {
		if t.Origin == "" {
			s.cl.pending[t.ID] = true
		}
	}
	s.cl.mu.Unlock()
	s.cat.changed = s.titleChanged
	s.wg.Add(1)
	go s.announcer()
	s.wakeAnnouncer()
	return nil
}

// titleChanged is the catalog's change callback: it must not block.
func (s *Service) titleChanged(id string) {
	s.cl.mu.Lock()
	s.cl.pending[id] = true
	s.cl.mu.Unlock()
	s.wakeAnnouncer()
	s.queueOrigin(id)
}

func (s *Service) wakeAnnouncer() {
	select {
	case s.cl.wake <- struct{}{}:
	default:
	}
}

// announcer announces the pending titles, off the packaging path: a slow
// hook never holds up a job.
func (s *Service) announcer() {
	defer s.wg.Done()
	views := time.NewTicker(s.cfg.FillInterval)
	defer views.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-views.C:
			s.announceViews()
			continue
		case <-s.cl.wake:
		}
		s.cl.mu.Lock()
		ids := make([]string, 0, len(s.cl.pending))
		for id := range s.cl.pending {
			ids = append(ids, id)
		}
		clear(s.cl.pending)
		s.cl.mu.Unlock()
		for _, id := range ids {
			if s.ctx.Err() != nil {
				return
			}
			s.announce(id, false)
		}
	}
}

// announceViews announces again the local titles whose view count moved
// since it was last announced, so that every node's fill planner sees the
// cluster's views (fill.go). Called every vod.fill_interval: a title's
// views are announced at most that often, and only when they changed.
func (s *Service) announceViews() {
	if s.OnTitleChange == nil {
		return
	}
	ts, err := s.cat.List("")
	if err != nil {
		s.log.Warn("views not announced to the cluster: catalog unreadable", "err", err)
		return
	}
	for _, t := range ts {
		if t.Origin != "" || s.ctx.Err() != nil {
			continue
		}
		s.cl.mu.Lock()
		mark, was := s.cl.announced[t.ID]
		s.cl.mu.Unlock()
		if was && mark.views != t.Views {
			s.announce(t.ID, true)
		}
	}
}

// announce tells OnTitleChange the entry of local title id if it moved
// (state, 10 points of progress, the manifest chunk), or if force (its
// views moved); a title that was announced and is gone without a Delete
// (a recording that could not start) is told to OnTitleRemoved.
func (s *Service) announce(id string, force bool) {
	t, err := s.cat.Get(id)
	if errors.Is(err, ErrTitleNotFound) {
		s.cl.mu.Lock()
		_, was := s.cl.announced[id]
		delete(s.cl.announced, id)
		s.cl.mu.Unlock()
		if was && s.OnTitleRemoved != nil {
			s.OnTitleRemoved(id)
		}
		return
	}
	if err != nil {
		s.log.Warn("title not announced to the cluster", "id", id, "err", err)
		return
	}
	if t.Origin != "" {
		return
	}
	if t.State == StateReady && t.Manifest != nil && t.ManifestDigest == (Digest{}) {
		d, err := s.storeManifest(t)
		if err != nil {
			s.log.Warn("manifest not stored as a chunk: the title is not playable on other nodes", "id", id, "err", err)
		} else {
			t.ManifestDigest = d
		}
	}
	mark := announceMark{state: t.State, progress: t.Progress, manifest: t.ManifestDigest, views: t.Views}
	s.cl.mu.Lock()
	prev, was := s.cl.announced[id]
	if was && !force && !prev.moved(mark) {
		s.cl.mu.Unlock()
		return
	}
	s.cl.announced[id] = mark
	s.cl.mu.Unlock()
	if s.OnTitleChange != nil {
		s.OnTitleChange(s.entryOf(t))
	}
}

// storeManifest stores a ready local title's manifest JSON as a chunk,
// content-addressed like every chunk, and references it from the title.
func (s *Service) storeManifest(t Title) (Digest, error) {
	js, err := json.Marshal(t.Manifest)
	if err != nil {
		return Digest{}, fmt.Errorf("encode manifest: %w", err)
	}
	c, err := s.store.Put(bytes.NewReader(js))
	if err != nil {
		return Digest{}, err
	}
	if err := s.cat.SetManifestDigest(t.ID, c.Digest); err != nil {
		// Deleted (or failed) meanwhile: the chunk may be no one's.
		s.dropChunks([]Digest{c.Digest})
		return Digest{}, err
	}
	return c.Digest, nil
}

// entryOf is the cluster entry of a local title.
func (s *Service) entryOf(t Title) TitleEntry {
	e := TitleEntry{ID: t.ID, Origin: s.NodeName(), Title: t.Title, Description: cutUTF8(t.Description, maxEntryDescription),
		State: t.State, Progress: t.Progress, Error: cutUTF8(t.Error, maxEntryError), Created: t.Created,
		Duration: t.Duration, Bytes: t.Bytes, Views: t.Views}
	if t.Poster != (Digest{}) {
		e.Poster = t.Poster.String()
	}
	if t.ManifestDigest != (Digest{}) {
		e.ManifestDigest = t.ManifestDigest.String()
	}
	if t.Manifest != nil {
		for _, r := range t.Manifest.Renditions {
			e.Renditions = append(e.Renditions, RenditionJSON{Name: r.Name, Width: r.Width, Height: r.Height, Kbps: r.Kbps, Codecs: r.Codecs})
		}
	}
	return e
}

// cutUTF8 cuts s to at most n bytes at a character boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// forgetTitle remembers id as removed and drops what the cluster
// bookkeeping held of it.
func (s *Service) forgetTitle(id string) {
	s.cl.mu.Lock()
	s.cl.removed[id] = true
	delete(s.cl.announced, id)
	delete(s.cl.merged, id)
	delete(s.cl.failed, id)
	s.cl.mu.Unlock()
}

// MergeRemoteTitle takes in the entry of a title of another node
// (e.Origin): its row is inserted or updated, and once it is ready its
// manifest is fetched with FetchManifest and verified, so that its
// playlists are served here. The node's own titles (by origin or by id)
// and removed ids are ignored. A manifest that cannot be had, does not
// match ManifestDigest or does not parse is logged and the title is listed
// as processing, not playable; the error wraps ErrManifestUnverified and a
// merge of the same entry tries again after manifestRetry. Merging an
// entry already merged costs no I/O. Call it after Start.
func (s *Service) MergeRemoteTitle(e TitleEntry) error {
	if e.ID == "" || e.Origin == "" {
		return fmt.Errorf("vod: remote title %q of origin %q: empty id or origin", e.ID, e.Origin)
	}
	if s.cat == nil {
		return fmt.Errorf("vod: remote title %q: %w", e.ID, errNotStarted)
	}
	key, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("vod: remote title %q: %w", e.ID, err)
	}
	s.cl.mu.Lock()
	skip := e.Origin == s.cl.nodeName || s.cl.removed[e.ID] || s.cl.merged[e.ID] == string(key)
	if f, ok := s.cl.failed[e.ID]; ok && f.entry == string(key) && time.Now().Before(f.retry) {
		skip = true
	}
	s.cl.mu.Unlock()
	if skip {
		return nil
	}
	old, err := s.cat.Get(e.ID)
	isNew := errors.Is(err, ErrTitleNotFound)
	switch {
	case err == nil && old.Origin == "":
		s.log.Debug("a remote entry names a local title: ignored", "id", e.ID, "origin", e.Origin)
		return nil
	case err != nil && !errors.Is(err, ErrTitleNotFound):
		return fmt.Errorf("vod: remote title %q: %w", e.ID, err)
	}
	t := Title{ID: e.ID, Origin: e.Origin, Title: e.Title, Description: e.Description, State: e.State, Progress: e.Progress,
		Error: e.Error, Created: e.Created, Duration: e.Duration, Bytes: e.Bytes, Views: e.Views}
	if e.Poster != "" {
		if t.Poster, err = ParseDigest(e.Poster); err != nil {
			return fmt.Errorf("vod: remote title %q: poster: %w", e.ID, err)
		}
	}
	var m *Manifest
	var merr error
	if e.State == StateReady {
		m, merr = s.remoteManifest(e, old)
		if merr != nil {
			s.log.Warn("remote title listed but not playable: no verified manifest", "id", e.ID, "origin", e.Origin, "err", merr)
			t.State, t.Error = StateProcessing, "not yet playable here: "+cutUTF8(merr.Error(), 300)
		} else {
			t.ManifestDigest = mustDigest(e.ManifestDigest)
		}
	}
	wrote, err := s.cat.PutRemote(t, m)
	if err != nil {
		return err
	}
	s.cl.mu.Lock()
	if merr != nil {
		s.cl.failed[e.ID] = failedMerge{entry: string(key), retry: time.Now().Add(manifestRetry)}
	} else {
		delete(s.cl.failed, e.ID)
		if wrote {
			s.cl.merged[e.ID] = string(key)
		}
	}
	s.cl.mu.Unlock()
	if wrote && (isNew || old.State != t.State) {
		s.log.Info("remote title merged", "id", e.ID, "origin", e.Origin, "state", t.State)
	}
	return merr
}

// remoteManifest returns the manifest of a ready remote title: the one
// already stored when its digest is unchanged, else fetched and verified.
func (s *Service) remoteManifest(e TitleEntry, old Title) (*Manifest, error) {
	if e.ManifestDigest == "" {
		return nil, fmt.Errorf("%w: the entry names no manifest digest", ErrManifestUnverified)
	}
	d, err := ParseDigest(e.ManifestDigest)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifestUnverified, err)
	}
	if old.Manifest != nil && old.ManifestDigest == d {
		return old.Manifest, nil
	}
	if s.FetchManifest == nil {
		return nil, fmt.Errorf("%w: no way to fetch it (FetchManifest unset)", ErrManifestUnverified)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	b, err := s.FetchManifest(ctx, d, e.Origin)
	if err != nil {
		return nil, fmt.Errorf("%w: fetch %s from %s: %v", ErrManifestUnverified, d, e.Origin, err)
	}
	if got := Digest(sha256.Sum256(b)); got != d {
		return nil, fmt.Errorf("%w: fetched %d bytes hash to %s, want %s", ErrManifestUnverified, len(b), got, d)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifestUnverified, err)
	}
	if len(m.Renditions) == 0 {
		return nil, fmt.Errorf("%w: no rendition", ErrManifestUnverified)
	}
	return &m, nil
}

func mustDigest(s string) Digest {
	d, _ := ParseDigest(s)
	return d
}

// MergeRemoval takes in a removal made on another node: the title's row is
// deleted (at its origin, with its job, upload and chunks, as by Delete)
// and its id remembered, so that the title is not taken in again. A
// removal already known costs no I/O. Call it after Start.
func (s *Service) MergeRemoval(id string) error {
	if id == "" {
		return errors.New("vod: removal of an empty id")
	}
	if s.cat == nil {
		return fmt.Errorf("vod: removal of %q: %w", id, errNotStarted)
	}
	s.cl.mu.Lock()
	known := s.cl.removed[id]
	s.cl.mu.Unlock()
	if known {
		return nil
	}
	t, err := s.remove(id, true)
	if errors.Is(err, ErrTitleNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("title removed on another node", "id", id, "title", t.Title, "origin", t.Origin)
	return nil
}
