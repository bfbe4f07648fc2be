package serverlet

import (
	"fmt"

	"github.com/gradient-cdn/gradient/media"
)

// audio: "audio opus [96k]" transcodes the source's AAC to Opus at 48 kHz
// so that WebRTC viewers hear it; "audio aac [128k]" transcodes Opus (a
// WHIP or WebRTC publisher's) to AAC-LC for players that take AAC only
// (MPEG-TS HLS, RTSP readers); "audio drop" removes the audio. The
// video passes through untouched unless another serverlet in the chain
// changes it.
func init() { RegisterBuiltin("audio", newAudio) }

type audioServerlet struct {
	mode    AudioMode
	bitrate int
}

func newAudio(a Args) (Serverlet, error) {
	pos := a.Positional()
	if len(pos) == 0 || len(pos) > 2 {
		return nil, fmt.Errorf("want 'opus [bitrate]', 'aac [bitrate]' or 'drop'")
	}
	s := &audioServerlet{bitrate: 64000}
	switch pos[0] {
	case "opus":
		s.mode = AudioOpus
	case "aac":
		s.mode, s.bitrate = AudioAAC, 128000
	case "drop":
		s.mode = AudioDrop
	default:
		return nil, fmt.Errorf("unknown audio mode %q (opus, aac, drop)", pos[0])
	}
	if len(pos) == 2 {
		b, err := ParseBitrate(pos[1])
		if err != nil {
			return nil, err
		}
		s.bitrate = b
	}
	return s, nil
}

func (s *audioServerlet) Setup(p *Pipeline) error {
	switch {
	case s.mode == AudioDrop:
		p.Audio = AudioDrop
	case p.In.Audio == "":
		return fmt.Errorf("%w: the source has no audio", ErrNoSuchRendition)
	case s.mode == AudioAAC && p.In.Audio == media.CodecAAC:
		p.Audio = AudioCopy // already AAC
	case s.mode == AudioAAC:
		p.Audio, p.AACBitrate = AudioAAC, s.bitrate
	case p.In.Audio == media.CodecOpus:
		p.Audio = AudioCopy // already what WebRTC plays
	default:
		p.Audio, p.OpusBitrate = AudioOpus, s.bitrate
	}
	return nil
}
