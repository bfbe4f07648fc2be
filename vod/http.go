package vod

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Route mounts the VoD HTTP on mux:
//
//	POST   /api/v1/vod/titles?title=…&description=…   upload (raw body or multipart "file"): 202 {"id", "state"}
//	GET    /api/v1/vod/titles[?q=…]                  every title, or a full-text search
//	GET    /api/v1/vod/titles/{id}                   one title (state, progress, renditions …)
//	DELETE /api/v1/vod/titles/{id}                   remove a title and its chunks
//	GET    /vod/                                     the catalog page
//	GET    /vod/{id}/                                the player page
//	GET    /vod/{id}/index.m3u8                      the master playlist
//	GET    /vod/{id}/{rendition}.m3u8                a rendition's media playlist
//	GET    /vod/{id}/poster.jpg                      the poster
//	GET    /vod/chunks/{digest}.{m4s|mp4}            a chunk (immutable, Range, Repr-Digest)
//	GET    /watch/vod/{id}?device=…                  302 to the title's player (on one node: this one)
//	GET    /api/v1/vod/cache                         the cluster chunk cache: bytes, hit ratios, bytes by source
//	GET    /internal/vod/chunks/{digest}             a chunk for another node (signed with the cluster secret)
//	POST   /internal/vod/views/{id}/{seq}/{n}        another node served n views of a title of this node (signed)
func (s *Service) Route(mux *http.ServeMux) {
	mux.HandleFunc("GET /watch/vod/{id}", s.serveWatch)
	mux.HandleFunc("POST /api/v1/vod/titles", s.serveAdd)
	mux.HandleFunc("GET /api/v1/vod/titles", s.serveList)
	mux.HandleFunc("GET /api/v1/vod/titles/{id}", s.serveTitle)
	mux.HandleFunc("DELETE /api/v1/vod/titles/{id}", s.serveDelete)
	mux.HandleFunc("GET /vod/{$}", s.serveCatalogPage)
	mux.HandleFunc("GET /vod/{id}/{$}", s.servePlayerPage)
	mux.HandleFunc("GET /vod/{id}/{file}", s.serveTitleFile)
	mux.HandleFunc("GET /vod/chunks/{name}", s.serveChunk)
	mux.HandleFunc("GET /internal/vod/chunks/{hex}", s.ServePeer)
	mux.HandleFunc("GET /api/v1/vod/cache", s.serveCacheStatus)
	mux.HandleFunc("POST /internal/vod/views/{id}/{seq}/{n}", s.serveViews)
}

// TitleJSON is a title as the API shows it.
type TitleJSON struct {
	ID          string          `json:"id"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	State       State           `json:"state"`
	Progress    int             `json:"progress"`
	Error       string          `json:"error,omitempty"`
	Created     time.Time       `json:"created"`
	Duration    float64         `json:"duration_seconds"`
	Bytes       int64           `json:"bytes"`
	Views       int64           `json:"views"`
	Poster      string          `json:"poster,omitempty"`
	Playlist    string          `json:"playlist,omitempty"`
	Renditions  []RenditionJSON `json:"renditions,omitempty"`
	// Origin is the node the title was packaged on (this node's name for
	// a local title; empty when the node has no name, alone).
	Origin string `json:"origin,omitempty"`
}

// RenditionJSON is a rendition in TitleJSON.
type RenditionJSON struct {
	Name   string `json:"name"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Kbps   int    `json:"kbps"`
	Codecs string `json:"codecs"`
}

