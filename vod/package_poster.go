package vod

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/asticode/go-astiav"
)

// posterMaxWidth bounds the poster's width; its height keeps the aspect.
const posterMaxWidth = 640

// Poster decodes one video frame of src at or just after at (the last one
// decoded if the stream ends first) and returns it as a JPEG no wider than
// 640 pixels.
func Poster(src string, at time.Duration) ([]byte, error) {
	in, err := openInput(src)
	if err != nil {
		return nil, fmt.Errorf("poster of %s: %w", src, err)
	}
	defer in.close()
	b, err := poster(in, at)
	if err != nil {
		return nil, fmt.Errorf("poster of %s at %s: %w", src, at, err)
	}
	return b, nil
}

func poster(in *input, at time.Duration) ([]byte, error) {
	vs := in.video
	cp := vs.CodecParameters()
	codec := astiav.FindDecoder(cp.CodecID())
	if codec == nil {
		return nil, fmt.Errorf("no FFmpeg decoder for %s", cp.CodecID().Name())
	}
	dec := astiav.AllocCodecContext(codec)
	if dec == nil {
		return nil, errors.New("FFmpeg could not allocate a decoder")
	}
	defer dec.Free()
	if err := dec.FromCodecParameters(cp); err != nil {
		return nil, fmt.Errorf("decoder parameters: %w", err)
	}
	if err := dec.Open(codec, nil); err != nil {
		return nil, fmt.Errorf("open %s decoder: %w", cp.CodecID().Name(), err)
	}
	tb := vs.TimeBase()
	target := astiav.RescaleQ(int64(at/time.Microsecond), astiav.NewRational(1, 1000000), tb)
	if st := vs.StartTime(); st != astiav.NoPtsValue {
		target += st
	}
	if at > 0 {
		// A file that cannot seek is decoded from its start instead.
		_ = in.fc.SeekFrame(vs.Index(), target, astiav.NewSeekFlags(astiav.SeekFlagBackward))
	}

	pkt, tmp, frm := astiav.AllocPacket(), astiav.AllocFrame(), astiav.AllocFrame()
	defer pkt.Free()
	defer tmp.Free()
	defer frm.Free()
	got, done := false, false
	// receive keeps the latest decoded frame in frm; done once it is at or
	// after the target.
	receive := func() error {
		for {
			if err := dec.ReceiveFrame(tmp); err != nil {
				if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
					return nil
				}
				return fmt.Errorf("decode: %w", err)
			}
			frm.Unref()
			frm.MoveRef(tmp)
			got = true
			if pts := frm.Pts(); pts == astiav.NoPtsValue || pts >= target {
				done = true
				return nil
			}
		}
	}
	const maxPackets = 5000 // past this, take the latest frame
	for n := 0; !done && !(got && n > maxPackets); n++ {
		err := in.fc.ReadFrame(pkt)
		if errors.Is(err, astiav.ErrEof) {
			if err := dec.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
				return nil, fmt.Errorf("decode: %w", err)
			}
			if err := receive(); err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			if got {
				break // a damaged tail: the frame so far will do
			}
			return nil, fmt.Errorf("read: FFmpeg: %w", err)
		}
		if pkt.StreamIndex() != vs.Index() {
			pkt.Unref()
			continue
		}
		err = dec.SendPacket(pkt)
		pkt.Unref()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			continue // a damaged packet; later ones may decode
		}
		if err := receive(); err != nil {
			return nil, err
		}
	}
	if !got {
		return nil, errors.New("no video frame could be decoded")
	}
	return encodeJPEG(frm)
}

// encodeJPEG scales f to at most posterMaxWidth wide, in full range
// 4:2:0 (what JPEG holds), and encodes it with FFmpeg's mjpeg encoder.
func encodeJPEG(f *astiav.Frame) ([]byte, error) {
	w, h := f.Width(), f.Height()
	if w <= 0 || h <= 0 {
		return nil, errors.New("decoded frame without a size")
	}
	if w > posterMaxWidth {
		h = h * posterMaxWidth / w
		w = posterMaxWidth
	}
	w, h = max(2, w&^1), max(2, h&^1)
	st := &stage{name: "poster", filt: astiav.AllocFrame(), encPkt: astiav.AllocPacket()}
	defer st.close()
	codec := astiav.FindEncoder(astiav.CodecIDMjpeg)
	if codec == nil {
		return nil, errors.New("FFmpeg has no mjpeg encoder")
	}
	if st.enc = astiav.AllocCodecContext(codec); st.enc == nil {
		return nil, errors.New("FFmpeg could not allocate an encoder")
	}
	st.enc.SetWidth(w)
	st.enc.SetHeight(h)
	// yuv420p holding full-range samples: FFmpeg calls that unofficial,
	// yet it is exactly a JFIF's, without the deprecated yuvj formats.
	st.enc.SetPixelFormat(astiav.PixelFormatYuv420P)
	st.enc.SetStrictStdCompliance(astiav.StrictStdComplianceUnofficial)
	st.enc.SetTimeBase(astiav.NewRational(1, 25))
	if err := st.enc.Open(codec, nil); err != nil {
		return nil, fmt.Errorf("open mjpeg encoder: %w", err)
	}
	st.graphFor = func(f *astiav.Frame) (string, astiav.FilterArgs, string, string) {
		return "buffer", videoBufferArgs(f, astiav.NewRational(1, 25)), "buffersink", fmt.Sprintf("scale=%d:%d:out_range=full,format=yuv420p", w, h)
	}
	var jpg []byte
	st.emit = func(pkt *astiav.Packet) error {
		if jpg == nil {
			jpg = bytes.Clone(pkt.Data())
		}
		return nil
	}
	f.SetPts(0)
	if err := st.filter(f); err != nil {
		return nil, err
	}
	if err := st.filter(nil); err != nil {
		return nil, err
	}
	if jpg == nil {
		return nil, errors.New("the mjpeg encoder gave no picture")
	}
	return jpg, nil
}
