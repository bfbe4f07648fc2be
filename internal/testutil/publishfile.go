package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/abema/go-mp4"
	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gradient-cdn/gradient/media"
)

// PublishFile publishes a Matroska/MP4 clip with H.264 video (and AAC or
// Opus audio) into hub at path, paced in real time and looping, until the
// test ends or the returned stop function is called. It bypasses every
// protocol, so that egress tests have a source that does not depend on
// ingest. When sei is true every video access unit carries a capture-time
// SEI (the time it is written), as `gradient publish --testsrc` does.
func PublishFile(t testing.TB, hub *media.Hub, path, clip string, sei bool) (stop func()) {
	t.Helper()
	src, err := openClip(clip)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := hub.Publish(path, src.desc, "file "+clip)
	if err != nil {
		src.close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer pub.Close()
		defer func() { src.close() }()
		start := time.Now()
		var offset time.Duration
		for ctx.Err() == nil {
			u, err := src.next()
			if errors.Is(err, astiav.ErrEof) {
				offset += src.last + 40*time.Millisecond
				// Loop as ffmpeg's -stream_loop does: seek back to the
				// start (no new probe, which decodes pictures); reopen
				// where the container cannot seek.
				if src.fc.SeekFrame(-1, 0, astiav.NewSeekFlags(astiav.SeekFlagBackward)) == nil {
					continue
				}
				src.close()
				if src, err = openClip(clip); err != nil {
					t.Errorf("reopen clip: %v", err)
					return
				}
				continue
			}
			if err != nil {
				t.Errorf("read clip: %v", err)
				return
			}
			u.PTS += offset
			u.DTS += offset
			if wait := time.Until(start.Add(u.DTS)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
			if sei && u.Track == src.desc.VideoTrack() {
				u.Data = append([][]byte{media.CaptureSEI(time.Now())}, u.Data...)
			}
			u.Received = time.Now()
			pub.Write(u)
		}
	}()
	var stopped bool
	stopFn := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stopFn)
	return stopFn
}

type clipSource struct {
	fc      *astiav.FormatContext
	pkt     *astiav.Packet
	desc    media.Description
	index   map[int]int // astiav stream index → track
	tbs     map[int]astiav.Rational
	first   time.Duration
	hasBase bool
	last    time.Duration
}

func openClip(path string) (*clipSource, error) {
	fc := astiav.AllocFormatContext()
	if err := fc.OpenInput(path, nil, nil); err != nil {
		fc.Free()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := fc.FindStreamInfo(nil); err != nil {
		fc.CloseInput()
		fc.Free()
		return nil, fmt.Errorf("probe %s: %w", path, err)
	}
	s := &clipSource{fc: fc, pkt: astiav.AllocPacket(), index: map[int]int{}, tbs: map[int]astiav.Rational{}}
	for _, st := range fc.Streams() {
		cp := st.CodecParameters()
		var tr *media.Track
		switch cp.CodecID() {
		case astiav.CodecIDH264:
			sps, pps, err := parseAVCC(cp.ExtraData())
			if err != nil {
				s.close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			tr = &media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps}
		case astiav.CodecIDAac:
			var conf mpeg4audio.AudioSpecificConfig
			if err := conf.Unmarshal(cp.ExtraData()); err != nil {
				s.close()
				return nil, fmt.Errorf("%s: AAC config: %w", path, err)
			}
			tr = &media.Track{Codec: media.CodecAAC, AAC: &conf, SampleRate: cp.SampleRate(), Channels: cp.ChannelLayout().NbChannels()}
		case astiav.CodecIDOpus:
			tr = &media.Track{Codec: media.CodecOpus, SampleRate: 48000, Channels: cp.ChannelLayout().NbChannels()}
		default:
			continue
		}
		s.index[st.Index()] = len(s.desc.Tracks)
		s.tbs[st.Index()] = st.TimeBase()
		s.desc.Tracks = append(s.desc.Tracks, tr)
	}
	return s, nil
}

// parseAVCC reads the first SPS and PPS of an avcC decoder configuration
// record, with the MP4 library mediacommon's mp4 formats use.
func parseAVCC(b []byte) (sps, pps []byte, err error) {
	var rec mp4.AVCDecoderConfiguration
	rec.SetType(mp4.BoxTypeAvcC())
	if _, err := mp4.Unmarshal(bytes.NewReader(b), uint64(len(b)), &rec, mp4.Context{}); err != nil {
		return nil, nil, fmt.Errorf("H.264 extradata is not an avcC record: %w", err)
	}
	if len(rec.SequenceParameterSets) == 0 || len(rec.PictureParameterSets) == 0 {
		return nil, nil, errors.New("avcC without SPS or PPS")
	}
	return rec.SequenceParameterSets[0].NALUnit, rec.PictureParameterSets[0].NALUnit, nil
}

func (s *clipSource) next() (*media.Unit, error) {
	for {
		if err := s.fc.ReadFrame(s.pkt); err != nil {
			return nil, err
		}
		tr, ok := s.index[s.pkt.StreamIndex()]
		if !ok {
			s.pkt.Unref()
			continue
		}
		tb := s.tbs[s.pkt.StreamIndex()]
		conv := func(v int64) time.Duration {
			return time.Duration(v) * time.Second * time.Duration(tb.Num()) / time.Duration(tb.Den())
		}
		pts, dts := conv(s.pkt.Pts()), conv(s.pkt.Dts())
		if s.pkt.Dts() == astiav.NoPtsValue {
			dts = pts
		}
		if !s.hasBase {
			s.first, s.hasBase = dts, true
		}
		pts -= s.first
		dts -= s.first
		data := append([]byte(nil), s.pkt.Data()...)
		key := s.pkt.Flags().Has(astiav.PacketFlagKey)
		s.pkt.Unref()
		u := &media.Unit{Track: tr, PTS: pts, DTS: dts, Key: true}
		if s.desc.Tracks[tr].Codec == media.CodecH264 {
			var au h264.AVCC
			if err := au.Unmarshal(data); err != nil {
				return nil, fmt.Errorf("AVCC: %w", err)
			}
			u.Data = au
			u.Key = key && h264.IsRandomAccess(au)
			if u.Key {
				u.Data = media.WithParameterSets(u.Data, s.desc.Tracks[tr].SPS, s.desc.Tracks[tr].PPS)
			}
		} else {
			u.Data = [][]byte{data}
		}
		if pts > s.last {
			s.last = pts
		}
		return u, nil
	}
}

func (s *clipSource) close() {
	if s.pkt != nil {
		s.pkt.Free()
	}
	s.fc.CloseInput()
	s.fc.Free()
}
