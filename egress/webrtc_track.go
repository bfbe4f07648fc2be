package egress

import (
	"strings"

	"github.com/pion/webrtc/v4"
)

// sessionTrack is the TrackLocal of one session; binding hands the
// negotiated SSRC, payload type and writer to the session, and the feed
// writes the shared packets through it.
type sessionTrack struct {
	s       *whepSession
	kind    webrtc.RTPCodecType
	profile string // H.264 profile_idc of the stream, as 2 hex digits
}

func (t *sessionTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	c, ok := t.pick(ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), ws: ctx.WriteStream()}
	if t.kind == webrtc.RTPCodecTypeVideo {
		t.s.video.Store(b)
	} else {
		t.s.audio.Store(b)
	}
	return c, nil
}

// pick chooses the negotiated codec: H.264 with packetization-mode=1,
// the stream's own profile if offered, else constrained baseline, else any;
// Opus for audio.
func (t *sessionTrack) pick(cs []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	if t.kind == webrtc.RTPCodecTypeAudio {
		for _, c := range cs {
			if strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus) {
				return c, true
			}
		}
		return webrtc.RTPCodecParameters{}, false
	}
	best, score := webrtc.RTPCodecParameters{}, 0
	for _, c := range cs {
		if !strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) {
			continue
		}
		f := strings.ToLower(c.SDPFmtpLine)
		if !strings.Contains(f, "packetization-mode=1") {
			continue
		}
		sc := 1
		if i := strings.Index(f, "profile-level-id="); i >= 0 && len(f) >= i+17+6 {
			pl := f[i+17 : i+17+6]
			switch {
			case t.profile != "" && pl[:2] == t.profile:
				sc = 3
			case pl[:4] == "42e0":
				sc = 2
			}
		}
		if sc > score {
			best, score = c, sc
		}
	}
	return best, score > 0
}

func (t *sessionTrack) Unbind(webrtc.TrackLocalContext) error {
	if t.kind == webrtc.RTPCodecTypeVideo {
		t.s.video.Store(nil)
	} else {
		t.s.audio.Store(nil)
	}
	return nil
}

func (t *sessionTrack) ID() string {
	if t.kind == webrtc.RTPCodecTypeVideo {
		return "video"
	}
	return "audio"
}

func (t *sessionTrack) RID() string               { return "" }
func (t *sessionTrack) StreamID() string          { return "gradient" }
func (t *sessionTrack) Kind() webrtc.RTPCodecType { return t.kind }