func titleJSON(t Title) TitleJSON {
	j := TitleJSON{ID: t.ID, Title: t.Title, Description: t.Description, State: t.State, Progress: t.Progress,
		Error: t.Error, Created: t.Created, Duration: t.Duration.Seconds(), Bytes: t.Bytes, Views: t.Views, Origin: t.Origin}
	if t.State == StateReady || t.State == StateRecording {
		j.Playlist = "/vod/" + t.ID + "/index.m3u8"
		if t.Poster != (Digest{}) {
			j.Poster = "/vod/" + t.ID + "/poster.jpg"
		}
	}
	if t.Manifest != nil {
		for _, r := range t.Manifest.Renditions {
			j.Renditions = append(j.Renditions, RenditionJSON{Name: r.Name, Width: r.Width, Height: r.Height, Kbps: r.Kbps, Codecs: r.Codecs})
		}
	}
	return j
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// httpError answers err with its status and logs what the node did not
// cause at debug level only.
func (s *Service) httpError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrTitleNotFound), errors.Is(err, ErrChunkNotFound), errors.Is(err, errUnknownID):
		code = http.StatusNotFound
	case errors.Is(err, ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrNotMedia), errors.Is(err, ErrNoVideo):
		code = http.StatusUnsupportedMediaType
	case errors.Is(err, ErrEmpty), errors.Is(err, ErrBadTitle):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotReady):
		code = http.StatusConflict
	}
	if code == http.StatusInternalServerError {
		s.log.Warn("vod request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("vod request refused", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	http.Error(w, msg, code)
}

func (s *Service) serveAdd(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	title, desc := q.Get("title"), q.Get("description")
	body := io.Reader(r.Body)
	var mr *multipart.Reader
	if ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" && params["boundary"] != "" {
		var err error
		mr, err = r.MultipartReader()
		if err != nil {
			s.httpError(w, r, fmt.Errorf("%w: %v", ErrEmpty, err))
			return
		}
		body = nil
		for body == nil {
			p, err := mr.NextPart()
			if err != nil {
				s.httpError(w, r, fmt.Errorf("%w: no \"file\" part", ErrEmpty))
				return
			}
			switch p.FormName() {
			case "file":
				body = p
				if title == "" {
					title = strings.TrimSuffix(p.FileName(), ".mp4")
				}
			case "title", "description":
				b, _ := io.ReadAll(io.LimitReader(p, 6000))
				if p.FormName() == "title" {
					title = string(b)
				} else {
					desc = string(b)
				}
			}
		}
	}
	t, err := s.Add(title, desc, body)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	if mr != nil {
		// Fields sent after the file (browsers send them in form order).
		if title2, desc2, ok := trailingFields(mr, title, desc); ok {
			if err := CheckTitle(title2, desc2); err != nil {
				s.Delete(t.ID) // refused as a whole, as a bad title before the file is
				s.httpError(w, r, err)
				return
			}
			if err := s.cat.Rename(t.ID, title2, desc2); err != nil {
				s.httpError(w, r, err)
				return
			}
		}
	}
	w.Header().Set("Location", "/api/v1/vod/titles/"+t.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": t.ID, "state": t.State})
}

// trailingFields reads the title and description parts that follow the
// file part of a multipart upload; ok when either was there.
func trailingFields(mr *multipart.Reader, title, desc string) (string, string, bool) {
	ok := false
	for {
		p, err := mr.NextPart()
		if err != nil {
			return title, desc, ok
		}
		switch p.FormName() {
		case "title", "description":
			b, _ := io.ReadAll(io.LimitReader(p, 6000))
			if p.FormName() == "title" {
				title = string(b)
			} else {
				desc = string(b)
			}
			ok = true
		}
	}
}

// serveWatch sends a viewer to the player of the node that serves the
// title; with one node that is this one.
func (s *Service) serveWatch(w http.ResponseWriter, r *http.Request) {
	t, err := s.readyTitle(r)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	http.Redirect(w, r, "/vod/"+t.ID+"/", http.StatusFound)
}

func (s *Service) serveList(w http.ResponseWriter, r *http.Request) {
	ts, err := s.List(r.URL.Query().Get("q"))
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	out := make([]TitleJSON, len(ts))
	for i, t := range ts {
		out[i] = s.titleJSON(t)
	}
	writeJSON(w, http.StatusOK, map[string]any{"titles": out})
}

func (s *Service) serveTitle(w http.ResponseWriter, r *http.Request) {
	t, err := s.Get(r.PathValue("id"))
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.titleJSON(t))
}

