// Package rtcmedia registers the codecs Gradient speaks over WebRTC (H.264
// and Opus) in a pion MediaEngine, the same way for WHEP egress and WHIP
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
