package vod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
)

// StateRecording is a title whose source is still being recorded: its
// manifest lists the segments so far and its playlists are EVENT
// playlists that grow. The catalog stores it as processing with a
// manifest (its schema knows processing, ready and failed); the service
// shows it as recording while the recording runs, and a recording a
// stopped node left behind becomes ready with what it holds at the next
// Start.
const StateRecording State = "recording"

// ErrRecordingClosed is returned by writes to a recording that ended
// (closed, or its title deleted).
var ErrRecordingClosed = errors.New("recording closed")

// RecordTracks describes the media a recording receives, in vod's terms:
// H.264 video, and optionally AAC or Opus audio.
type RecordTracks struct {
	// SPS and PPS are the H.264 parameter sets, without start codes.
	SPS, PPS []byte
	// AAC is the AudioSpecificConfig of AAC audio; nil for no AAC.
	AAC *mpeg4audio.AudioSpecificConfig
	// OpusChannels, when positive, is Opus audio with that many channels.
	OpusChannels int
	// Kbps is the source's bitrate as declared or measured by the caller,
	// 0 when unknown. The master playlist advertises it until the first
	// segment is cut (a guess from the picture's height when 0); from then
	// on the recorded segments' rate.
	Kbps int
}

// guessKbps is a bitrate to advertise for a recording of height h whose
// source declared none, before any segment is cut: the default ladder's
// rate for that height (HLS asks for a BANDWIDTH a player can compare,
// never 0).
func guessKbps(h int) int {
	switch {
	case h <= 360:
		return 800
	case h <= 720:
		return 2500
	case h <= 1080:
		return 5000
	default:
		return 12000
	}
}

// recSample is one access unit waiting for its segment; times are in the
// track's timescale from the recording's origin (its first keyframe's
// DTS). dur is 0 while the next sample has not arrived.
type recSample struct {
	dts, pts int64
	dur      uint32
	key      bool
	payload  []byte
}

// Recording is a title being made from media written as it arrives (a
// live stream, fed by the node): it cuts an fMP4 segment at the first
// keyframe at or after each multiple of vod.segment_duration, stores it in
// the chunk store and publishes the grown manifest in the catalog. Its
// methods are safe for concurrent use.
type Recording struct {
	s      *Service
	id     string
	log    *slog.Logger
	put    *recordingPutter
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	closed    bool
	err       error // a write that failed: the recording is lost from there
	started   bool
	origin    time.Duration // DTS of the first keyframe
	segDur    int64         // video timescale
	boundary  int64         // next cut time, video timescale
	segStart  int64
	cuts      []cut
	video     []recSample
	audio     []recSample
	audioRate int64
	audioDur  uint32 // one frame, for the last sample of a segment
	lastV     int64  // last video DTS, to keep DTS increasing
	lastA     int64
	haveA     bool
	resume    bool // Resume: the next keyframe continues the timeline
	// discSeq are the sequence numbers (r.seq when written) of the
	// segments still to be written that start after a gap: each is
	// marked Discontinuity.
	discSeq   []uint32
	declared  int // the source's declared kbps (RecordTracks.Kbps), or a guess
	seq       uint32
	rendition Rendition
	bytes     int64
	maxEnd    int64
}