// titleJSON is titleJSON with a local title's origin: this node.
func (s *Service) titleJSON(t Title) TitleJSON {
	j := titleJSON(t)
	if j.Origin == "" {
		j.Origin = s.NodeName()
	}
	return j
}

func (s *Service) serveDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.Delete(r.PathValue("id")); err != nil {
		s.httpError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// readyTitle returns the ready title of the request's {id}.
func (s *Service) readyTitle(r *http.Request) (Title, error) {
	t, err := s.Get(r.PathValue("id"))
	if err != nil {
		return t, err
	}
	if (t.State != StateReady && t.State != StateRecording) || t.Manifest == nil {
		return t, fmt.Errorf("%w: %s is %s", ErrNotReady, t.ID, t.State)
	}
	return t, nil
}

// ChunkURL is where a chunk is served; an init section ends in .mp4, a
// segment in .m4s.
func ChunkURL(d Digest, init bool) string {
	if init {
		return "/vod/chunks/" + d.String() + ".mp4"
	}
	return "/vod/chunks/" + d.String() + ".m4s"
}

func (s *Service) serveTitleFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	t, err := s.readyTitle(r)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	m := t.Manifest
	switch {
	case file == "index.m3u8":
		// The playlist first, whole, then the view's count: the player
		// waits on the one and not on the other (a durable catalog write).
		first := s.views.first(t.ID, viewerKey(r))
		servePlaylist(w, MasterPlaylist(m))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if first {
			s.noteView(t)
			if err := s.cat.AddView(t.ID); err != nil {
				s.log.Warn("view not counted", "id", t.ID, "err", err)
			}
		}
	case file == "poster.jpg":
		if t.Poster == (Digest{}) {
			http.NotFound(w, r)
			return
		}
		s.serveDigest(w, r, t.Poster, "image/jpeg")
	case strings.HasSuffix(file, ".m3u8"):
		name := strings.TrimSuffix(file, ".m3u8")
		for i := range m.Renditions {
			if rd := &m.Renditions[i]; rd.Name == name && t.State == StateRecording {
				serveLivePlaylist(w, EventPlaylist(m, rd, s.cfg.SegmentDuration, func(d Digest) string { return ChunkURL(d, d == rd.Init.Digest) }))
				return
			} else if rd.Name == name {
				servePlaylist(w, MediaPlaylist(m, rd, func(d Digest) string { return ChunkURL(d, d == rd.Init.Digest) }))
				return
			}
		}
		s.httpError(w, r, fmt.Errorf("%w: title %s has no rendition %q", errUnknownID, t.ID, name))
	default:
		http.NotFound(w, r)
	}
}

func servePlaylist(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
	// A VOD playlist changes only if the title is removed.
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}

func (s *Service) serveChunk(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	hex, ext, _ := strings.Cut(name, ".")
	d, err := ParseDigest(hex)
	if err != nil || (ext != "m4s" && ext != "mp4") {
		http.Error(w, "bad chunk name", http.StatusNotFound)
		return
	}
	s.serveDigest(w, r, d, "video/mp4")
}

// viewerKey tells viewers apart: the player's viewer= token, else the
// client's address and User-Agent.
func viewerKey(r *http.Request) string {
	if v := r.URL.Query().Get("viewer"); v != "" && len(v) <= 64 {
		return "t:" + v
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return host + "|" + r.UserAgent()
}

// viewCounter counts a viewer once per title within viewWindow.
type viewCounter struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	prune time.Time
}

const viewWindow = 30 * time.Minute

func newViewCounter() *viewCounter { return &viewCounter{seen: map[string]time.Time{}} }

// first reports whether key has not opened title id within the window.
func (v *viewCounter) first(id, key string) bool {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.prune) > time.Minute {
		v.prune = now
		for k, t := range v.seen {
			if now.Sub(t) > viewWindow {
				delete(v.seen, k)
			}
		}
	}
	k := id + "\x00" + key
	t, ok := v.seen[k]
	v.seen[k] = now
	return !ok || now.Sub(t) > viewWindow
}
