package serverlet

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/media"
)

// videoClock is the time base of video timestamps inside the runtime.
const videoClock = 90000

// inFrame is what the video path remembers of a frame fed to the decoder,
// to stamp the packet that comes out of the encoder for it.
type inFrame struct {
	pts      int64 // 90 kHz
	fed      time.Time
	received time.Time
	capture  time.Time
}

// videoPath transcodes the H.264 track: decode → the pipeline's filter
// graph → its frame functions → libx264, with the source's keyframes.
type videoPath struct {
	run      *run
	srcTrack *media.Track
	tc       *transcoder // opened on the first unit

	keys    []int64   // source keyframe PTS not matched to an output frame yet
	pending []inFrame // frames fed to the decoder, in order
}

func (v *videoPath) open() (err error) {
	v.tc, err = newTranscoder(v.spec(), decoderOptions{id: astiav.CodecIDH264, threads: v.run.enc.Threads, lowDelay: true})
	return err
}

func (v *videoPath) spec() transcoderSpec {
	return transcoderSpec{
		decodes: "H.264", encodes: "H.264", clock: videoClock,
		graph: v.graph, openEncoder: v.openEncoder, frame: v.frame, onPacket: v.emit,
		decoded: func() { v.run.countFrame(true, 0) },
	}
}

// unit decodes a source access unit itself (serverlets.shared_decode off).
func (v *videoPath) unit(u *media.Unit) error {
	if v.tc == nil {
		if err := v.open(); err != nil {
			return err
		}
	}
	b, pts, err := annexBPacket(u, v.srcTrack)
	if err != nil {
		return err
	}
	if u.Key {
		v.keys = append(v.keys, pts)
	}
	in := inFrame{pts: pts, fed: time.Now(), received: u.Received}
	if t, ok := media.CaptureTime(u.Data); ok {
		in.capture = t
	}
	v.remember(in)
	return v.tc.decode(b, pts, media.DurationToTicks(u.DTS, videoClock), u.Key)
}

// decoded takes a picture from the shared decoder through the filters and
// the encoder; the caller frees it.
func (v *videoPath) decoded(it feedItem) error {
	if v.tc == nil {
		v.tc = newFilterEncoder(v.spec())
	}
	v.run.countFrame(true, 0)
	if it.key {
		v.keys = append(v.keys, it.info.pts)
	}
	v.remember(it.info)
	var tap func(*astiav.Frame)
	if it.pics != nil && v.run.pipe.onlyScales() {
		// This rung's picture is the source's scaled: smaller rungs after
		// it on the decoder's thread may scale it further.
		tap = func(f *astiav.Frame) { it.pics.add(f, v.run.rend) }
	}
	return v.tc.filter(it.frame, tap)
}

func (v *videoPath) remember(in inFrame) {
	v.pending = append(v.pending, in)
	if len(v.pending) > 256 { // a decoder that swallows frames must not grow this forever
		v.pending = v.pending[1:]
	}
}

// graph is the pipeline's filter graph after a buffer source of the
// decoded frames' format.
func (v *videoPath) graph(f *astiav.Frame) (string, astiav.FilterArgs, string, string) {
	spec := v.run.pipe.filterGraph()
	v.run.log.Debug("filter graph", "graph", spec)
	return "buffer", bufferArgs(f, v.run.pipe.In.FPS), "buffersink", spec
}

// bufferArgs are the arguments of a buffer source of pictures like f, PTS
// in 1/videoClock, at fps (0: 30).
func bufferArgs(f *astiav.Frame, fps float64) astiav.FilterArgs {
	if fps <= 0 {
		fps = 30
	}
	sar := f.SampleAspectRatio()
	if sar.Num() <= 0 || sar.Den() <= 0 {
		sar = astiav.NewRational(1, 1)
	}
	return astiav.FilterArgs{
		"video_size":   fmt.Sprintf("%dx%d", f.Width(), f.Height()),
		"pix_fmt":      strconv.Itoa(int(f.PixelFormat())),
		"time_base":    "1/" + strconv.Itoa(videoClock),
		"pixel_aspect": fmt.Sprintf("%d/%d", sar.Num(), sar.Den()),
		"frame_rate":   fmt.Sprintf("%d/1000", int(fps*1000+0.5)),
	}
}

// frame decides whether a filtered frame is a keyframe and runs the
// pipeline's frame functions on it.
func (v *videoPath) frame(f *astiav.Frame) error {
	pts := f.Pts()
	// The output's keyframes are the source's: the first frame at (or
	// within half an output frame of) a source keyframe becomes an IDR.
	tol := int64(0)
	if v.run.pipe.FPS > 0 {
		tol = int64(videoClock / v.run.pipe.FPS / 2)
	}
	key := false
	for len(v.keys) > 0 && v.keys[0] <= pts+tol {
		key = true
		v.keys = v.keys[1:]
	}
	if fs := v.run.pipe.frames; len(fs) > 0 {
		if err := makeWritable(f); err != nil {
			return err
		}
		fr := &Frame{f: f, PTS: media.TicksToDuration(pts, videoClock), Key: key}
		for _, fn := range fs {
			if err := callFrameFunc(fn, fr); err != nil {
				return err
			}
		}
	}
	if key {
		f.SetPictureType(astiav.PictureTypeI)
	} else {
		f.SetPictureType(astiav.PictureTypeNone)
	}
	return nil
}