// StartRecording creates a title in the catalog for a recording and
// returns the recording to write its media to. The title is listed at
// once (state recording); its playlists list segments as they are cut.
// Close ends it.
func (s *Service) StartRecording(title, description string, tracks RecordTracks) (*Recording, error) {
	if err := CheckTitle(title, description); err != nil {
		return nil, err
	}
	if len(tracks.SPS) < 4 || len(tracks.PPS) == 0 {
		return nil, errors.New("record: H.264 without SPS/PPS")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(tracks.SPS); err != nil {
		return nil, fmt.Errorf("record: SPS: %w", err)
	}
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil, errors.New("record: the VoD service is not started")
	}
	id := newID()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recording{s: s, id: id, log: s.log.With("id", id, "recording", true), put: &recordingPutter{out: s.store},
		cancel: cancel, done: make(chan struct{})}
	r.segDur = int64(s.cfg.SegmentDuration.Seconds() * videoTimescale)
	r.boundary = r.segDur
	r.rendition = Rendition{Name: "source", Width: sps.Width(), Height: sps.Height()}
	r.declared = tracks.Kbps
	if r.declared <= 0 {
		r.declared = guessKbps(sps.Height())
	}

	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{
		ID: videoTrackID, TimeScale: videoTimescale,
		Codec: &fmp4.CodecH264{SPS: tracks.SPS, PPS: tracks.PPS},
	}}}
	codecs := fmt.Sprintf("avc1.%02x%02x%02x", tracks.SPS[1], tracks.SPS[2], tracks.SPS[3])
	switch {
	case tracks.AAC != nil:
		r.audioRate, r.audioDur = int64(tracks.AAC.SampleRate), 1024
		if tracks.AAC.FrameLengthFlag {
			r.audioDur = 960
		}
		if r.audioRate <= 0 {
			cancel()
			return nil, errors.New("record: AAC without a sample rate")
		}
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: audioTrackID, TimeScale: uint32(r.audioRate),
			Codec: &fmp4.CodecMPEG4Audio{Config: *tracks.AAC}})
		codecs += fmt.Sprintf(",mp4a.40.%d", tracks.AAC.Type)
	case tracks.OpusChannels > 0:
		r.audioRate, r.audioDur = 48000, 960
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: audioTrackID, TimeScale: 48000,
			Codec: &fmp4.CodecOpus{ChannelCount: tracks.OpusChannels}})
		codecs += ",opus"
	}
	var buf seekablebuffer.Buffer
	if err := init.Marshal(&buf); err != nil {
		cancel()
		return nil, fmt.Errorf("record: fMP4 init section: %w", err)
	}
	// Registered before the first Put, so that a Delete of another title
	// sharing a chunk never drops one this recording just stored.
	s.mu.Lock()
	s.putting[r.put] = true
	s.running[id] = cancel
	if s.recordings == nil {
		s.recordings = map[string]*Recording{}
	}
	s.recordings[id] = r
	s.mu.Unlock()
	fail := func(err error) (*Recording, error) {
		r.deregister()
		s.dropChunks(r.put.put)
		cancel()
		return nil, err
	}
	ch, err := r.put.Put(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return fail(fmt.Errorf("record: store init section: %w", err))
	}
	r.rendition.Init, r.rendition.Codecs = ch, codecs
	if err := s.cat.Create(Title{ID: id, Title: title, Description: description, Created: time.Now().UTC()}); err != nil {
		return fail(err)
	}
	if err := s.cat.SetRecording(id, r.manifest()); err != nil {
		s.cat.Delete(id)
		return fail(err)
	}
	go func() { // Delete of the title cancels ctx
		select {
		case <-ctx.Done():
			r.abort()
		case <-s.ctx.Done():
			// The service closes: the title stays as the catalog has it
			// and is finished at the next Start.
		}
	}()
	r.log.Info("recording started", "title", title, "codecs", codecs)
	return r, nil
}

// ID is the recording's title id.
func (r *Recording) ID() string { return r.id }

// Done is closed when the recording has ended: by Close, or because its
// title was deleted. Writes after it fail with ErrRecordingClosed.
func (r *Recording) Done() <-chan struct{} { return r.done }

func (r *Recording) deregister() {
	s := r.s
	s.mu.Lock()
	delete(s.putting, r.put)
	if s.running[r.id] != nil {
		delete(s.running, r.id)
	}
	delete(s.recordings, r.id)
	s.mu.Unlock()
}

// isRecording tells whether id is a recording running on this service.
func (s *Service) isRecording(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.recordings[id]
	return ok
}

// present shows a running recording's title as recording.
func (s *Service) present(t Title) Title {
	if t.State == StateProcessing && s.isRecording(t.ID) {
		t.State = StateRecording
	}
	return t
}

// Resume continues the recording after a gap in its source (a publisher
// that dropped and came back with the same tracks within the node's grace
// period): media up to the next keyframe is dropped, and that keyframe is
// placed right after what was recorded and starts a segment, so the title
// plays on without a jump in time (the gap itself is not in the title).
func (r *Recording) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		r.resume = true
	}
}

