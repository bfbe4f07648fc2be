package testutil

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/gradient-cdn/gradient/internal/whepclient"
	gmedia "github.com/gradient-cdn/gradient/media"
)

// WHIPClip encodes, once per option set, a test pattern as H.264 Annex-B
// (constrained baseline, no B-frames, a keyframe every second) and a tone
// as Opus in Ogg with one 20 ms packet per page: what PublishWHIP sends.
func WHIPClip(t testing.TB, width, height, fps, seconds int) (h264File, oggFile string) {
	t.Helper()
	RequireTool(t, "ffmpeg")
	base := filepath.Join(os.TempDir(), fmt.Sprintf("gradient-whip-%dx%d-%d-%ds", width, height, fps, seconds))
	h264File, oggFile = base+".h264", base+".ogg"
	clipMu.Lock()
	defer clipMu.Unlock()
	for _, job := range []struct {
		out  string
		args []string
	}{
		{h264File, []string{"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=%d", width, height, fps),
			"-t", fmt.Sprint(seconds), "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-tune", "zerolatency",
			"-bf", "0", "-g", fmt.Sprint(fps), "-keyint_min", fmt.Sprint(fps), "-pix_fmt", "yuv420p", "-b:v", "500k",
			"-bsf:v", "h264_mp4toannexb", "-f", "h264"}},
		{oggFile, []string{"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
			"-t", fmt.Sprint(seconds), "-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-page_duration", "20000", "-f", "ogg"}},
	} {
		if _, err := os.Stat(job.out); err == nil {
			continue
		}
		tmp := job.out + ".part"
		args := append([]string{"-hide_banner", "-loglevel", "error", "-y"}, job.args...)
		args = append(args, tmp)
		if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
			t.Fatalf("make WHIP clip: ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if err := os.Rename(tmp, job.out); err != nil {
			t.Fatal(err)
		}
	}
	return h264File, oggFile
}

// WHIPOptions tune a WHIP publisher.
type WHIPOptions struct {
	H264File string // Annex-B H.264, sent at FPS frames per second, looped
	FPS      int    // default 30
	OggFile  string // Opus in Ogg, one packet per page (optional), looped
	// DropVideoEvery drops every n-th H.264 RTP packet before it is sent
	// (0: none), a lossy network in the test process.
	DropVideoEvery int
	// SwapVideoEvery holds every n-th H.264 RTP packet back and sends it
	// right after the next one (0: none): a network that reorders.
	SwapVideoEvery int
	// ResendOnNACK offers generic NACK for video and resends the packets
	// the server asks for again (pion's NACK responder, ahead of the drop:
	// a resent packet may be dropped again), as browsers do.
	ResendOnNACK bool
	// HTTPClient makes the WHIP requests. Default http.DefaultClient.
	HTTPClient *http.Client
	// CaptureStamps marks every sample with its capture time (Unix
	// nanoseconds): a capture-time SEI (media.CaptureSEI) in front of each
	// access unit, 8 big-endian bytes after each Opus packet (see
	// WHIPAudioCapture). Audio and video capture start together. The RTCP
	// sender reports (every 500 ms) then map each track's RTP time to its
	// capture time exactly, as a browser's do, instead of to the time the
	// last packet was sent (pion's), which a loaded machine delays.
	CaptureStamps bool
	// AudioHold holds audio back this long before its first packet is
	// sent, then sends the backlog at once and goes on in real time: audio
	// captured with video but arriving late. The RTCP sender reports (sent
	// every second) still map each track's RTP time to capture time.
	AudioHold time.Duration
	// NoSenderReports sends no RTCP sender reports (receiver reports
	// only), as some encoders do.
	NoSenderReports bool
}

// WHIPAudioCapture is the capture time a CaptureStamps publisher put at
// the end of an Opus packet.
func WHIPAudioCapture(payload []byte) (time.Time, bool) {
	if len(payload) < 9 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(payload[len(payload)-8:]))), true
}

// videoWriterFactory is an interceptor that wraps the RTP writer of each
// outgoing H.264 stream with wrap (a lossy or reordering network in the
// test process).
type videoWriterFactory struct {
	wrap func(w interceptor.RTPWriter) interceptor.RTPWriter
}

func (f videoWriterFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &videoWriterInterceptor{wrap: f.wrap}, nil
}

type videoWriterInterceptor struct {
	interceptor.NoOp
	wrap func(w interceptor.RTPWriter) interceptor.RTPWriter
}

