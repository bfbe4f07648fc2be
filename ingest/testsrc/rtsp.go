package testsrc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/media"
)

// rtspSink records to an RTSP server (ANNOUNCE, SETUP, RECORD) with RTP
// interleaved on the TCP connection.
type rtspSink struct {
	client *gortsplib.Client
	medias []*description.Media // per media.Unit.Track
	h264   *rtph264.Encoder
	aac    *rtpmpeg4audio.Encoder
	rates  []int64
	base   []uint32 // random initial RTP timestamp per track (RFC 3550 5.1)
}

func dialRTSP(ctx context.Context, u *url.URL, desc media.Description) (sink, error) {
	s := &rtspSink{}
	session := &description.Session{}
	for _, t := range desc.Tracks {
		var m *description.Media
		switch t.Codec {
		case media.CodecH264:
			f := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: t.SPS, PPS: t.PPS}
			enc, err := f.CreateEncoder()
			if err != nil {
				return nil, err
			}
			s.h264 = enc
			m = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
			s.rates = append(s.rates, 90000)
		case media.CodecAAC:
			f := &format.MPEG4Audio{
				PayloadTyp: 97, Config: t.AAC,
				SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3,
			}
			enc, err := f.CreateEncoder()
			if err != nil {
				return nil, err
			}
			s.aac = enc
			m = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
			s.rates = append(s.rates, int64(t.SampleRate))
		default:
			return nil, fmt.Errorf("codec %s cannot be sent", t.Codec)
		}
		session.Medias = append(session.Medias, m)
		s.medias = append(s.medias, m)
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		s.base = append(s.base, binary.BigEndian.Uint32(b[:]))
	}

	tcp := gortsplib.TransportTCP
	dialer := &net.Dialer{}
	s.client = &gortsplib.Client{
		Transport: &tcp,
		UserAgent: "gradient-testsrc",
		// ctx bounds the connection attempt only; Close ends the session.
		DialContext: func(_ context.Context, network, address string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
	}
	if err := s.client.StartRecording(u.String(), session); err != nil {
		var bad liberrors.ErrClientBadStatusCode
		if errors.As(err, &bad) {
			return nil, fmt.Errorf("server refused the stream: %d %s", bad.Code, bad.Message)
		}
		return nil, err
	}
	return s, nil
}

func (s *rtspSink) Write(u *media.Unit) error {
	if u.Track < 0 || u.Track >= len(s.medias) {
		return fmt.Errorf("unit for unknown track %d", u.Track)
	}
	m := s.medias[u.Track]
	var err error
	var pkts []*rtp.Packet
	switch f := m.Formats[0].(type) {
	case *format.H264:
		pkts, err = s.h264.Encode(u.Data)
	case *format.MPEG4Audio:
		pkts, err = s.aac.Encode(u.Data)
	default:
		err = fmt.Errorf("unexpected format %T", f)
	}
	if err != nil {
		return fmt.Errorf("packetize track %d: %w", u.Track, err)
	}
	ts := s.base[u.Track] + uint32(media.DurationToTicks(u.PTS, s.rates[u.Track]))
	for _, p := range pkts {
		p.Timestamp += ts
		// The capture time goes into the RTCP sender reports, so that a
		// receiver can map RTP time to wall-clock time.
		if err := s.client.WritePacketRTPWithNTP(m, p, u.Received); err != nil {
			return err
		}
	}
	return nil
}

func (s *rtspSink) Close() error {
	s.client.Close()
	return nil
}
