package testutil

import (
	"errors"
	"fmt"
	"testing"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// Frame is one decoded picture in planar YUV 4:2:0.
type Frame struct {
	Width, Height int
	PTS           int64  // as given to Decode
	Y, U, V       []byte // tightly packed planes
}

// H264Decoder decodes H.264 access units with FFmpeg.
type H264Decoder struct {
	cc  *astiav.CodecContext
	pkt *astiav.Packet
	frm *astiav.Frame
}

// NewH264Decoder opens FFmpeg's H.264 decoder.
func NewH264Decoder() (*H264Decoder, error) {
	codec := astiav.FindDecoder(astiav.CodecIDH264)
	if codec == nil {
		return nil, errors.New("no H.264 decoder in this FFmpeg")
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return nil, errors.New("alloc codec context")
	}
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("open H.264 decoder: %w", err)
	}
	return &H264Decoder{cc: cc, pkt: astiav.AllocPacket(), frm: astiav.AllocFrame()}, nil
}

// DecodeSized decodes one access unit like Decode and fails the test on
// a decode error or a picture that is not w×h; it returns how many
// pictures the unit completed. what names the unit in the failure.
func (d *H264Decoder) DecodeSized(t testing.TB, au [][]byte, pts int64, w, h int, what string) int {
	t.Helper()
	fs, err := d.Decode(au, pts)
	if err != nil {
		t.Fatalf("decode %s: %v", what, err)
	}
	for _, f := range fs {
		if f.Width != w || f.Height != h {
			t.Fatalf("decoded %dx%d, want %dx%d", f.Width, f.Height, w, h)
		}
	}
	return len(fs)
}

// Decode feeds one access unit (NAL units without start codes) and returns
// the pictures it completed.
func (d *H264Decoder) Decode(au [][]byte, pts int64) ([]Frame, error) {
	b, err := h264.AnnexB(au).Marshal()
	if err != nil {
		return nil, err
	}
	if err := d.pkt.FromData(b); err != nil {
		return nil, err
	}
	d.pkt.SetPts(pts)
	d.pkt.SetDts(pts)
	defer d.pkt.Unref()
	if err := d.cc.SendPacket(d.pkt); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var out []Frame
	for {
		if err := d.cc.ReceiveFrame(d.frm); err != nil {
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				return out, nil
			}
			return out, fmt.Errorf("decode: %w", err)
		}
		f, err := copyFrame(d.frm)
		d.frm.Unref()
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

func copyFrame(src *astiav.Frame) (Frame, error) {
	w, h := src.Width(), src.Height()
	if src.PixelFormat() != astiav.PixelFormatYuv420P && src.PixelFormat() != astiav.PixelFormatYuvj420P {
		return Frame{}, fmt.Errorf("decoded pixel format %s, want yuv420p", src.PixelFormat())
	}
	b, err := src.Data().Bytes(1)
	if err != nil {
		return Frame{}, err
	}
	ys, cs := w*h, ((w+1)/2)*((h+1)/2)
	if len(b) < ys+2*cs {
		return Frame{}, fmt.Errorf("short frame: %d bytes for %dx%d", len(b), w, h)
	}
	return Frame{Width: w, Height: h, PTS: src.Pts(), Y: b[:ys], U: b[ys : ys+cs], V: b[ys+cs : ys+2*cs]}, nil
}

// Close frees the decoder.
func (d *H264Decoder) Close() {
	d.frm.Free()
	d.pkt.Free()
	d.cc.Free()
}