func (v *videoWriterInterceptor) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.EqualFold(info.MimeType, webrtc.MimeTypeH264) {
		return w
	}
	return v.wrap(w)
}

// dropEvery drops every n-th packet written.
func dropEvery(every int, dropped *atomic.Int64) videoWriterFactory {
	return videoWriterFactory{wrap: func(w interceptor.RTPWriter) interceptor.RTPWriter {
		var n atomic.Int64
		return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
			if n.Add(1)%int64(every) == 0 {
				dropped.Add(1)
				return len(payload), nil
			}
			return w.Write(h, payload, a)
		})
	}}
}

// swapEvery holds every n-th packet written back and writes it right
// after the next one.
func swapEvery(every int, swapped *atomic.Int64) videoWriterFactory {
	return videoWriterFactory{wrap: func(w interceptor.RTPWriter) interceptor.RTPWriter {
		var (
			mu      sync.Mutex
			n       int64
			held    *rtp.Header
			heldPay []byte
			heldAt  interceptor.Attributes
		)
		return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			n++
			if held == nil && n%int64(every) == 0 {
				hc := h.Clone()
				held, heldPay, heldAt = &hc, append([]byte(nil), payload...), a
				return len(payload), nil
			}
			written, err := w.Write(h, payload, a)
			if held != nil {
				swapped.Add(1)
				_, _ = w.Write(held, heldPay, heldAt)
				held = nil
			}
			return written, err
		})
	}}
}

// captureSRFactory makes the interceptor that sends RTCP sender reports
// on the capture clock: each maps a track's RTP timestamp to the capture
// time of the sample that carried it.
type captureSRFactory struct{ p *WHIPPublisher }

func (f captureSRFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &captureSR{p: f.p, last: map[uint32]captureSRPoint{}, stop: make(chan struct{})}, nil
}

type captureSRPoint struct {
	ts      uint32
	capture int64 // Unix ns
	packets uint32
	octets  uint32
}

type captureSR struct {
	interceptor.NoOp
	p    *WHIPPublisher
	mu   sync.Mutex
	last map[uint32]captureSRPoint // by SSRC
	stop chan struct{}
	once sync.Once
}

func (c *captureSR) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-tick.C:
			}
			var pkts []rtcp.Packet
			c.mu.Lock()
			for ssrc, pt := range c.last {
				pkts = append(pkts, &rtcp.SenderReport{SSRC: ssrc, NTPTime: toNTP(time.Unix(0, pt.capture)), RTPTime: pt.ts,
					PacketCount: pt.packets, OctetCount: pt.octets})
			}
			c.mu.Unlock()
			if len(pkts) > 0 {
				_, _ = w.Write(pkts, nil)
			}
		}
	}()
	return w
}

func (c *captureSR) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	capture := &c.p.capAudio
	if strings.EqualFold(info.MimeType, webrtc.MimeTypeH264) {
		capture = &c.p.capVideo
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		// WriteSample packetizes and writes on its caller's goroutine,
		// right after the sender stored the sample's capture time.
		if ct := capture.Load(); ct != 0 {
			c.mu.Lock()
			pt := c.last[info.SSRC]
			c.last[info.SSRC] = captureSRPoint{ts: h.Timestamp, capture: ct, packets: pt.packets + 1, octets: pt.octets + uint32(len(payload))}
			c.mu.Unlock()
		}
		return w.Write(h, payload, a)
	})
}

func (c *captureSR) Close() error {
	c.once.Do(func() { close(c.stop) })
	return nil
}

