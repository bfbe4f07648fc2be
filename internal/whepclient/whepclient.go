// Package whepclient is a WHEP (WebRTC-HTTP egress protocol) viewer: it
// offers to receive H.264 video and Opus audio, POSTs the offer to a WHEP
// endpoint, applies the answer, and counts (or depacketizes) what
// arrives. The demo's synthetic viewers and the tests and benchmarks use
// it.
package whepclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/gradient-cdn/gradient/media"
)

// Options tune a WHEP client session.
type Options struct {
	// CountOnly skips depacketizing: only the byte and packet counters
	// move. It is what a benchmark with hundreds of viewers wants.
	CountOnly bool

	// OnAU is called for every H.264 access unit received (not with
	// CountOnly), on the track's goroutine; it must not block for long.
	OnAU func(AccessUnit)

	// OnOpus is called for every Opus packet received, with its arrival time.
	OnOpus func(pkt []byte, arrival time.Time)

	// Loopback restricts the client's ICE candidates to loopback
	// addresses, as tests want.
	Loopback bool

	// NACK makes the client ask for lost packets (RTCP NACK).
	NACK bool

	// HTTPClient makes the WHEP requests. Default http.DefaultClient.
	HTTPClient *http.Client

	// DisconnectedTimeout, FailedTimeout and KeepAliveInterval are the
	// ICE agent's (zero: pion's defaults, 5 s, 25 s and 2 s); a viewer that
	// must notice a dead node quickly shortens them.
	DisconnectedTimeout, FailedTimeout, KeepAliveInterval time.Duration

	// Quiet silences pion's log (default: its errors on stderr).
	Quiet bool
}

// ErrUnreachable wraps the error of a POST that reached no server.
var ErrUnreachable = errors.New("WHEP endpoint unreachable")

// AccessUnit is one H.264 access unit as received over WebRTC.
type AccessUnit struct {
	NALUs        [][]byte  // without start codes
	RTPTimestamp uint32    // 90 kHz
	Arrival      time.Time // arrival of its last RTP packet
	Capture      time.Time // from Gradient's capture SEI, if HasCapture
	HasCapture   bool
}

// Stats are a session's receive counters.
type Stats struct {
	VideoPackets, VideoBytes uint64 // RTP payload bytes
	AudioPackets, AudioBytes uint64
	AccessUnits              uint64 // depacketized H.264 AUs (not with CountOnly)
}

// Session is a WebRTC viewer session made by Dial.
type Session struct {
	pc       *webrtc.PeerConnection
	resource string // session URL, for DELETE
	etag     string
	http     *http.Client
	opts     Options
	answer   string

	connected chan struct{}
	done      chan struct{}
	connOnce  sync.Once
	doneOnce  sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup

	videoPackets, videoBytes atomic.Uint64
	audioPackets, audioBytes atomic.Uint64
	aus                      atomic.Uint64
}