// toScale converts a media time into ticks of scale per second, rounded.
func toScale(d time.Duration, scale int64) int64 {
	return int64(math.Round(d.Seconds() * float64(scale)))
}

// WriteVideo adds one H.264 access unit (its NAL units without start codes
// or length prefixes). Units before the first keyframe are dropped. A DTS
// that does not advance (a publisher's glitch) is moved just past the
// previous one.
func (r *Recording) WriteVideo(pts, dts time.Duration, key bool, nalus [][]byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrRecordingClosed
	}
	if r.err != nil {
		return r.err
	}
	if !r.started {
		if !key {
			return nil
		}
		r.started, r.origin = true, dts
		r.segStart = toScale(pts-dts, videoTimescale)
		r.lastV = -1
	}
	resumed := false
	if r.resume {
		if !key {
			return nil
		}
		// The new source's keyframe goes right after what was recorded.
		r.resume, resumed = false, true
		end := r.lastV + 1
		if n := len(r.video); n > 0 {
			last := &r.video[n-1]
			if last.dur == 0 {
				last.dur = videoTimescale / 30
				if n > 1 {
					last.dur = r.video[n-2].dur
				}
			}
			end = last.dts + int64(last.dur)
		}
		r.origin = dts - time.Duration(end)*time.Second/videoTimescale
	}
	d, p := toScale(dts-r.origin, videoTimescale), toScale(pts-r.origin, videoTimescale)
	if d <= r.lastV {
		d = r.lastV + 1
	}
	p = max(p, d)
	r.lastV = d
	au := make(h264.AVCC, 0, len(nalus))
	for _, n := range nalus {
		if len(n) > 0 && h264.NALUType(n[0]&0x1f) != h264.NALUTypeAccessUnitDelimiter {
			au = append(au, n)
		}
	}
	if len(au) == 0 {
		return nil
	}
	payload, err := au.Marshal()
	if err != nil {
		return nil // an empty or malformed unit: skip it
	}
	if n := len(r.video); n > 0 {
		r.video[n-1].dur = uint32(d - r.video[n-1].dts)
	}
	r.video = append(r.video, recSample{dts: d, pts: p, key: key, payload: payload})
	if key && (p >= r.boundary || resumed) && len(r.video) > 1 {
		r.cuts = append(r.cuts, cut{idx: len(r.video) - 1, pts: p})
		for r.boundary <= p {
			r.boundary += r.segDur
		}
	}
	if resumed {
		// The segment this keyframe starts comes after every pending cut's
		// segment.
		r.discSeq = append(r.discSeq, r.seq+uint32(len(r.cuts)))
	}
	return r.flush(false)
}

// WriteAudio adds one audio frame (a raw AAC access unit or an Opus
// packet) presented at pts. Frames before the first video keyframe are
// dropped; without an audio track in RecordTracks every frame is.
func (r *Recording) WriteAudio(pts time.Duration, frame []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrRecordingClosed
	}
	if r.err != nil {
		return r.err
	}
	if !r.started || r.resume || r.audioRate == 0 || len(frame) == 0 || pts < r.origin {
		return nil
	}
	a := toScale(pts-r.origin, r.audioRate)
	if r.haveA && a <= r.lastA {
		a = r.lastA + 1
	}
	r.lastA, r.haveA = a, true
	if n := len(r.audio); n > 0 {
		r.audio[n-1].dur = uint32(a - r.audio[n-1].dts)
	}
	r.audio = append(r.audio, recSample{dts: a, pts: a, key: true, payload: bytes.Clone(frame)})
	return r.flush(false)
}

