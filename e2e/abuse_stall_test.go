package e2e

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// A rendition request that stalls (its source, a publisher that recorded
// and then never sends a frame, gives the serverlet no keyframe until
// serverlets.start_timeout) does not hold up another stream: that
// stream's HLS playlist and RTSP DESCRIBE are answered while the stalled
// request is still waiting (an ordering assertion, not a timing one).
func TestAbuseStalledRenditionDoesNotDelayOtherStreams(t *testing.T) {
	n := startAbuseNode(t, map[string]string{
		"rtsp":       `{addr: "$RTSP", udp_rtp_addr: "off", udp_rtcp_addr: "off", read_timeout: 90s}`,
		"serverlets": `{slots: 2, start_timeout: 30s}`,
	})
	n.waitHealthy(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/other"), "-rtsp_transport", "tcp")
	n.waitLive(t, "live/other")

	// The silent publisher announces live/other's H.264 parameters and
	// records, then sends nothing.
	tcp := gortsplib.TransportTCP
	u, err := base.ParseURL(n.rtspURL("live/other"))
	if err != nil {
		t.Fatal(err)
	}
	dc := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := dc.Start2(); err != nil {
		t.Fatal(err)
	}
	desc, _, err := dc.Describe(u)
	dc.Close()
	if err != nil {
		t.Fatalf("DESCRIBE live/other: %v", err)
	}
	var h264 *format.H264
	if desc.FindFormat(&h264) == nil {
		t.Fatal("live/other has no H.264 track")
	}
	silent := &gortsplib.Client{Transport: &tcp}
	if err := silent.StartRecording(n.rtspURL("live/stall"), &description.Session{Medias: []*description.Media{{
		Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, SPS: h264.SPS, PPS: h264.PPS, PacketizationMode: 1}},
	}}}); err != nil {
		t.Fatalf("silent publisher: %v", err)
	}
	defer silent.Close()
	n.waitLive(t, "live/stall")

	type answer struct {
		status int
		at     time.Time
	}
	stalled := make(chan answer, 1)
	start := time.Now()
	go func() {
		r, err := http.Get(n.url("live/stall@180p/index.m3u8"))
		if err != nil {
			stalled <- answer{-1, time.Now()}
			return
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		stalled <- answer{r.StatusCode, time.Now()}
	}()
	// The stalled request is under way: its serverlet waits for a keyframe.
	testutil.Eventually(t, 10*time.Second, "the stalled rendition's serverlet is starting", func() bool {
		return n.logCount("live/stall@180p") > 0 || time.Since(start) > 3*time.Second
	})

	r, err := http.Get(n.url("live/other/index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	hlsAt := time.Now()
	if r.StatusCode != 200 {
		t.Fatalf("live/other's playlist during the stall: %s", r.Status)
	}
	rc := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := rc.Start2(); err != nil {
		t.Fatal(err)
	}
	_, res, err := rc.Describe(u)
	rc.Close()
	describeAt := time.Now()
	if err != nil || res.StatusCode != base.StatusOK {
		t.Fatalf("live/other's DESCRIBE during the stall: %v %v", res, err)
	}
	select {
	case a := <-stalled:
		t.Fatalf("the stalled request ended (%d after %v) before the other stream was answered; the test needs it pending",
			a.status, a.at.Sub(start))
	default:
	}
	a := <-stalled
	t.Logf("other stream's HLS playlist answered after %v, its DESCRIBE after %v; the stalled rendition request ended %d after %v",
		hlsAt.Sub(start).Round(time.Millisecond), describeAt.Sub(start).Round(time.Millisecond), a.status, a.at.Sub(start).Round(time.Millisecond))
	if a.status == 200 {
		t.Fatalf("the stalled rendition answered 200 without a keyframe")
	}
}