// callFrameFunc runs an operator's function, turning a panic into an error
// so that a faulty plugin stops only its rendition.
func callFrameFunc(fn FrameFunc, f *Frame) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("frame function panicked: %v", p)
		}
	}()
	if err := fn(f); err != nil {
		return fmt.Errorf("frame function: %w", err)
	}
	return nil
}

// openEncoder opens libx264 for the first filtered frame and publishes the
// rendition with its SPS/PPS.
func (v *videoPath) openEncoder(f *astiav.Frame) (*astiav.CodecContext, error) {
	p := v.run.pipe
	bitrate := p.Bitrate
	if bitrate <= 0 {
		est := *p
		est.Width, est.Height = f.Width(), f.Height()
		bitrate = est.estimateBitrate()
	}
	enc, sps, pps, err := openX264(f.Width(), f.Height(), p.FPS, bitrate, v.run.enc)
	if err != nil {
		return enc, err
	}
	for i, t := range v.run.desc.Tracks {
		if t.Codec == media.CodecH264 {
			v.run.desc.Tracks[i] = &media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps}
		}
	}
	return enc, v.run.publish()
}

// openX264 opens libx264 for w×h pictures (yuv420p, PTS in 1/videoClock)
// at bitrate bit/s CBR: zerolatency, no B-frames, SPS/PPS before every
// IDR, keyframes only where the frames say (pict_type I). An encoder it
// returns with an error is still the caller's to free.
func openX264(w, h int, fps float64, bitrate int, cfg EncoderConfig) (enc *astiav.CodecContext, sps, pps []byte, err error) {
	codec := astiav.FindEncoderByName("libx264")
	if codec == nil {
		return nil, nil, nil, errors.New("this FFmpeg has no libx264 encoder")
	}
	if fps <= 0 {
		fps = 30
	}
	enc = astiav.AllocCodecContext(codec)
	enc.SetWidth(w)
	enc.SetHeight(h)
	enc.SetPixelFormat(astiav.PixelFormatYuv420P)
	enc.SetTimeBase(astiav.NewRational(1, videoClock))
	enc.SetFramerate(astiav.NewRational(int(fps*1000+0.5), 1000))
	enc.SetSampleAspectRatio(astiav.NewRational(1, 1))
	enc.SetThreadCount(cfg.Threads)
	// The global header gives SPS/PPS before hub.Publish; repeat-headers
	// keeps them in band before every IDR for readers joining later.
	enc.SetFlags(enc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	b := strconv.Itoa(bitrate)
	opts := astiav.NewDictionary()
	defer opts.Free()
	for _, kv := range [][2]string{
		{"preset", cfg.Preset},
		{"tune", "zerolatency"},
		{"b", b},
		{"maxrate", b},
		{"bufsize", b},
		{"bf", "0"},
		{"g", "-1"},
		{"sc_threshold", "0"},
		{"forced-idr", "1"},
		// keyint=infinite: x264 never places a keyframe of its own; they
		// come only where the source has them (pict_type I).
		{"x264-params", "keyint=infinite:min-keyint=1:scenecut=0:open-gop=0:repeat-headers=1:aud=0:log=-1"},
	} {
		if err := opts.Set(kv[0], kv[1], 0); err != nil {
			return enc, nil, nil, fmt.Errorf("libx264 option %s: %w", kv[0], err)
		}
	}
	if err := enc.Open(codec, opts); err != nil {
		return enc, nil, nil, fmt.Errorf("open libx264 (preset %s): %w", cfg.Preset, err)
	}
	sps, pps = media.ParameterSets(enc.ExtraData())
	if sps == nil || pps == nil {
		return enc, nil, nil, errors.New("libx264 gave no SPS/PPS")
	}
	return enc, sps, pps, nil
}

// emit writes one libx264 packet to the rendition, stamped with the
// arrival and capture time of the source frame it came from.
func (v *videoPath) emit(pkt *astiav.Packet) error {
	var au h264.AnnexB
	if err := au.Unmarshal(pkt.Data()); err != nil {
		return fmt.Errorf("libx264 output: %w", err)
	}
	pts := pkt.Pts()
	var in inFrame
	found := false
	for len(v.pending) > 0 && v.pending[0].pts <= pts {
		in, found = v.pending[0], true
		v.pending = v.pending[1:]
	}
	now := time.Now()
	if !found {
		in = inFrame{pts: pts, fed: now, received: now}
	}
	data := [][]byte(au)
	if !in.capture.IsZero() {
		data = append([][]byte{media.CaptureSEI(in.capture)}, data...)
	}
	t := media.TicksToDuration(pts, videoClock)
	v.run.write(&media.Unit{
		Track:    v.run.outIdx[v.run.srcDesc.VideoTrack()],
		PTS:      t,
		DTS:      t,
		Data:     data,
		Key:      pkt.Flags().Has(astiav.PacketFlagKey),
		Received: in.received,
	})
	v.run.countFrame(false, now.Sub(in.fed))
	return nil
}

func (v *videoPath) close() {
	if v.tc != nil {
		v.tc.close()
	}
}
