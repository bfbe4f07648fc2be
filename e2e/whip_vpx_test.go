package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// publishVPX publishes VP8 or VP9 frames (looped, 30 fps) over WHIP from a
// pion client that offers only that codec, as a browser without an H.264
// encoder does.
func publishVPX(t *testing.T, endpoint, mime string, frames [][]byte) {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: mime, ClockRate: 90000, RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack", Parameter: "pli"}}}, PayloadType: 96},
		webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)).
		NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000}, "video", "vpx")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(pc.LocalDescription().SDP))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP %s offer: HTTP %d %s", mime, resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := track.WriteSample(media.Sample{Data: frames[i%len(frames)], Duration: time.Second / 30}); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		pc.Close()
	})
}

// TestWHIPVP8AndVP9PublishersAreTranscodedToH264: a WHIP publisher that
// offers only VP8 (or only VP9), as a browser without an H.264 encoder
// does, is answered with that codec; the node makes its video H.264, and
// a WHEP viewer and FFmpeg over HLS decode it at its size.
func TestWHIPVP8AndVP9PublishersAreTranscodedToH264(t *testing.T) {
	n := startNode(t)
	for _, tc := range []struct{ codec, mime string }{{"vp8", webrtc.MimeTypeVP8}, {"vp9", webrtc.MimeTypeVP9}} {
		t.Run(tc.codec, func(t *testing.T) {
			path := "live/" + tc.codec
			_, frames := testutil.VPXClip(t, tc.codec, "320x240", 30, 6, 30)
			publishVPX(t, n.httpURL(path+"/whip"), tc.mime, frames)
			n.waitStream(t, path)
			st, _ := n.Hub.Lookup(path)
			desc := st.Description()
			v := desc.Tracks[desc.VideoTrack()]
			if w, h, _, err := v.Video(); v.Codec != "H264" || err != nil || w != 320 || h != 240 {
				t.Fatalf("published video %s %dx%d (%v), want H264 320x240", v.Codec, w, h, err)
			}
			sizes, _ := whepFrames(t, n.httpURL(path+"/whep"), 60)
			assertFrames(t, "WHEP read of a "+tc.codec+" WHIP publish", sizes, 60, "320x240")
			hls := ffmpegDecode(t, n.httpURL(path+"/index.m3u8"), 60)
			assertFrames(t, "HLS read of a "+tc.codec+" WHIP publish", hls, 60, "320x240")
		})
	}
	if !strings.Contains(n.logs.String(), "whip video is transcoded to H.264") {
		t.Errorf("no log line says the video is transcoded")
	}
}

// TestBrowserPublishingVP8IsWatchedAsH264: headless Chromium's publish
// page with ?codec=vp8 offers VP8 alone (a browser without an H.264
// encoder); the node publishes H.264 made of it, and a second browser
// plays it over WebRTC.
func TestBrowserPublishingVP8IsWatchedAsH264(t *testing.T) {
	n := startNode(t)
	pub := testutil.Chromium(t, testutil.FakeMediaDevices...)
	if err := chromedp.Run(pub, chromedp.Navigate(n.httpURL("live/cam1/publish?codec=vp8"))); err != nil {
		t.Fatal(err)
	}
	st := waitPublisher(t, pub, 45*time.Second, "sent VP8 at a bitrate", func(s publisherState) bool {
		return s.State == "live" && s.Kbps > 0 && s.FramesSent > 30
	})
	t.Logf("publisher: %+v", st)
	if st.VideoCodec != "VP8" {
		t.Errorf("publisher sends %q, want VP8 (?codec=vp8)", st.VideoCodec)
	}
	n.waitStream(t, "live/cam1")
	s, _ := n.Hub.Lookup("live/cam1")
	d := s.Description()
	if v := d.Tracks[d.VideoTrack()]; v.Codec != "H264" {
		t.Fatalf("published video %s, want H264 made of the VP8", v.Codec)
	}
	view := testutil.Chromium(t)
	if err := chromedp.Run(view, chromedp.Navigate(n.httpURL("live/cam1/"))); err != nil {
		t.Fatal(err)
	}
	ps := testutil.WaitPlayer(t, view, 45*time.Second, "played more than 30 webrtc frames of the browser's VP8 publish", func(s testutil.PlayerState) bool {
		return s.Mode == "webrtc" && s.Frames > 30
	})
	if ps.Width != st.Width || ps.Height != st.Height {
		t.Errorf("player shows %dx%d, publisher sends %dx%d", ps.Width, ps.Height, st.Width, st.Height)
	}
	t.Logf("player: %s", ps)
}
