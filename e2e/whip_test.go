package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/node"
)

// publishWHIP publishes the WHIP clip (H.264 320x240 + Opus) to path.
func publishWHIP(t *testing.T, n *testNode, path string) *testutil.WHIPPublisher {
	t.Helper()
	h264, ogg := testutil.WHIPClip(t, 320, 240, 30, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := testutil.PublishWHIP(ctx, n.httpURL(path+"/whip"), testutil.WHIPOptions{H264File: h264, OggFile: ogg})
	if err != nil {
		t.Fatalf("WHIP publish %s: %v", path, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestWHIPPublishPlaysOverWHEPAndHLSWithOpus: a Go (pion) WHIP client
// publishes H.264 and Opus; a WHEP viewer decodes its video, FFmpeg
// decodes video and Opus audio from fMP4 HLS; a second publisher of the
// name is refused with 409; DELETE unpublishes.
func TestWHIPPublishPlaysOverWHEPAndHLSWithOpus(t *testing.T) {
	n := startNode(t)
	p := publishWHIP(t, n, "live/cam1")
	n.waitStream(t, "live/cam1")

	st, _ := n.Hub.Lookup("live/cam1")
	desc := st.Description()
	if desc.AudioTrack() < 0 || desc.Tracks[desc.AudioTrack()].Codec != "Opus" {
		t.Fatalf("published tracks %v, want H264 and Opus", desc.Tracks)
	}
	if src := st.Info().Source; !strings.HasPrefix(src, "whip ") {
		t.Errorf("stream source %q, want whip <addr>", src)
	}

	sizes, _ := whepFrames(t, n.httpURL("live/cam1/whep"), 60)
	assertFrames(t, "WHEP read of WHIP publish", sizes, 60, "320x240")

	hls := ffmpegDecode(t, n.httpURL("live/cam1/index.m3u8"), 60)
	assertFrames(t, "HLS read of WHIP publish", hls, 60, "320x240")

	// The audio of the HLS stream is Opus, and decodes.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostats", "-i", n.httpURL("live/cam1/index.m3u8"),
		"-map", "0:a", "-t", "2", "-af", "astats=metadata=1:reset=0", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg HLS audio: %v\n%s", err, tailString(string(out), 3000))
	}
	if !strings.Contains(string(out), "Audio: opus") {
		t.Fatalf("HLS audio is not Opus:\n%s", tailString(string(out), 3000))
	}
	if !strings.Contains(string(out), "Number of samples") {
		t.Fatalf("no Opus audio decoded from HLS:\n%s", tailString(string(out), 3000))
	}

	// The keyframes HLS needs are asked for (PLI), as browsers only send
	// them on request.
	if p.PLIs() == 0 {
		t.Errorf("the node sent the publisher no PLI")
	}

	// One publisher per name: a second WHIP publisher is refused.
	h264, ogg := testutil.WHIPClip(t, 320, 240, 30, 20)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	_, err = testutil.PublishWHIP(ctx2, n.httpURL("live/cam1/whip"), testutil.WHIPOptions{H264File: h264, OggFile: ogg})
	var we *testutil.WHEPError
	if !errors.As(err, &we) || we.Status != 409 {
		t.Fatalf("second WHIP publisher: %v, want HTTP 409", err)
	}

	// Trickle ICE is not taken: the offer carries every candidate.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, p.Resource(), strings.NewReader("a=candidate:x"))
	req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("PATCH %s: %v %v, want 405", p.Resource(), resp, err)
	} else {
		resp.Body.Close()
	}

	// DELETE ends the session and the stream.
	if code, err := p.Delete(ctx); err != nil || code != 200 {
		t.Fatalf("DELETE %s: %d %v", p.Resource(), code, err)
	}
	testutil.Eventually(t, 10*time.Second, "stream unpublished after DELETE", func() bool {
		_, ok := n.Hub.Lookup("live/cam1")
		return !ok
	})
	if n.WHIP.Sessions() != 0 {
		t.Errorf("%d WHIP sessions after DELETE, want 0", n.WHIP.Sessions())
	}
}

// TestWHIPRefusesBadOffers: an AV1-only offer is refused naming AV1,
// malformed SDP and a wrong content type are refused, and the node serves on.
func TestWHIPRefusesBadOffers(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// An AV1-only publisher (pion offering AV1 only): VP8 and VP9 would
	// be transcoded (whip_vpx_test.go), AV1 is not taken.
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeAV1, ClockRate: 90000}, PayloadType: 45}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := testutil.PostWHEP(ctx, n.httpURL("live/av1/whip"), "application/sdp", []byte(offer.SDP))
	if err != nil {
		t.Fatal(err)
	}
	if code != 406 || !strings.Contains(body, "AV1") || !strings.Contains(body, "VP8") {
		t.Fatalf("AV1-only offer: %d %q, want 406 naming AV1 and what is taken (H.264, VP8, VP9)", code, body)
	}

	for _, tc := range []struct {
		name, ctype, body string
		want              int
	}{
		{"malformed SDP", "application/sdp", "this is not SDP\r\n", 400},
		{"empty offer", "application/sdp", "", 400},
		{"wrong content type", "text/plain", offer.SDP, 415},
	} {
		code, body, err := testutil.PostWHEP(ctx, n.httpURL("live/bad/whip"), tc.ctype, []byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
	code, body, err = testutil.PostWHEP(ctx, n.httpURL("live/c!am/whip"), "application/sdp", []byte(offer.SDP))
	if err != nil || code != 400 {
		t.Errorf("invalid stream name: %d %q %v, want 400", code, body, err)
	}
	code, body, err = testutil.PostWHEP(ctx, n.httpURL("live/cam1@360p/whip"), "application/sdp", []byte(offer.SDP))
	if err != nil || code != 400 || !strings.Contains(body, "rendition") {
		t.Errorf("WHIP to a rendition: %d %q %v, want 400 naming the rendition", code, body, err)
	}
	if n.WHIP.Sessions() != 0 {
		t.Errorf("%d WHIP sessions after refused offers", n.WHIP.Sessions())
	}
	resp, err := http.Get(n.httpURL("metrics"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(raw)
	for _, want := range []string{`gradient_whip_rejected_offers_total{status="406"} 1`, `gradient_whip_rejected_offers_total{status="400"} 3`,
		`gradient_whip_rejected_offers_total{status="415"} 1`, "gradient_whip_sessions 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	// The node still takes a good publisher.
	publishWHIP(t, n, "live/good")
	n.waitStream(t, "live/good")
}

// TestWHIPSilentPublisherIsDropped: a publisher that stops sending media
// is dropped after the media timeout and its stream ends.
func TestWHIPSilentPublisherIsDropped(t *testing.T) {
	n := startNode(t)
	p := publishWHIP(t, n, "live/quiet")
	n.waitStream(t, "live/quiet")
	p.Stop()
	testutil.Eventually(t, 30*time.Second, "silent WHIP publisher dropped", func() bool {
		_, ok := n.Hub.Lookup("live/quiet")
		return !ok && n.WHIP.Sessions() == 0
	})
	// The session logs why it ended right after it left the session list.
	testutil.Eventually(t, 5*time.Second, "the log says why the publisher was dropped", func() bool {
		return strings.Contains(n.logs.String(), "no media for")
	})
}

// publisherState is what the publish page shows on window.gradientPublisher.
type publisherState struct {
	State      string  `json:"state"`
	Source     string  `json:"source"`
	VideoCodec string  `json:"videoCodec"`
	AudioCodec string  `json:"audioCodec"`
	Width      int     `json:"width"`
	Height     int     `json:"height"`
	Kbps       float64 `json:"kbps"`
	FramesSent int     `json:"framesSent"`
	Error      string  `json:"error"`
}

func waitPublisher(t *testing.T, ctx context.Context, d time.Duration, what string, ok func(publisherState) bool) publisherState {
	t.Helper()
	deadline := time.Now().Add(d)
	var st publisherState
	for {
		var raw string
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := chromedp.Run(ectx, chromedp.Evaluate(`JSON.stringify(window.gradientPublisher || {})`, &raw))
		cancel()
		if err == nil {
			st = publisherState{}
			if err := json.Unmarshal([]byte(raw), &st); err != nil {
				t.Fatalf("window.gradientPublisher %q: %v", raw, err)
			}
			if ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the publish page has not %s: %+v (last evaluate error: %v)", d, what, st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBrowserPublishesOverWHIPAndAnotherBrowserWatches: headless Chromium
// with a fake camera and microphone opens the publish page, which sends
// H.264 and Opus over WHIP; a second browser plays the stream on the
// player page over WebRTC, and FFmpeg decodes it from HLS.
func TestBrowserPublishesOverWHIPAndAnotherBrowserWatches(t *testing.T) {
	n := startNode(t)
	pub := testutil.Chromium(t, testutil.FakeMediaDevices...)
	if err := chromedp.Run(pub, chromedp.Navigate(n.httpURL("live/cam1/publish"))); err != nil {
		t.Fatal(err)
	}
	st := waitPublisher(t, pub, 45*time.Second, "sent H.264 at a bitrate", func(s publisherState) bool {
		return s.State == "live" && s.Kbps > 0 && s.FramesSent > 30
	})
	t.Logf("publisher: %+v", st)
	if st.VideoCodec != "H264" || st.AudioCodec != "opus" {
		t.Errorf("publisher sends %q + %q, want H264 + opus", st.VideoCodec, st.AudioCodec)
	}
	n.waitStream(t, "live/cam1")
	s, _ := n.Hub.Lookup("live/cam1")
	t.Logf("published: %v", s.Info().Tracks)
	if d := s.Description(); d.AudioTrack() < 0 {
		t.Errorf("published without audio: %v", s.Info().Tracks)
	}
	var href string
	if err := chromedp.Run(pub, chromedp.AttributeValue("#watch", "href", &href, nil)); err != nil {
		t.Fatal(err)
	}
	if href != n.httpURL("live/cam1/") {
		t.Errorf("publish page links to %q, want the player %q", href, n.httpURL("live/cam1/"))
	}
	testutil.Screenshot(t, pub, "whip-publish")

	view := testutil.Chromium(t)
	if err := chromedp.Run(view, chromedp.Navigate(href)); err != nil {
		t.Fatal(err)
	}
	ps := testutil.WaitPlayer(t, view, 45*time.Second, "played more than 30 webrtc frames of the browser's publish", func(s testutil.PlayerState) bool {
		return s.Mode == "webrtc" && s.Frames > 30
	})
	if ps.Width != st.Width || ps.Height != st.Height {
		t.Errorf("player shows %dx%d, publisher sends %dx%d", ps.Width, ps.Height, st.Width, st.Height)
	}
	t.Logf("player: %s", ps)
	testutil.Screenshot(t, view, "whip-watch")

	size := fmt.Sprintf("%dx%d", st.Width, st.Height)
	assertFrames(t, "HLS read of the browser's publish", ffmpegDecode(t, n.httpURL("live/cam1/index.m3u8"), 30), 30, size)
}

// TestAACRenditionOfWHIPOpusPlaysOverRTSP: @aac makes AAC of a WHIP
// publisher's Opus, for players that take AAC only; an RTSP reader
// (FFmpeg) gets AAC and decodes it.
func TestAACRenditionOfWHIPOpusPlaysOverRTSP(t *testing.T) {
	n := startNode(t)
	publishWHIP(t, n, "live/cam1")
	n.waitStream(t, "live/cam1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostats", "-rtsp_transport", "tcp",
		"-i", n.rtspURL("live/cam1@aac"), "-map", "0:a", "-t", "2", "-af", "astats=metadata=1:reset=0", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg RTSP @aac: %v\n%s", err, tailString(string(out), 3000))
	}
	if !strings.Contains(string(out), "Audio: aac") {
		t.Fatalf("RTSP @aac audio is not AAC:\n%s", tailString(string(out), 3000))
	}
	if !strings.Contains(string(out), "Number of samples") {
		t.Fatalf("no AAC audio decoded:\n%s", tailString(string(out), 3000))
	}
	st, ok := n.Hub.Lookup("live/cam1@aac")
	if !ok {
		t.Fatal("live/cam1@aac not running")
	}
	d := st.Description()
	if a := d.AudioTrack(); a < 0 || d.Tracks[a].Codec != "AAC" {
		t.Fatalf("@aac tracks %v, want AAC audio", d.Tracks)
	}
	t.Logf("@aac: %v", st.Info().Tracks)
}

// TestWHIPNeedsPublishPermission: with internal users, a WHIP offer needs
// the publish permission (401 without credentials, 403 for a reader);
// the publisher's credentials let it in, and anybody reads it.
func TestWHIPNeedsPublishPermission(t *testing.T) {
	n := startNodeWith(t, func(c *node.Config) {
		c.Auth.InternalUsers = []auth.User{
			{User: "cam", Pass: "c", Permissions: []auth.Permission{{Action: auth.ActionPublish}}},
			{User: "viewer", Pass: "v", Permissions: []auth.Permission{{Action: auth.ActionRead}}},
			{User: auth.AnyUser, Permissions: []auth.Permission{{Action: auth.ActionRead}}},
		}
	})
	h264, ogg := testutil.WHIPClip(t, 320, 240, 30, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		query string
		want  int
	}{{"", 401}, {"?user=cam&pass=wrong", 401}, {"?user=viewer&pass=v", 403}} {
		_, err := testutil.PublishWHIP(ctx, n.httpURL("live/cam1/whip"+tc.query), testutil.WHIPOptions{H264File: h264, OggFile: ogg})
		var we *testutil.WHEPError
		if !errors.As(err, &we) || we.Status != tc.want {
			t.Errorf("WHIP offer with %q: %v, want HTTP %d", tc.query, err, tc.want)
		}
	}
	p, err := testutil.PublishWHIP(ctx, n.httpURL("live/cam1/whip?user=cam&pass=c"), testutil.WHIPOptions{H264File: h264, OggFile: ogg})
	if err != nil {
		t.Fatalf("WHIP with the publisher's credentials: %v", err)
	}
	defer p.Close()
	n.waitStream(t, "live/cam1")
	sizes, _ := whepFrames(t, n.httpURL("live/cam1/whep"), 30)
	assertFrames(t, "anonymous WHEP read of an authorized WHIP publish", sizes, 30, "320x240")

	// A publisher that goes away without DELETE (its PeerConnection
	// closes) ends its stream.
	p.Close()
	testutil.Eventually(t, 30*time.Second, "stream unpublished after the publisher's connection closed", func() bool {
		_, ok := n.Hub.Lookup("live/cam1")
		return !ok && n.WHIP.Sessions() == 0
	})
}

// TestBrowserWithoutCameraPublishesTestPattern: without camera and
// microphone the publish page sends a canvas test pattern and a WebAudio
// tone, and the stream is live with H.264 and Opus.
func TestBrowserWithoutCameraPublishesTestPattern(t *testing.T) {
	n := startNode(t)
	pub := testutil.Chromium(t)
	if err := chromedp.Run(pub, chromedp.Navigate(n.httpURL("live/pattern/publish"))); err != nil {
		t.Fatal(err)
	}
	st := waitPublisher(t, pub, 45*time.Second, "sent the test pattern", func(s publisherState) bool {
		return s.State == "live" && s.FramesSent > 30
	})
	t.Logf("publisher: %+v", st)
	if !strings.HasPrefix(st.Source, "test pattern") || st.Width != 640 || st.Height != 360 {
		t.Errorf("publisher source %q %dx%d, want the 640x360 test pattern", st.Source, st.Width, st.Height)
	}
	n.waitStream(t, "live/pattern")
	s, _ := n.Hub.Lookup("live/pattern")
	if tr := s.Info().Tracks; len(tr) != 2 || !strings.HasPrefix(tr[0], "H264 640x360") || !strings.HasPrefix(tr[1], "Opus") {
		t.Errorf("published tracks %v, want H264 640x360 and Opus", tr)
	}
	assertFrames(t, "HLS read of the test pattern", ffmpegDecode(t, n.httpURL("live/pattern/index.m3u8"), 30), 30, "640x360")
}

// TestAACRenditionOfWHIPOpusPlaysOverMPEGTSHLS: MPEG-TS HLS cannot carry
// Opus; its @aac rendition carries the WHIP publisher's audio as AAC.
func TestAACRenditionOfWHIPOpusPlaysOverMPEGTSHLS(t *testing.T) {
	n := startNodeWith(t, func(c *node.Config) { c.HLS.Variant = egress.HLSVariantMPEGTS })
	publishWHIP(t, n, "live/cam1")
	n.waitStream(t, "live/cam1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostats", "-i", n.httpURL("live/cam1@aac/index.m3u8"),
		"-map", "0:a", "-map", "0:v", "-t", "2", "-af", "astats=metadata=1:reset=0", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg MPEG-TS HLS @aac: %v\n%s", err, tailString(string(out), 3000))
	}
	for _, want := range []string{"Audio: aac", "Video: h264", "Number of samples"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("MPEG-TS HLS @aac: no %q in\n%s", want, tailString(string(out), 3000))
		}
	}
}

// watchTamperedWHIP publishes the 320x240 test clip at live/NAME with o
// (its network tampered with: drops, reordering), reads 90 frames of it
// over WHEP and checks they decode, none with concealed macroblocks (an
// incomplete access unit forwarded would have some).
func watchTamperedWHIP(t *testing.T, n *testNode, name string, o testutil.WHIPOptions) *testutil.WHIPPublisher {
	t.Helper()
	o.H264File, o.OggFile = testutil.WHIPClip(t, 320, 240, 30, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	p, err := testutil.PublishWHIP(ctx, n.httpURL("live/"+name+"/whip"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	n.waitStream(t, "live/"+name)
	var concealed atomic.Int64
	astiav.SetLogCallback(func(_ astiav.Classer, _ astiav.LogLevel, _, msg string) {
		if strings.Contains(msg, "concealing") {
			concealed.Add(1)
		}
	})
	sizes, _ := whepFrames(t, n.httpURL("live/"+name+"/whep"), 90)
	astiav.ResetLogCallback()
	assertFrames(t, "WHEP read of live/"+name, sizes, 90, "320x240")
	if c := concealed.Load(); c > 0 {
		t.Errorf("live/%s: the viewer's decoder concealed errors in %d pictures: incomplete access units were forwarded", name, c)
	}
	return p
}

// TestWHIPVideoLossWaitsForKeyframe: a publisher whose network loses
// video packets is detected (every lost packet counted), asked for a
// keyframe, and viewers get only video that decodes.
func TestWHIPVideoLossWaitsForKeyframe(t *testing.T) {
	n := startNode(t)
	p := watchTamperedWHIP(t, n, "lossy", testutil.WHIPOptions{DropVideoEvery: 150})
	d := p.Dropped()
	if d == 0 {
		t.Fatal("the publisher dropped nothing")
	}
	testutil.Eventually(t, 10*time.Second, "the node counted every dropped packet", func() bool {
		return n.WHIP.LostPackets() >= uint64(d)
	})
	if lost, dropped := n.WHIP.LostPackets(), p.Dropped(); lost > uint64(dropped) {
		t.Errorf("node counted %d lost packets, the publisher dropped %d", lost, dropped)
	}
	t.Logf("dropped %d video packets, %d PLIs received", d, p.PLIs())
}

// TestWHIPVideoLossIsRepairedByNACK: a publisher that resends what it is
// asked for (as browsers and OBS do) loses nothing to its lossy network:
// the node asks for each missing packet by NACK, the resent packet fills
// the gap within nack_wait, and viewers get every access unit.
func TestWHIPVideoLossIsRepairedByNACK(t *testing.T) {
	n := startNode(t)
	p := watchTamperedWHIP(t, n, "mended", testutil.WHIPOptions{DropVideoEvery: 40, ResendOnNACK: true})
	d := p.Dropped()
	if d < 4 {
		t.Fatalf("the publisher dropped %d packets, too few to tell", d)
	}
	// Without NACKs (or without the wait) every dropped packet is lost
	// and none recovered. A resent packet may be dropped again and asked
	// for once more; a machine stalled past nack_wait may lose one.
	lost, rec := n.WHIP.LostPackets(), n.WHIP.RecoveredPackets()
	if rec < uint64(d)/2 || lost > uint64(d)/4 {
		t.Errorf("publisher dropped %d video packets (and was asked for %d): node recovered %d, lost %d", d, p.NACKed(), rec, lost)
	}
	if p.NACKed() == 0 {
		t.Error("the publisher was never asked for a packet again")
	}
	t.Logf("dropped %d video packets, asked for %d again, recovered %d, lost %d, %d PLIs", d, p.NACKed(), rec, lost, p.PLIs())
}

// TestWHIPReorderedVideoIsNoLoss: packets that arrive out of order (a
// network that reorders) are put back in order within nack_wait: none
// counted lost, no keyframe wait, viewers get every access unit.
func TestWHIPReorderedVideoIsNoLoss(t *testing.T) {
	n := startNode(t)
	p := watchTamperedWHIP(t, n, "swapped", testutil.WHIPOptions{SwapVideoEvery: 40})
	sw := p.Swapped()
	if sw < 4 {
		t.Fatalf("the publisher swapped %d packets, too few to tell", sw)
	}
	// Before the wait, each swap was a loss (the late packet then
	// dropped as too old) and a keyframe wait.
	if lost, rec := n.WHIP.LostPackets(), n.WHIP.RecoveredPackets(); lost != 0 || rec < uint64(sw)/2 {
		t.Errorf("publisher swapped %d video packets: node counted %d lost and %d recovered, want 0 lost", sw, lost, rec)
	}
}

// whipCaptureOffsets reads the hub units of path for d and returns, per
// kind, every unit's capture time (stamped by the publisher) minus its
// PTS: on one timeline these are all alike.
func whipCaptureOffsets(t *testing.T, n *testNode, path string, d time.Duration) (video, audio []time.Duration) {
	t.Helper()
	rd, err := n.Hub.Subscribe(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	tracks := rd.Description().Tracks
	end := time.After(d)
	for {
		select {
		case u, ok := <-rd.C():
			if !ok || u == nil {
				t.Fatal("stream ended")
			}
			if tracks[u.Track].Codec.IsVideo() {
				for _, nalu := range u.Data {
					if c, ok := media.ParseCaptureSEI(nalu); ok {
						video = append(video, time.Duration(c.UnixNano())-u.PTS)
						break
					}
				}
			} else if len(u.Data) == 1 {
				if c, ok := testutil.WHIPAudioCapture(u.Data[0]); ok {
					audio = append(audio, time.Duration(c.UnixNano())-u.PTS)
				}
			}
		case <-end:
			return video, audio
		}
	}
}

func medianDuration(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestWHIPSenderReportsLineUpLateAudio: a publisher captures audio and
// video together but its audio reaches the node 500 ms late (held back,
// then sent at once); its RTCP sender reports tell the truth. The hub's
// audio and video units of the same capture time get the same PTS,
// within one video frame.
func TestWHIPSenderReportsLineUpLateAudio(t *testing.T) {
	n := startNode(t)
	h264, ogg := testutil.WHIPClip(t, 320, 240, 30, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := testutil.PublishWHIP(ctx, n.httpURL("live/sync/whip"), testutil.WHIPOptions{H264File: h264, OggFile: ogg,
		CaptureStamps: true, AudioHold: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	n.waitStream(t, "live/sync")
	video, audio := whipCaptureOffsets(t, n, "live/sync", 4*time.Second)
	if len(video) < 60 || len(audio) < 100 {
		t.Fatalf("%d stamped video and %d stamped audio units in 4 s", len(video), len(audio))
	}
	mv, ma := medianDuration(video), medianDuration(audio)
	skew := ma - mv // > 0: audio's PTS is early for its capture time
	t.Logf("video units %d, audio units %d; audio PTS - video PTS at the same capture time: %v", len(video), len(audio), -skew)
	if skew < -time.Second/30 || skew > time.Second/30 {
		t.Errorf("audio and video of the same capture time are %v apart in PTS, want within one frame (33 ms)", -skew)
	}
}

// TestWHIPWithoutSenderReportsAudioFollowsArrival: a publisher that sends
// no RTCP sender reports still gets its audio through, timed by arrival
// (it is sent at capture time, so it lines up), after the node waited
// for reports in vain.
func TestWHIPWithoutSenderReportsAudioFollowsArrival(t *testing.T) {
	n := startNode(t)
	h264, ogg := testutil.WHIPClip(t, 320, 240, 30, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := testutil.PublishWHIP(ctx, n.httpURL("live/nosr/whip"), testutil.WHIPOptions{H264File: h264, OggFile: ogg,
		CaptureStamps: true, NoSenderReports: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	n.waitStream(t, "live/nosr")
	video, audio := whipCaptureOffsets(t, n, "live/nosr", 6*time.Second)
	if len(video) < 60 || len(audio) < 50 {
		t.Fatalf("%d stamped video and %d stamped audio units in 6 s", len(video), len(audio))
	}
	skew := medianDuration(audio) - medianDuration(video)
	t.Logf("video units %d, audio units %d; audio PTS - video PTS at the same capture time: %v", len(video), len(audio), -skew)
	if skew < -100*time.Millisecond || skew > 100*time.Millisecond {
		t.Errorf("audio timed by arrival is %v off video, want within 100 ms", -skew)
	}
	testutil.Eventually(t, 5*time.Second, "the node logged the arrival fallback", func() bool {
		return strings.Contains(n.logs.String(), "no RTCP sender reports")
	})
}
