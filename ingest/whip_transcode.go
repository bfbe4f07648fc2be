package ingest

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/media"
)

// VideoTranscoder turns a publisher's video in a codec the hub does not
// carry into H.264 access units (serverlet.IngestTranscoder).
type VideoTranscoder interface {
	// Transcode takes one compressed frame, its presentation time and
	// whether it is a keyframe; it returns the access units completed.
	Transcode(frame []byte, pts time.Duration, key bool) ([]*media.Unit, error)
	// ParameterSets are the H.264 SPS and PPS once the first frame is
	// encoded.
	ParameterSets() (sps, pps []byte)
	Close()
}

// NewVideoTranscoder opens a transcoder from codec ("VP8", "VP9").
type NewVideoTranscoder func(codec string) (VideoTranscoder, error)

// whipTranscode is the video of a WHIP publisher that sends VP8 or VP9:
// its RTP packets become frames, and the frames H.264 access units of
// the session's video track. The video track's reader goroutine only.
type whipTranscode struct {
	codec   string // "VP8", "VP9"
	tc      VideoTranscoder
	vp8     *rtpvp8.Decoder
	vp9     *rtpvp9.Decoder
	index   int   // the video track
	clock   int64 // RTP clock rate
	waitKey bool  // after a loss or an error, until the next keyframe
	errs    int
	log     *slog.Logger
}

func newWHIPTranscode(codec string, tc VideoTranscoder, index int, clock int64, log *slog.Logger) (*whipTranscode, error) {
	v := &whipTranscode{codec: strings.ToUpper(codec), tc: tc, index: index, clock: clock, waitKey: true, log: log}
	switch v.codec {
	case "VP8":
		v.vp8 = &rtpvp8.Decoder{}
		return v, v.vp8.Init()
	case "VP9":
		v.vp9 = &rtpvp9.Decoder{}
		return v, v.vp9.Init()
	}
	return nil, errors.New("no depacketizer for " + codec)
}

// lost makes video wait for the next keyframe (which the caller asks for).
func (v *whipTranscode) lost() { v.waitKey = true }

// decode takes one in-order packet, pts its time in ticks of the clock,
// and returns the H.264 units of the frame it completed, if any.
func (v *whipTranscode) decode(pkt *rtp.Packet, pts int64, now time.Time) []*media.Unit {
	var frame []byte
	var err error
	if v.vp8 != nil {
		frame, err = v.vp8.Decode(pkt)
		if errors.Is(err, rtpvp8.ErrMorePacketsNeeded) || errors.Is(err, rtpvp8.ErrNonStartingPacketAndNoPrevious) {
			return nil
		}
	} else {
		frame, err = v.vp9.Decode(pkt)
		if errors.Is(err, rtpvp9.ErrMorePacketsNeeded) || errors.Is(err, rtpvp9.ErrNonStartingPacketAndNoPrevious) {
			return nil
		}
	}
	if err == nil && len(frame) == 0 {
		err = errors.New("empty frame")
	}
	if err != nil {
		v.fail("depacketize", err)
		return nil
	}
	key := vpxKeyframe(v.codec, frame)
	if v.waitKey {
		if !key {
			return nil
		}
		v.waitKey = false
	}
	units, err := v.tc.Transcode(frame, media.TicksToDuration(pts, v.clock), key)
	if err != nil {
		v.fail("transcode", err)
		return nil
	}
	for _, u := range units {
		u.Track, u.Received = v.index, now
	}
	return units
}

// fail makes video wait for a keyframe and logs the first error and every
// hundredth.
func (v *whipTranscode) fail(stage string, err error) {
	v.waitKey = true
	v.errs++
	if v.errs == 1 || v.errs%100 == 0 {
		v.log.Info("whip "+v.codec+" "+stage+" error, waiting for the next keyframe", "err", err, "errors", v.errs)
	}
}

func (v *whipTranscode) close() { v.tc.Close() }

// vpxKeyframe tells whether a VP8 or VP9 frame is a keyframe, from its
// first bits (RFC 6386 9.1: VP8's frame tag, bit 0 is 0 for a key frame;
// VP9's uncompressed header: frame marker, profile, show_existing_frame,
// frame_type 0 for a key frame).
func vpxKeyframe(codec string, frame []byte) bool {
	if len(frame) == 0 {
		return false
	}
	b := frame[0]
	if codec == "VP8" {
		return b&0x01 == 0
	}
	if b>>6 != 2 { // frame_marker
		return false
	}
	profile := (b>>5)&1 | ((b>>4)&1)<<1
	bit := 3 // the next bit after the profile, counting down from bit 7
	if profile == 3 {
		bit-- // reserved_zero
	}
	if (b>>bit)&1 == 1 { // show_existing_frame
		return false
	}
	return (b>>(bit-1))&1 == 0 // frame_type
}
