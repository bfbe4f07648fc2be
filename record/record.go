// Package record records live streams into VoD titles: a Recorder reads a
// stream from the hub like any other reader (the source rendition, no
// re-encode) and hands its units to a vod.Recording. vod knows nothing of
// live streams; this package is the bridge, and node wires it.
package record

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/vod"
)

// Recorder records live streams into VoD titles: it reads a stream from
// the hub like any other reader (the source rendition, no re-encode) and
// hands its units to a vod.Recording. Recordings start on request (the
// API, `gradient vod record`) or when a stream matching vod.record is
// published, and end when the stream ends, on a stop call, when the title
// is deleted, or when the node stops.
type Recorder struct {
	hub      *media.Hub
	vod      *vod.Service
	log      *slog.Logger
	patterns []string
	grace    time.Duration

	mu     sync.Mutex
	active map[string]*Recording // by title id
	closed bool
	wg     sync.WaitGroup
}

// Recording is one stream being recorded.
type Recording struct {
	ID     string    `json:"id"`
	Stream string    `json:"stream"`
	Title  string    `json:"title"`
	Since  time.Time `json:"since"`

	rec  *vod.Recording
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

// Config is what a Recorder records by itself: the vod section's record
// and record_grace.
type Config struct {
	// Patterns are path.Match patterns of streams recorded from their
	// publish on.
	Patterns []string
	// Grace is how long a recorded stream may be gone and continue the
	// same title when it comes back with the same tracks; 0: the vod
	// default; negative: none.
	Grace time.Duration
}

// New builds a Recorder writing into v; it does no I/O. Give it to
// hub.Observe so that patterns start recordings.
func New(cfg Config, hub *media.Hub, v *vod.Service, log *slog.Logger) (*Recorder, error) {
	for _, p := range cfg.Patterns {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("record: pattern %q: %w", p, err)
		}
	}
	if cfg.Grace == 0 {
		cfg.Grace = vod.DefaultConfig().RecordGrace
	}
	if log == nil {
		log = slog.Default()
	}
	return &Recorder{hub: hub, vod: v, log: log.With("component", "vod-record"),
		patterns: cfg.Patterns, grace: cfg.Grace, active: map[string]*Recording{}}, nil
}