// flush writes every segment whose end is decided and whose audio has
// arrived (or is audioLag late); final writes what is left.
func (r *Recording) flush(final bool) error {
	for len(r.cuts) > 0 {
		c := r.cuts[0]
		if !final && r.audioRate > 0 {
			at := time.Duration(c.pts) * time.Second / videoTimescale
			var audioAt time.Duration
			if n := len(r.audio); n > 0 {
				audioAt = time.Duration(r.audio[n-1].dts) * time.Second / time.Duration(r.audioRate)
			}
			videoAt := time.Duration(r.video[len(r.video)-1].dts) * time.Second / videoTimescale
			if audioAt < at && videoAt-at < audioLag {
				return nil
			}
		}
		if err := r.writeSegment(c.idx, c.pts); err != nil {
			return err
		}
		r.cuts = r.cuts[1:]
		for i := range r.cuts {
			r.cuts[i].idx -= c.idx
		}
	}
	if final && len(r.video) > 0 {
		n := len(r.video)
		if r.video[n-1].dur == 0 {
			r.video[n-1].dur = videoTimescale / 30
			if n > 1 {
				r.video[n-1].dur = r.video[n-2].dur
			}
		}
		end := int64(math.MinInt64)
		for _, s := range r.video {
			end = max(end, s.pts+int64(s.dur))
		}
		return r.writeSegment(n, end)
	}
	return nil
}

// writeSegment stores the video samples before idx and the audio before
// the video time endPTS as one moof+mdat segment, and publishes the grown
// manifest. A failure is sticky: the recording stops growing.
func (r *Recording) writeSegment(idx int, endPTS int64) error {
	v := r.video[:idx]
	part := fmp4.Part{SequenceNumber: r.seq + 1}
	vt := &fmp4.PartTrack{ID: videoTrackID, BaseTime: uint64(v[0].dts)}
	for _, s := range v {
		vt.Samples = append(vt.Samples, &fmp4.Sample{
			Duration: s.dur, PTSOffset: int32(s.pts - s.dts), IsNonSyncSample: !s.key, Payload: s.payload,
		})
		r.maxEnd = max(r.maxEnd, s.pts+int64(s.dur))
	}
	part.Tracks = append(part.Tracks, vt)
	na := 0
	if r.audioRate > 0 {
		end := toScale(time.Duration(endPTS)*time.Second/videoTimescale, r.audioRate)
		for na < len(r.audio) && r.audio[na].dts < end {
			na++
		}
		if na > 0 {
			at := &fmp4.PartTrack{ID: audioTrackID, BaseTime: uint64(r.audio[0].dts)}
			for i := range r.audio[:na] {
				s := &r.audio[i]
				if s.dur == 0 {
					s.dur = r.audioDur
				}
				at.Samples = append(at.Samples, &fmp4.Sample{Duration: s.dur, Payload: s.payload})
			}
			part.Tracks = append(part.Tracks, at)
		}
	}
	var buf seekablebuffer.Buffer
	if err := part.Marshal(&buf); err != nil {
		r.err = fmt.Errorf("record: fMP4 segment %d: %w", r.seq, err)
		return r.err
	}
	ch, err := r.put.Put(bytes.NewReader(buf.Bytes()))
	if err != nil {
		r.err = fmt.Errorf("record: store segment %d: %w", r.seq, err)
		return r.err
	}
	ch.Start = time.Duration(r.segStart) * time.Second / videoTimescale
	ch.Duration = time.Duration(endPTS-r.segStart) * time.Second / videoTimescale
	if len(r.discSeq) > 0 && r.discSeq[0] == r.seq {
		ch.Discontinuity, r.discSeq = true, r.discSeq[1:]
	}
	r.rendition.Segments = append(r.rendition.Segments, ch)
	r.bytes += ch.Size
	r.seq++
	r.segStart = endPTS
	r.video = r.video[idx:]
	r.audio = r.audio[na:]
	if err := r.s.cat.SetRecording(r.id, r.manifest()); err != nil {
		r.err = fmt.Errorf("record: %w", err)
		return r.err
	}
	return nil
}

// manifest is the title's manifest with the segments cut so far.
func (r *Recording) manifest() *Manifest {
	rd := r.rendition
	rd.Segments = append([]Chunk(nil), rd.Segments...) // the recording goes on appending
	if len(rd.Segments) == 0 {
		// Nothing measured yet: the master playlist advertises what the
		// source declared (or a guess), never BANDWIDTH=0.
		rd.Kbps, rd.PeakKbps = r.declared, r.declared
	}
	return singleRenditionManifest(rd, r.bytes)
}