// Dial opens a receive-only WebRTC session (H.264 video and Opus
// audio) with the WHEP endpoint at endpoint: it POSTs the offer, with all
// its candidates, and applies the answer. It does not wait for the
// connection; see Connected.
func Dial(ctx context.Context, endpoint string, opts Options) (*Session, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	api, err := newAPI(opts)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("whep client: %w", err)
	}
	s := &Session{pc: pc, http: opts.HTTPClient, opts: opts,
		connected: make(chan struct{}), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			_ = pc.Close()
		}
	}()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return nil, fmt.Errorf("whep client: add %s transceiver: %w", k, err)
		}
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() { close(s.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.doneOnce.Do(func() { close(s.done) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		s.wg.Add(1)
		go s.readTrack(tr)
	})
	gathered := webrtc.GatheringCompletePromise(pc)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, fmt.Errorf("whep client: offer: %w", err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, fmt.Errorf("whep client: set offer: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("whep client: POST %s: %w: %w", endpoint, ErrUnreachable, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("whep client: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, &Error{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/sdp") {
		return nil, fmt.Errorf("whep client: answer content type %q", ct)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return nil, fmt.Errorf("whep client: bad Location %q", resp.Header.Get("Location"))
	}
	s.resource, s.answer, s.etag = loc.String(), string(body), resp.Header.Get("ETag")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.answer}); err != nil {
		s.deleteResource()
		return nil, fmt.Errorf("whep client: apply answer: %w", err)
	}
	ok = true
	return s, nil
}

// Error is a refused WHEP request.
type Error struct {
	Status int
	Body   string
}

func (e *Error) Error() string { return fmt.Sprintf("whep: HTTP %d: %s", e.Status, e.Body) }

func newAPI(opts Options) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	// Browser-like: several H.264 profiles and other codecs, so that the
	// server has to pick and answer with the offer's payload types.
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, err
	}
	ir.Add(rr)
	if opts.NACK {
		gen, err := nack.NewGeneratorInterceptor()
		if err != nil {
			return nil, err
		}
		ir.Add(gen)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	if opts.Quiet {
		lf.DefaultLogLevel = logging.LogLevelDisabled
	}
	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	if opts.DisconnectedTimeout > 0 || opts.FailedTimeout > 0 || opts.KeepAliveInterval > 0 {
		d, f, k := opts.DisconnectedTimeout, opts.FailedTimeout, opts.KeepAliveInterval
		if d <= 0 {
			d = 5 * time.Second
		}
		if f <= 0 {
			f = 25 * time.Second
		}
		if k <= 0 {
			k = 2 * time.Second
		}
		se.SetICETimeouts(d, f, k)
	}
	if opts.Loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

func (s *Session) readTrack(tr *webrtc.TrackRemote) {
	defer s.wg.Done()
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	isH264 := strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeH264)
	if s.opts.CountOnly || (video && !isH264) || (!video && s.opts.OnOpus == nil) {
		buf := make([]byte, 1500)
		var p rtp.Packet
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			pl := n
			if p.Unmarshal(buf[:n]) == nil {
				pl = len(p.Payload)
			}
			s.count(video, pl)
		}
	}
	var dec *rtph264.Decoder
	if video {
		dec = &rtph264.Decoder{PacketizationMode: 1}
		if err := dec.Init(); err != nil {
			return
		}
	}
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		now := time.Now()
		s.count(video, len(p.Payload))
		if !video {
			s.opts.OnOpus(p.Payload, now)
			continue
		}
		au, err := dec.Decode(p)
		if err != nil || len(au) == 0 {
			continue
		}
		s.aus.Add(1)
		if s.opts.OnAU != nil {
			a := AccessUnit{NALUs: au, RTPTimestamp: p.Timestamp, Arrival: now}
			a.Capture, a.HasCapture = media.CaptureTime(au)
			s.opts.OnAU(a)
		}
	}
}

func (s *Session) count(video bool, n int) {
	if video {
		s.videoPackets.Add(1)
		s.videoBytes.Add(uint64(n))
	} else {
		s.audioPackets.Add(1)
		s.audioBytes.Add(uint64(n))
	}
}

// Stats returns the receive counters.
func (s *Session) Stats() Stats {
	return Stats{
		VideoPackets: s.videoPackets.Load(), VideoBytes: s.videoBytes.Load(),
		AudioPackets: s.audioPackets.Load(), AudioBytes: s.audioBytes.Load(),
		AccessUnits: s.aus.Load(),
	}
}

// Resource is the session URL the server gave in Location.
func (s *Session) Resource() string { return s.resource }

// ETag is the ETag the server gave the session.
func (s *Session) ETag() string { return s.etag }

// Answer is the server's SDP answer.
func (s *Session) Answer() string { return s.answer }

// PeerConnection exposes the client's PeerConnection.
func (s *Session) PeerConnection() *webrtc.PeerConnection { return s.pc }

// Connected is closed once the PeerConnection is connected.
func (s *Session) Connected() <-chan struct{} { return s.connected }

// Done is closed when the PeerConnection failed or was closed, by either side.
func (s *Session) Done() <-chan struct{} { return s.done }

// Delete asks the server to end the session (HTTP DELETE on its resource)
// and returns the status code.
func (s *Session) Delete(ctx context.Context) (int, error) {
	return DeleteResource(ctx, s.http, s.resource)
}

// DeleteResource ends a WHEP or WHIP session: an HTTP DELETE of the
// resource URL its POST answered with, returning the status code.
func DeleteResource(ctx context.Context, c *http.Client, resource string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, resource, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (s *Session) deleteResource() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = s.Delete(ctx)
}

// Close sends DELETE to the server (errors ignored: the server may be
// gone) and closes the PeerConnection and its readers.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.deleteResource()
		err = s.pc.Close()
		s.wg.Wait()
	})
	return err
}
