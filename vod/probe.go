package vod

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/asticode/go-astiav"
)

// ProbeInfo is what FFmpeg says a source file holds.
type ProbeInfo struct {
	// Container is FFmpeg's demuxer name ("mov,mp4,m4a,3gp,3g2,mj2",
	// "matroska,webm", "mpegts").
	Container string        `json:"container"`
	Duration  time.Duration `json:"duration"`
	// VideoCodec and AudioCodec are FFmpeg codec names ("h264", "aac");
	// AudioCodec is empty when there is no audio.
	VideoCodec string `json:"video_codec"`
	Width      int    `json:"width"`
	Height     int    `json:"height"`
	AudioCodec string `json:"audio_codec,omitempty"`
}

// ErrNotMedia is wrapped by the error for a file FFmpeg cannot read as
// media; ErrNoVideo by the one for a file without a video stream.
var (
	ErrNotMedia = errors.New("not a media file")
	ErrNoVideo  = errors.New("no video stream")
)

// input is an opened source: the demuxer and its chosen streams.
type input struct {
	fc           *astiav.FormatContext
	intr         astiav.IOInterrupter
	video, audio *astiav.Stream
}

// openInput opens src and picks its first video stream (cover art is not
// video) and first audio stream. The caller closes the input.
func openInput(src string) (*input, error) {
	if _, err := os.Stat(src); err != nil {
		return nil, err // missing is not "not media"
	}
	fc := astiav.AllocFormatContext()
	if fc == nil {
		return nil, errors.New("open input: FFmpeg could not allocate a format context")
	}
	in := &input{fc: fc, intr: fc.SetInterruptCallback()}
	if err := fc.OpenInput(src, nil, nil); err != nil {
		// avformat_open_input frees the context when it fails.
		fc.Free()
		return nil, fmt.Errorf("%w (FFmpeg: %v)", ErrNotMedia, err)
	}
	if err := fc.FindStreamInfo(nil); err != nil {
		in.close()
		return nil, fmt.Errorf("%w (FFmpeg %s demuxer: %v)", ErrNotMedia, fc.InputFormat().Name(), err)
	}
	var still *astiav.Stream // a picture (cover art) in a video slot
	for _, s := range fc.Streams() {
		cp := s.CodecParameters()
		switch cp.MediaType() {
		case astiav.MediaTypeVideo:
			if id := cp.CodecID(); id == astiav.CodecIDMjpeg || id == astiav.CodecIDPng {
				if still == nil {
					still = s
				}
			} else if in.video == nil {
				in.video = s
			}
		case astiav.MediaTypeAudio:
			if in.audio == nil {
				in.audio = s
			}
		}
	}
	if in.video == nil {
		in.video = still
	}
	if in.video == nil {
		name, n := fc.InputFormat().Name(), fc.NbStreams()
		in.close()
		return nil, fmt.Errorf("%w (FFmpeg %s demuxer found %d stream(s), none of them video)", ErrNoVideo, name, n)
	}
	if cp := in.video.CodecParameters(); cp.Width() <= 0 || cp.Height() <= 0 {
		id, name := cp.CodecID(), fc.InputFormat().Name()
		in.close()
		return nil, fmt.Errorf("%w (FFmpeg %s demuxer: %s video stream without a frame size; truncated or damaged file?)", ErrNotMedia, name, id.Name())
	}
	return in, nil
}

func (in *input) close() {
	if in.fc != nil {
		in.fc.CloseInput()
		in.fc.Free()
		in.fc = nil
	}
}

// duration is the container's duration, or the video stream's.
func (in *input) duration() time.Duration {
	if d := in.fc.Duration(); d > 0 && d != astiav.NoPtsValue {
		return time.Duration(d) * time.Microsecond // AV_TIME_BASE
	}
	if d := in.video.Duration(); d > 0 && d != astiav.NoPtsValue {
		return tsDuration(d, in.video.TimeBase())
	}
	return 0
}

func (in *input) info() ProbeInfo {
	v := in.video.CodecParameters()
	p := ProbeInfo{
		Container:  in.fc.InputFormat().Name(),
		Duration:   in.duration(),
		VideoCodec: v.CodecID().Name(),
		Width:      v.Width(),
		Height:     v.Height(),
	}
	if in.audio != nil {
		p.AudioCodec = in.audio.CodecParameters().CodecID().Name()
	}
	return p
}

// Probe opens src with FFmpeg and says what it holds. A file FFmpeg cannot
// read gives an error wrapping ErrNotMedia, one without video ErrNoVideo;
// both name what FFmpeg saw.
func Probe(src string) (ProbeInfo, error) {
	in, err := openInput(src)
	if err != nil {
		return ProbeInfo{}, fmt.Errorf("probe %s: %w", src, err)
	}
	defer in.close()
	return in.info(), nil
}

// tsDuration converts ts in time base tb into a duration.
func tsDuration(ts int64, tb astiav.Rational) time.Duration {
	return time.Duration(astiav.RescaleQ(ts, tb, astiav.NewRational(1, int(time.Second))))
}