// toNTP is t as a 32.32 NTP timestamp (seconds since 1900).
func toNTP(t time.Time) uint64 {
	secs := uint64(t.Unix()) + 2208988800
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

// WHIPPublisher is a Go (pion) WHIP client sending a clip as RTP.
type WHIPPublisher struct {
	pc       *webrtc.PeerConnection
	resource string
	client   *http.Client
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	pli      atomic.Int64
	nacked   atomic.Int64
	swapped  atomic.Int64
	dropped  atomic.Int64
	sentAUs  atomic.Int64
	// capVideo and capAudio are the capture time (Unix ns) of the sample
	// each track is writing, for the capture-clock sender reports.
	capVideo atomic.Int64
	capAudio atomic.Int64
	done     chan struct{}
	doneOnce sync.Once
}

// PublishWHIP offers H.264 (and Opus, with an Ogg file) to a WHIP endpoint
// and, once answered, sends the clips in real time until Close. A refused
// offer is a *WHEPError with the status and body.
func PublishWHIP(ctx context.Context, endpoint string, o WHIPOptions) (*WHIPPublisher, error) {
	if o.FPS == 0 {
		o.FPS = 30
	}
	client := o.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	me := &webrtc.MediaEngine{}
	videoFB := []webrtc.RTCPFeedback{{Type: "nack", Parameter: "pli"}}
	if o.ResendOnNACK {
		videoFB = append(videoFB, webrtc.RTCPFeedback{Type: "nack"})
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		RTCPFeedback: videoFB,
	}, PayloadType: 96}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
	}, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	ir := &interceptor.Registry{}
	p := &WHIPPublisher{client: client, done: make(chan struct{})}
	if o.NoSenderReports || o.CaptureStamps {
		rr, err := report.NewReceiverInterceptor()
		if err != nil {
			return nil, err
		}
		ir.Add(rr)
		if !o.NoSenderReports {
			ir.Add(captureSRFactory{p: p})
		}
	} else if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, err
	}
	if o.DropVideoEvery > 0 {
		ir.Add(dropEvery(o.DropVideoEvery, &p.dropped))
	}
	if o.SwapVideoEvery > 0 {
		ir.Add(swapEvery(o.SwapVideoEvery, &p.swapped))
	}
	if o.ResendOnNACK {
		// Added after the drop: the outer writer, so it keeps every packet
		// and resends through the drop.
		resp, err := nack.NewResponderInterceptor()
		if err != nil {
			return nil, err
		}
		ir.Add(resp)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	p.pc = pc
	fail := func(err error) (*WHIPPublisher, error) {
		_ = pc.Close()
		return nil, err
	}
	video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "whip")
	if err != nil {
		return fail(err)
	}
	vt, err := pc.AddTransceiverFromTrack(video, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return fail(err)
	}
	var audio *webrtc.TrackLocalStaticSample
	var at *webrtc.RTPTransceiver
	if o.OggFile != "" {
		if audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "whip"); err != nil {
			return fail(err)
		}
		if at, err = pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			return fail(err)
		}
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateDisconnected {
			p.doneOnce.Do(func() { close(p.done) })
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := client.Do(req)
	if err != nil {
		return fail(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fail(&WHEPError{Status: resp.StatusCode, Body: string(body)})
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		if base, err := url.Parse(endpoint); err == nil {
			if u, err := base.Parse(loc); err == nil {
				p.resource = u.String()
			}
		}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return fail(fmt.Errorf("set answer: %w", err))
	}

	sctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.readRTCP(vt.Sender())
	}()
	if at != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.readRTCP(at.Sender())
		}()
	}
	// Both tracks are captured from t0 on, each sample sent at its
	// capture time (audio after AudioHold at the earliest).
	t0 := time.Now()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.sendH264(sctx, video, o.H264File, o.FPS, t0, o.CaptureStamps)
	}()
	if audio != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.sendOgg(sctx, audio, o.OggFile, t0, o.AudioHold, o.CaptureStamps)
		}()
	}
	return p, nil
}

// readRTCP counts the keyframe requests (PLI) the server sends.
func (p *WHIPPublisher) readRTCP(s *webrtc.RTPSender) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			switch pkt := pkt.(type) {
			case *rtcp.PictureLossIndication:
				p.pli.Add(1)
			case *rtcp.TransportLayerNack:
				for _, n := range pkt.Nacks {
					p.nacked.Add(int64(len(n.PacketList())))
				}
			}
		}
	}
}