// matches tells whether a published path is a source stream vod.record
// names (renditions such as "live/cam1@360p" are never recorded by
// pattern: the source is).
func (r *Recorder) matches(p string) bool {
	if _, rendition, err := media.ParsePath(p); err != nil || rendition != "" {
		return false
	}
	for _, pat := range r.patterns {
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

// OnHubEvent starts recording a stream vod.record names when it is
// published here by a broadcaster (not relayed from another node). It must not block: the recording starts on its own goroutine.
func (r *Recorder) OnHubEvent(ev media.HubEvent) {
	if !ev.Published || !r.matches(ev.Stream) || r.recording(ev.Stream) {
		return
	}
	go func() {
		// The node the broadcaster publishes to records; the nodes that
		// relay the stream from it do not.
		if st, ok := r.hub.Lookup(ev.Stream); !ok || strings.HasPrefix(st.Info().Source, overlay.RelaySourcePrefix) {
			return
		}
		if _, err := r.Start(ev.Stream, ""); err != nil {
			r.log.Warn("stream not recorded", "stream", ev.Stream, "err", err)
		}
	}()
}

// recording tells whether a recording of stream runs (or waits for the
// stream to come back).
func (r *Recorder) recording(stream string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, lr := range r.active {
		if lr.Stream == stream {
			return true
		}
	}
	return false
}

// Start records the live stream at path into a new title (title "" names
// it after the stream and the time) and returns the recording.
func (r *Recorder) Start(stream, title string) (*Recording, error) {
	if title == "" {
		title = stream + " " + time.Now().UTC().Format("2006-01-02 15:04")
	}
	if err := vod.CheckTitle(title, ""); err != nil {
		return nil, err
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, media.ErrHubClosed
	}
	reader, err := r.hub.Subscribe(stream, "vod-record")
	if err != nil {
		return nil, err
	}
	desc := reader.Description()
	var tracks vod.RecordTracks
	if v := desc.VideoTrack(); v >= 0 {
		tracks.SPS, tracks.PPS = desc.Tracks[v].SPS, desc.Tracks[v].PPS
	}
	if a := desc.AudioTrack(); a >= 0 {
		switch t := desc.Tracks[a]; t.Codec {
		case media.CodecAAC:
			tracks.AAC = t.AAC
		case media.CodecOpus:
			tracks.OpusChannels = max(t.Channels, 1)
		}
	}
	// The rate the stream has come in at, once it has run long enough
	// for an average to mean something: the title's master playlist
	// advertises it until its first segment is cut.
	if info := reader.Stream().Info(); time.Since(info.PublishedAt) >= 2*time.Second && info.Kbps > 0 {
		tracks.Kbps = int(info.Kbps + 0.5)
	}
	rec, err := r.vod.StartRecording(title, "Recorded from the live stream "+stream+".", tracks)
	if err != nil {
		reader.Close()
		return nil, err
	}
	lr := &Recording{ID: rec.ID(), Stream: stream, Title: title, Since: time.Now().UTC(),
		rec: rec, stop: make(chan struct{}), done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		reader.Close()
		rec.Close(media.ErrHubClosed)
		return nil, media.ErrHubClosed
	}
	r.active[lr.ID] = lr
	r.wg.Add(1)
	r.mu.Unlock()
	r.log.Info("recording a live stream", "stream", stream, "id", lr.ID, "title", title)
	go r.run(lr, reader)
	return lr, nil
}

// run copies the stream's units into the recording until the stream
// ends (and does not come back within the grace period with the same
// tracks), the recording is stopped or its title deleted.
func (r *Recorder) run(lr *Recording, reader *media.Reader) {
	defer r.wg.Done()
	defer close(lr.done)
	var cause error
	restart := false
	for fresh := false; reader != nil; fresh = true {
		desc := reader.Description()
		ended, err := copyUnits(lr, reader, desc, fresh)
		reader.Close()
		reader = nil
		if err != nil {
			cause = err
			break
		}
		if ended {
			reader, restart = r.awaitReturn(lr, desc)
			if reader != nil {
				r.log.Info("recorded stream is back: the title continues", "stream", lr.Stream, "id", lr.ID)
				lr.rec.Resume()
			}
		}
	}
	t, err := lr.rec.Close(cause)
	r.mu.Lock()
	delete(r.active, lr.ID)
	r.mu.Unlock()
	switch {
	case err != nil:
		r.log.Info("recording ended without a title", "stream", lr.Stream, "id", lr.ID, "err", err)
	default:
		r.log.Info("recording ended", "stream", lr.Stream, "id", lr.ID, "state", t.State, "duration", t.Duration, "cause", cause)
	}
	if restart && r.matches(lr.Stream) {
		// Back with other tracks: a title of its own.
		if _, err := r.Start(lr.Stream, ""); err != nil {
			r.log.Warn("stream not recorded", "stream", lr.Stream, "err", err)
		}
	}
}

// copyUnits hands the reader's units to the recording until the stream
// ends (ended), the recording is stopped or deleted, or a write fails
// (err). fresh: the source is a new publisher, whose first keyframe gets
// its parameter sets in band.
func copyUnits(lr *Recording, reader *media.Reader, desc media.Description, fresh bool) (ended bool, err error) {
	v := desc.VideoTrack()
	for {
		select {
		case u, ok := <-reader.C():
			if !ok {
				return true, nil // the publisher stopped
			}
			if fresh && u.Track == v && u.Key {
				fresh = false
				c := *u
				c.Data = media.WithParameterSets(u.Data, desc.Tracks[v].SPS, desc.Tracks[v].PPS)
				u = &c
			}
			if err := writeUnit(lr.rec, desc, u); err != nil {
				if errors.Is(err, vod.ErrRecordingClosed) {
					return false, nil
				}
				return false, err
			}
		case <-lr.stop:
			return false, nil
		case <-lr.rec.Done():
			return false, nil // the title was deleted
		}
	}
}

// awaitReturn waits up to the grace period for the stream to be published
// again and returns a reader of it when its tracks are those recorded so
// far; other tracks return restart instead (the stream deserves a title of
// its own).
func (r *Recorder) awaitReturn(lr *Recording, old media.Description) (reader *media.Reader, restart bool) {
	if r.grace <= 0 {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.grace)
	defer cancel()
	go func() {
		select {
		case <-lr.stop:
		case <-lr.rec.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	for ctx.Err() == nil {
		s, err := r.hub.Wait(ctx, lr.Stream)
		if err != nil {
			return nil, false
		}
		rd, err := r.hub.SubscribeContext(ctx, lr.Stream, "vod-record")
		if err != nil { // the old stream, not yet gone from the table
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		if !sameRecordTracks(old, s.Description()) || !sameRecordTracks(old, rd.Description()) {
			rd.Close()
			r.log.Info("recorded stream came back with other tracks: its title ends", "stream", lr.Stream, "id", lr.ID)
			return nil, true
		}
		return rd, false
	}
	return nil, false
}

// sameRecordTracks reports whether a stream described by b can continue a
// recording of a: the same codecs and video size (media.SameTracks) and
// the same audio sampling, which the recording's init section fixed.
func sameRecordTracks(a, b media.Description) bool {
	if !media.SameTracks(a, b) {
		return false
	}
	if i := a.AudioTrack(); i >= 0 {
		x, y := a.Tracks[i], b.Tracks[i]
		switch {
		case x.Codec == media.CodecAAC && (x.AAC == nil || y.AAC == nil ||
			x.AAC.Type != y.AAC.Type || x.AAC.SampleRate != y.AAC.SampleRate ||
			x.AAC.ChannelCount != y.AAC.ChannelCount || x.AAC.FrameLengthFlag != y.AAC.FrameLengthFlag):
			return false
		case x.Codec == media.CodecOpus && max(x.Channels, 1) != max(y.Channels, 1):
			return false
		}
	}
	return true
}

// writeUnit hands one hub unit to the recording: a video access unit, or
// the AAC access units (1024 samples apart) or Opus packets of an audio
// unit.
func writeUnit(rec *vod.Recording, desc media.Description, u *media.Unit) error {
	t := desc.Tracks[u.Track]
	switch t.Codec {
	case media.CodecH264:
		return rec.WriteVideo(u.PTS, u.DTS, u.Key, u.Data)
	case media.CodecAAC, media.CodecOpus:
		step := 20 * time.Millisecond
		if t.Codec == media.CodecAAC && t.AAC != nil && t.AAC.SampleRate > 0 {
			frame := 1024
			if t.AAC.FrameLengthFlag {
				frame = 960
			}
			step = time.Duration(frame) * time.Second / time.Duration(t.AAC.SampleRate)
		}
		for i, f := range u.Data {
			if err := rec.WriteAudio(u.PTS+time.Duration(i)*step, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// Stop ends the recording id and waits until its title is finished.
func (r *Recorder) Stop(id string) (vod.Title, error) {
	r.mu.Lock()
	lr, ok := r.active[id]
	r.mu.Unlock()
	if !ok {
		return vod.Title{}, fmt.Errorf("no recording %q runs: %w", id, vod.ErrTitleNotFound)
	}
	lr.once.Do(func() { close(lr.stop) })
	<-lr.done
	return r.vod.Get(id)
}

// List returns the running recordings, oldest first.
func (r *Recorder) List() []*Recording {
	r.mu.Lock()
	out := make([]*Recording, 0, len(r.active))
	for _, lr := range r.active {
		out = append(out, lr)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// Close stops every recording (each becomes a ready title with what it
// holds) and starts no more.
func (r *Recorder) Close() error {
	r.mu.Lock()
	r.closed = true
	for _, lr := range r.active {
		lr.once.Do(func() { close(lr.stop) })
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// Route mounts the recording API:
//
//	POST /api/v1/vod/record             {"stream":"live/cam1","title":"…"}: 202 {"id", "stream", "title", "state"}
//	GET  /api/v1/vod/record             the running recordings
//	POST /api/v1/vod/record/{id}/stop   end a recording: 200 the title (ready)
func (r *Recorder) Route(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/vod/record", func(w http.ResponseWriter, req *http.Request) {
		var body struct {
			Stream string `json:"stream"`
			Title  string `json:"title"`
		}
		if err := json.NewDecoder(io.LimitReader(req.Body, 64<<10)).Decode(&body); err != nil || body.Stream == "" {
			http.Error(w, `want a JSON body {"stream": "live/cam1", "title": "…"}`, http.StatusBadRequest)
			return
		}
		lr, err := r.Start(body.Stream, body.Title)
		if err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, media.ErrNotFound), errors.Is(err, media.ErrStreamEnded):
				code = http.StatusNotFound
			case errors.Is(err, media.ErrInvalidName), errors.Is(err, vod.ErrBadTitle):
				code = http.StatusBadRequest
			case errors.Is(err, media.ErrHubClosed):
				code = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Location", "/api/v1/vod/titles/"+lr.ID)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]any{"id": lr.ID, "stream": lr.Stream, "title": lr.Title, "state": vod.StateRecording})
	})
	mux.HandleFunc("GET /api/v1/vod/record", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, map[string]any{"recordings": r.List()})
	})
	mux.HandleFunc("POST /api/v1/vod/record/{id}/stop", func(w http.ResponseWriter, req *http.Request) {
		t, err := r.Stop(req.PathValue("id"))
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, vod.ErrTitleNotFound) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, map[string]any{"id": t.ID, "state": t.State, "duration_seconds": t.Duration.Seconds(), "error": t.Error})
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
