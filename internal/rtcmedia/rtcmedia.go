// Package rtcmedia registers the codecs Gradient speaks over WebRTC (H.264
// and Opus; VP8 and VP9 from WHIP publishers, transcoded) in a pion MediaEngine, the same way for WHEP egress and WHIP
// ingest, which share one ICE port.
package rtcmedia

import (
	"fmt"

	"github.com/pion/webrtc/v4"
)

// RegisterH264Opus registers one H.264 codec per profile (profile_idc and
// constraints as six hex digits, any level; packetization mode 1) with the
// RTCP feedback fb, on payload types 102, 104, …, and Opus (48 kHz stereo,
// in-band FEC) on 111. The payload types an answer uses are the offer's.
func RegisterH264Opus(me *webrtc.MediaEngine, profiles []string, fb []webrtc.RTCPFeedback) error {
	for i, p := range profiles {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p,
				RTCPFeedback: fb,
			},
			PayloadType: webrtc.PayloadType(102 + 2*i),
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return fmt.Errorf("register H264 %s: %w", p, err)
		}
	}
	return registerOpus(me)
}

// RegisterVPXOpus registers VP8 (payload type 96) and VP9 profile 0 (98)
// with the RTCP feedback fb, and Opus as RegisterH264Opus: what a WHIP
// publisher without H.264 sends, for a node that transcodes it.
func RegisterVPXOpus(me *webrtc.MediaEngine, fb []webrtc.RTCPFeedback) error {
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 96},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0", RTCPFeedback: fb}, PayloadType: 98},
	} {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return fmt.Errorf("register %s: %w", c.MimeType, err)
		}
	}
	return registerOpus(me)
}

func registerOpus(me *webrtc.MediaEngine) error {
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
		},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return fmt.Errorf("register Opus: %w", err)
	}
	return nil
}