// Close ends the recording: what is queued becomes the last segment and
// the title is ready, a VOD title like any other. cause says why it ended
// (nil: the stream ended or it was stopped) and is logged. A recording
// that never got a keyframe fails. Close after Close returns the title as
// it is.
func (r *Recording) Close(cause error) (Title, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return r.s.Get(r.id)
	}
	r.closed = true
	if r.err == nil {
		r.flush(true)
	}
	segs := len(r.rendition.Segments)
	werr := r.err
	var m *Manifest
	if segs > 0 {
		m = r.manifest()
	}
	r.mu.Unlock()
	defer close(r.done)
	defer r.cancel()
	defer r.deregister()

	s := r.s
	switch {
	case m != nil:
		poster, perr := r.poster(m)
		if perr != nil {
			r.log.Info("no poster for the recording", "err", perr)
		}
		if err := s.cat.SetReady(r.id, m, poster); err != nil {
			if errors.Is(err, ErrTitleNotFound) { // deleted as it closed
				r.deregister()
				s.dropChunks(r.put.put)
			}
			r.log.Warn("recording not finished", "err", err)
			return Title{}, err
		}
		r.log.Info("recording ready", "duration", m.Duration, "segments", segs, "bytes", m.Bytes(), "cause", cause, "write_err", werr)
	default:
		reason := "nothing was recorded: no keyframe arrived"
		if werr != nil {
			reason = werr.Error()
		} else if cause != nil {
			reason = "nothing was recorded: " + cause.Error()
		}
		s.cat.SetFailed(r.id, reason)
		r.deregister()
		s.dropChunks(r.put.put)
	}
	return s.Get(r.id)
}

// poster grabs the title's poster from the segment a tenth of the way in:
// its init section and that segment make a fragmented MP4 to decode.
func (r *Recording) poster(m *Manifest) (Digest, error) {
	rd := m.Renditions[0]
	seg := rd.Segments[len(rd.Segments)/10]
	tmp := filepath.Join(r.s.uploads(), r.id+".poster.part")
	f, err := os.Create(tmp)
	if err != nil {
		return Digest{}, err
	}
	defer os.Remove(tmp)
	for _, d := range []Digest{rd.Init.Digest, seg.Digest} {
		c, _, err := r.s.store.Open(d)
		if err != nil {
			f.Close()
			return Digest{}, err
		}
		_, err = io.Copy(f, c)
		c.Close()
		if err != nil {
			f.Close()
			return Digest{}, err
		}
	}
	if err := f.Close(); err != nil {
		return Digest{}, err
	}
	jpg, err := Poster(tmp, seg.Start)
	if err != nil {
		return Digest{}, err
	}
	c, err := r.put.Put(bytes.NewReader(jpg))
	if err != nil {
		return Digest{}, err
	}
	return c.Digest, nil
}

// abort ends a recording whose title was deleted: its chunks go too.
func (r *Recording) abort() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	r.deregister()
	r.s.dropChunks(r.put.put)
	r.log.Info("recording deleted while it ran")
	close(r.done)
}

// finishRecording makes a title a stopped node left recording ready
// with the segments its manifest lists (each was durable before the
// manifest named it), or fails it when it has none. It reports whether t
// was such a title.
func (s *Service) finishRecording(t Title) bool {
	full, err := s.cat.Get(t.ID)
	if err != nil || full.Manifest == nil || full.State != StateProcessing {
		return false
	}
	m := full.Manifest
	if len(m.Renditions) > 0 && len(m.Renditions[0].Segments) > 0 {
		s.log.Info("a recording the node stopped during is ready with what it holds", "id", t.ID, "duration", m.Duration)
		s.cat.SetReady(t.ID, m, Digest{})
	} else {
		s.cat.SetFailed(t.ID, "the node stopped before anything was recorded")
	}
	return true
}

// EventPlaylist is rendition r's fMP4 media playlist while the title is
// recorded: an EVENT playlist of the segments so far, without
// EXT-X-ENDLIST, whose target duration allows for the segments still to
// come.
func EventPlaylist(m *Manifest, r *Rendition, segment time.Duration, chunkURL func(Digest) string) string {
	return mediaPlaylist(m, r, "EVENT", segment, chunkURL)
}

// serveLivePlaylist serves a playlist that changes: players reload it.
func serveLivePlaylist(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
	w.Header().Set("Cache-Control", "no-cache")
	io.WriteString(w, body)
}
