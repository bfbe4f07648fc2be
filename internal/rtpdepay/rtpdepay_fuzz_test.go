package rtpdepay_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/sdp"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/internal/rtpdepay"
)

// An ANNOUNCE body as ffmpeg sends it: H.264 with its parameter sets, and AAC.
const fuzzAnnounceSDP = "v=0\r\n" +
	"o=- 0 0 IN IP4 127.0.0.1\r\n" +
	"s=No Name\r\n" +
	"c=IN IP4 127.0.0.1\r\n" +
	"t=0 0\r\n" +
	"a=tool:libavformat 60.16.100\r\n" +
	"m=video 0 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LADdkBQfsBEAAAAwAQAAADA8DxQqSA,aMuDyyA=; profile-level-id=42C00D\r\n" +
	"a=control:streamid=0\r\n" +
	"m=audio 0 RTP/AVP 97\r\n" +
	"b=AS:128\r\n" +
	"a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n" +
	"a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=119056E500\r\n" +
	"a=control:streamid=1\r\n"

// fuzzPackets is a valid RTP packet stream for the SDP above: an IDR with
// its parameter sets, a P frame, two AAC frames; each packet is preceded
// by its length (2 bytes).
func fuzzPackets(tb testing.TB) []byte {
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1200}
	if err := enc.Init(); err != nil {
		tb.Fatal(err)
	}
	var out []byte
	add := func(p *rtp.Packet) {
		b, err := p.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	for i, au := range [][][]byte{{sps, pps, idr}, {ps}} {
		pkts, err := enc.Encode(au)
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range pkts {
			p.Timestamp = uint32(90000 + 3000*i)
			add(p)
		}
	}
	for i := range 2 {
		// AU-headers-length 16 bits, one header: size 6 << 3.
		add(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, Marker: true, SequenceNumber: uint16(i), Timestamp: uint32(1024 * i)},
			Payload: []byte{0x00, 0x10, 0x00, 0x30, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c}})
	}
	return out
}

// FuzzAnnounce follows an ANNOUNCE from its SDP body to the tracks a
// publisher gets (gortsplib's parsing, then rtpdepay.New, which
// newRTSPPublisher calls) and then feeds the tracks RTP packets. A refused
// SDP is a *CodecError of bounded length; an accepted one has its H.264
// track, at most one audio track, track indices that match the
// description, and a description that validates once publishable; units
// belong to the track whose packets made them, carry data, and every
// video keyframe carries SPS and PPS. Never panics.
func FuzzAnnounce(f *testing.F) {
	f.Add([]byte(fuzzAnnounceSDP), fuzzPackets(f))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 0 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\nm=audio 0 RTP/AVP 98\r\na=rtpmap:98 MP4A-LATM/44100/2\r\na=fmtp:98 cpresent=0;config=400024203fc0\r\n"), fuzzPackets(f))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"), []byte{})
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n"), []byte{})
	// A codec name as long as the body: the refusal names it.
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 "+strings.Repeat("X", 5000)+"/90000\r\n"), []byte{})
	f.Fuzz(func(t *testing.T, body, packets []byte) {
		var ssd sdp.SessionDescription
		if ssd.Unmarshal(body) != nil {
			return
		}
		var sd description.Session
		if sd.Unmarshal(&ssd) != nil {
			return
		}
		s, err := rtpdepay.New(&sd, quiet())
		if err != nil {
			var ce *rtpdepay.CodecError
			if !errors.As(err, &ce) {
				t.Fatalf("refused with %T %v, want a *CodecError", err, err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("refusal of %d bytes: %.200q…", len(err.Error()), err.Error())
			}
			return
		}
		tracks := s.Tracks()
		if s.Video() == nil || len(tracks) == 0 || len(tracks) > 2 {
			t.Fatalf("accepted with %d tracks, video %v", len(tracks), s.Video())
		}
		if _, ok := s.Video().Format.(*format.H264); !ok {
			t.Fatalf("video track is %T", s.Video().Format)
		}
		desc, ok := s.Description()
		if len(desc.Tracks) != len(tracks) {
			t.Fatalf("%d tracks, description of %d", len(tracks), len(desc.Tracks))
		}
		for i, tr := range tracks {
			if tr.Index != i {
				t.Fatalf("track %d has index %d", i, tr.Index)
			}
		}
		if ok {
			if err := desc.Validate(); err != nil {
				t.Fatalf("publishable description does not validate: %v", err)
			}
		}

		now := time.Unix(1, 0)
		for len(packets) >= 2 {
			n := int(binary.BigEndian.Uint16(packets))
			packets = packets[2:]
			n = min(n, len(packets))
			var pkt rtp.Packet
			err := pkt.Unmarshal(packets[:n])
			packets = packets[n:]
			if err != nil {
				continue
			}
			tr := tracks[0]
			for _, x := range tracks {
				if f := x.Format.PayloadType(); f == pkt.PayloadType {
					tr = x
				}
			}
			for _, u := range s.Decode(tr, &pkt, int64(pkt.Timestamp), true, now) {
				if u.Track != tr.Index {
					t.Fatalf("packet of track %d made a unit of track %d", tr.Index, u.Track)
				}
				if len(u.Data) == 0 {
					t.Fatal("unit without data")
				}
				if u.Track == s.Video().Index && u.Key && !fuzzParameterSets(u.Data) {
					t.Fatal("keyframe without SPS and PPS")
				}
			}
		}
		if d, ok := s.Description(); ok {
			if err := d.Validate(); err != nil {
				t.Fatalf("publishable description does not validate: %v", err)
			}
		}
	})
}

func fuzzParameterSets(au [][]byte) bool {
	sps, pps := false, false
	for _, n := range au {
		if len(n) > 0 {
			sps = sps || h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS
			pps = pps || h264.NALUType(n[0]&0x1f) == h264.NALUTypePPS
		}
	}
	return sps && pps
}
