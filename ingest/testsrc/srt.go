package testsrc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	srt "github.com/datarhei/gosrt"

	"github.com/gradient-cdn/gradient/media"
)

// tsPayloadSize is the SRT payload that carries a whole number of MPEG-TS
// packets (7 × 188), the size every SRT ingest expects.
const tsPayloadSize = 7 * 188

// tsOffset shifts MPEG-TS timestamps so that the PCR, which runs 100 ms
// behind the first DTS, does not start below zero.
const tsOffset = time.Second

// srtSink pushes MPEG-TS over an SRT caller connection.
type srtSink struct {
	conn   srt.Conn
	bw     *bufio.Writer
	w      *mpegts.Writer
	tracks []*mpegts.Track // per media.Unit.Track
}

// srtConfig turns the URL into an SRT caller configuration: the query
// carries SRT options (streamid, latency in µs as ffmpeg has it, passphrase, …) and a path, when
// there is no streamid, names the stream ("publish:<path>").
func srtConfig(u *url.URL) (srt.Config, error) {
	cfg := srt.DefaultConfig()
	q := u.Query()
	// The latency options are in microseconds, as in ffmpeg's srt:// URLs
	// (the ones users copy), while gosrt reads them as milliseconds.
	for _, k := range []string{"latency", "rcvlatency", "peerlatency"} {
		if v := q.Get(k); v != "" {
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil || us < 0 {
				return cfg, fmt.Errorf("SRT option %s=%q: want microseconds", k, v)
			}
			q.Set(k, strconv.FormatInt(us/1000, 10))
		}
	}
	if err := cfg.UnmarshalQuery(q.Encode()); err != nil {
		return cfg, fmt.Errorf("SRT options: %w", err)
	}
	if p := strings.Trim(u.Path, "/"); cfg.StreamId == "" && p != "" {
		cfg.StreamId = "publish:" + p
	}
	cfg.PayloadSize = tsPayloadSize
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func dialSRT(ctx context.Context, u *url.URL, desc media.Description) (sink, error) {
	cfg, err := srtConfig(u)
	if err != nil {
		return nil, err
	}
	s := &srtSink{}
	for _, t := range desc.Tracks {
		var tr *mpegts.Track
		switch t.Codec {
		case media.CodecH264:
			tr = &mpegts.Track{Codec: &mpegts.CodecH264{}}
		case media.CodecAAC:
			tr = &mpegts.Track{Codec: &mpegts.CodecMPEG4Audio{Config: *t.AAC}}
		default:
			return nil, fmt.Errorf("codec %s cannot be sent", t.Codec)
		}
		s.tracks = append(s.tracks, tr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// srt.Dial takes no context; it gives up after cfg.ConnectionTimeout
	// (3 s by default, "conntimeo" in the URL), also when nothing listens.
	conn, err := srt.Dial("srt", net.JoinHostPort(u.Hostname(), u.Port()), cfg)
	if err != nil {
		return nil, explainSRTError(err)
	}
	s.conn = conn
	s.bw = bufio.NewWriterSize(conn, tsPayloadSize)
	s.w = &mpegts.Writer{W: s.bw, Tracks: s.tracks}
	if err := s.w.Initialize(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("MPEG-TS writer: %w", err)
	}
	return s, nil
}

var rejectCode = regexp.MustCompile(`REJECT \(([0-9a-v]+)\)`)

// srtRejections names the rejection codes a server is likely to send
// (SRT RFC draft, table 7, and libsrt's access_control.h).
var srtRejections = map[srt.RejectionReason]string{
	srt.REJ_PEER:          "rejected by peer",
	srt.REJ_RESOURCE:      "resource allocation problem",
	srt.REJ_ROGUE:         "incorrect data in handshake",
	srt.REJ_BACKLOG:       "listener's backlog exceeded",
	srt.REJ_VERSION:       "peer is older than the server's minimum version",
	srt.REJ_BADSECRET:     "wrong passphrase",
	srt.REJ_UNSECURE:      "passphrase required or unexpected",
	srt.REJX_BAD_REQUEST:  "bad request (streamid syntax)",
	srt.REJX_UNAUTHORIZED: "unauthorized",
	srt.REJX_OVERLOAD:     "server overloaded",
	srt.REJX_FORBIDDEN:    "forbidden",
	srt.REJX_NOTFOUND:     "not found",
	srt.REJX_BAD_MODE:     "mode not supported",
	srt.REJX_UNACCEPTABLE: "unacceptable parameters or data format",
	srt.REJX_CONFLICT:     "conflict: the stream is already being published",
	srt.REJX_ISE:          "internal server error",
}

// explainSRTError hints at a missing listener and turns gosrt's "connection rejected: REJECT (<base-32
// code>)" into a readable rejection reason.
func explainSRTError(err error) error {
	if strings.Contains(err.Error(), "connection timeout") {
		return fmt.Errorf("%w (is an SRT listener running there?)", err)
	}
	m := rejectCode.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	code, perr := strconv.ParseUint(m[1], 32, 32)
	if perr != nil {
		return err
	}
	reason := srtRejections[srt.RejectionReason(code)]
	if reason == "" {
		reason = "unknown reason"
	}
	return fmt.Errorf("server rejected the stream: code %d (%s)", code, reason)
}

func (s *srtSink) Write(u *media.Unit) error {
	if u.Track < 0 || u.Track >= len(s.tracks) {
		return fmt.Errorf("unit for unknown track %d", u.Track)
	}
	tr := s.tracks[u.Track]
	pts := media.DurationToTicks(u.PTS+tsOffset, 90000)
	var err error
	switch tr.Codec.(type) {
	case *mpegts.CodecH264:
		err = s.w.WriteH264(tr, pts, media.DurationToTicks(u.DTS+tsOffset, 90000), u.Data)
	case *mpegts.CodecMPEG4Audio:
		err = s.w.WriteMPEG4Audio(tr, pts, u.Data)
	}
	if err == nil {
		// Send the unit now rather than when the next one fills the buffer.
		err = s.bw.Flush()
	}
	if errors.Is(err, io.EOF) {
		return errors.New("connection closed by the server (or its send queue is full)")
	}
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

func (s *srtSink) Close() error {
	return s.conn.Close()
}