// sendH264 sends the access units of an Annex-B file, one every 1/fps,
// looping the file.
func (p *WHIPPublisher) sendH264(ctx context.Context, track *webrtc.TrackLocalStaticSample, file string, fps int, t0 time.Time, stamps bool) {
	dur := time.Second / time.Duration(fps)
	k := 0 // access units sent: the next one is captured at t0 + k*dur
	for ctx.Err() == nil {
		f, err := os.Open(file)
		if err != nil {
			return
		}
		r, err := h264reader.NewReader(f)
		if err != nil {
			f.Close()
			return
		}
		var au bytes.Buffer
		hasVCL := false
		send := func() bool {
			if !hasVCL {
				return true
			}
			capture := t0.Add(time.Duration(k) * dur)
			if !sleepUntil(ctx, capture) {
				return false
			}
			k++
			var data []byte
			if stamps {
				data = append([]byte{0, 0, 0, 1}, gmedia.CaptureSEI(capture)...)
			}
			data = append(data, au.Bytes()...)
			p.capVideo.Store(capture.UnixNano())
			if err := track.WriteSample(media.Sample{Data: data, Duration: dur}); err != nil {
				return false
			}
			p.sentAUs.Add(1)
			au.Reset()
			hasVCL = false
			return true
		}
		for {
			nal, err := r.NextNAL()
			if err != nil {
				break
			}
			vcl := nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr
			// An access unit ends before a parameter set, SEI or AUD, or
			// before the first slice of the next picture
			// (first_mb_in_slice 0: the slice header's first bit is 1).
			if hasVCL && (!vcl || (len(nal.Data) > 1 && nal.Data[1]&0x80 != 0)) {
				if !send() {
					f.Close()
					return
				}
			}
			au.Write([]byte{0, 0, 0, 1})
			au.Write(nal.Data)
			hasVCL = hasVCL || vcl
		}
		if !send() {
			f.Close()
			return
		}
		f.Close()
	}
}

// sendOgg sends the Opus packets of an Ogg file (one per page) in real
// time, looping the file.
func (p *WHIPPublisher) sendOgg(ctx context.Context, track *webrtc.TrackLocalStaticSample, file string, t0 time.Time, hold time.Duration, stamps bool) {
	var captured time.Duration // capture time of the next packet, after t0
	for ctx.Err() == nil {
		f, err := os.Open(file)
		if err != nil {
			return
		}
		r, _, err := oggreader.NewWith(f)
		if err != nil {
			f.Close()
			return
		}
		var last uint64
		for {
			page, hdr, err := r.ParseNextPage()
			if err != nil {
				break
			}
			if len(page) >= 8 && (string(page[:8]) == "OpusHead" || string(page[:8]) == "OpusTags") {
				continue
			}
			samples := hdr.GranulePosition - last
			last = hdr.GranulePosition
			if samples == 0 || samples > 48000 {
				samples = 960
			}
			capture := t0.Add(captured)
			d := time.Duration(samples) * time.Second / 48000
			captured += d
			if !sleepUntil(ctx, capture) || !sleepUntil(ctx, t0.Add(hold)) {
				f.Close()
				return
			}
			data := page
			if stamps {
				data = binary.BigEndian.AppendUint64(append([]byte(nil), page...), uint64(capture.UnixNano()))
			}
			p.capAudio.Store(capture.UnixNano())
			if err := track.WriteSample(media.Sample{Data: data, Duration: d}); err != nil {
				f.Close()
				return
			}
		}
		f.Close()
	}
}

// sleepUntil waits until t, or returns false when ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// PLIs counts the keyframe requests received from the server.
func (p *WHIPPublisher) PLIs() int64 { return p.pli.Load() }

// Swapped counts the video packets sent after their successor
// (SwapVideoEvery).
func (p *WHIPPublisher) Swapped() int64 { return p.swapped.Load() }

// NACKed counts the packets the server asked for again (RTCP generic
// NACK), a packet asked for twice counting twice.
func (p *WHIPPublisher) NACKed() int64 { return p.nacked.Load() }

// Dropped counts the video packets dropped by DropVideoEvery.
func (p *WHIPPublisher) Dropped() int64 { return p.dropped.Load() }

// SentAUs counts the H.264 access units sent.
func (p *WHIPPublisher) SentAUs() int64 { return p.sentAUs.Load() }

// Resource is the session URL the server gave (Location).
func (p *WHIPPublisher) Resource() string { return p.resource }

// Done is closed when the connection failed, disconnected or closed.
func (p *WHIPPublisher) Done() <-chan struct{} { return p.done }

// PeerConnection is the publisher's PeerConnection.
func (p *WHIPPublisher) PeerConnection() *webrtc.PeerConnection { return p.pc }

// Delete DELETEs the session resource and returns the status.
func (p *WHIPPublisher) Delete(ctx context.Context) (int, error) {
	if p.resource == "" {
		return 0, errors.New("no session resource")
	}
	return whepclient.DeleteResource(ctx, p.client, p.resource)
}

// Stop stops sending media but keeps the connection (a silent publisher).
func (p *WHIPPublisher) Stop() {
	p.cancel()
}

// Close stops sending and closes the PeerConnection (without DELETE).
func (p *WHIPPublisher) Close() error {
	p.cancel()
	err := p.pc.Close()
	p.wg.Wait()
	return err
}
