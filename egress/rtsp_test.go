package egress_test

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

type rtspLogs = testutil.LogBuffer

// rtspReadNode is a hub served over RTSP by an ingest.RTSPServer reading
// through an egress.RTSPReader, wired as a node wires them.
type rtspReadNode struct {
	hub  *media.Hub
	read *egress.RTSPReader
	addr string
	logs *rtspLogs
}

func startRTSPReadNode(t *testing.T) *rtspReadNode {
	t.Helper()
	return startRTSPReadNodeWith(t, ingest.RTSPConfig{})
}

func startRTSPReadNodeWith(t *testing.T, cfg ingest.RTSPConfig) *rtspReadNode {
	t.Helper()
	return startRTSPReadNodeHub(t, media.HubConfig{}, cfg)
}

func startRTSPReadNodeHub(t *testing.T, hc media.HubConfig, cfg ingest.RTSPConfig) *rtspReadNode {
	t.Helper()
	logs := &rtspLogs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub := testutil.NewHub(t, hc, log)
	read, err := egress.NewRTSPReader(egress.RTSPReaderConfig{}, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr, cfg.DisableUDP, cfg.Read = "127.0.0.1:0", true, read
	srv, err := ingest.NewRTSPServer(cfg, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		read.Close()
		hub.Close()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return &rtspReadNode{hub: hub, read: read, addr: srv.Addr().String(), logs: logs}
}

func (n *rtspReadNode) readers(path string) int {
	s, ok := n.hub.Lookup(path)
	if !ok {
		return -1
	}
	return s.Info().Readers
}

// rtspWatch plays url over TCP with gortsplib's default read timeout.
func rtspWatch(t *testing.T, url string) (*testutil.RTSPPlayer, error) {
	t.Helper()
	return testutil.RTSPPlay(t, url, testutil.RTSPPlayOptions{Transport: gortsplib.TransportTCP})
}

func TestRTSPReadersShareOneHubReaderAndReleaseIt(t *testing.T) {
	n := startRTSPReadNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10, Audio: "aac"})
	testutil.PublishFile(t, n.hub, "live/fan", clip, false)

	const viewers = 20
	vs := make([]*testutil.RTSPPlayer, viewers)
	for i := range vs {
		v, err := rtspWatch(t, "rtsp://"+n.addr+"/live/fan")
		if err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
		vs[i] = v
	}
	testutil.Eventually(t, 10*time.Second, "every viewer receives IDRs, P pictures and audio", func() bool {
		for _, v := range vs {
			st := v.Stats()
			if st.IDRs < 1 || st.AccessUnits < 15 || st.AudioPackets < 10 {
				return false
			}
		}
		return true
	})
	if got := n.readers("live/fan"); got != 1 {
		t.Fatalf("hub shows %d readers for %d RTSP viewers, want 1 shared reader", got, viewers)
	}
	var aac *format.MPEG4Audio
	if vs[0].Desc.FindFormat(&aac) == nil {
		t.Fatalf("viewer's SDP has no AAC: %v", vs[0].Desc.Medias)
	}

	for _, v := range vs {
		v.Close()
	}
	testutil.Eventually(t, 5*time.Second, "shared reader released after the last viewer left", func() bool {
		return n.readers("live/fan") == 0
	})
	// A new viewer gets a fresh shared stream.
	v, err := rtspWatch(t, "rtsp://"+n.addr+"/live/fan")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "new viewer receives an IDR", func() bool {
		return v.Stats().IDRs > 0
	})
	if got := n.readers("live/fan"); got != 1 {
		t.Fatalf("hub shows %d readers, want 1", got)
	}
}

func TestRTSPReadersAreClosedWhenTheStreamEnds(t *testing.T) {
	n := startRTSPReadNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10})
	stop := testutil.PublishFile(t, n.hub, "live/end", clip, false)
	var vs []*testutil.RTSPPlayer
	for i := 0; i < 3; i++ {
		v, err := rtspWatch(t, "rtsp://"+n.addr+"/live/end")
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	testutil.Eventually(t, 10*time.Second, "viewers receive video", func() bool {
		for _, v := range vs {
			if v.Stats().AccessUnits == 0 {
				return false
			}
		}
		return true
	})
	stop()
	for i, v := range vs {
		select {
		case <-v.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("viewer %d still playing 10 s after the stream ended", i)
		}
	}
	_, err := rtspWatch(t, "rtsp://"+n.addr+"/live/end")
	var bad liberrors.ErrClientBadStatusCode
	if !errors.As(err, &bad) || bad.Code != base.StatusNotFound {
		t.Fatalf("DESCRIBE of the ended stream: %v, want 404", err)
	}
}

func TestRTSPReadIsPlayableByFFprobe(t *testing.T) {
	n := startRTSPReadNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10, Audio: "opus"})
	testutil.PublishFile(t, n.hub, "live/probe", clip, false)
	testutil.RequireTool(t, "ffprobe")
	p := testutil.Start(t, "ffprobe", "-hide_banner", "-v", "error", "-rtsp_transport", "tcp",
		"-show_entries", "stream=codec_name,width,height,channels", "-of", "compact",
		"rtsp://"+n.addr+"/live/probe")
	if err := p.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, p.Output())
	}
	out := p.Output()
	if !strings.Contains(out, "codec_name=h264|width=320|height=240") || !strings.Contains(out, "codec_name=opus") {
		t.Fatalf("ffprobe does not see H.264 320x240 and Opus:\n%s", out)
	}
}

// rtspStalledReader plays path over TCP with a tiny receive buffer and then
// never reads again, like a viewer on a dead link.
func rtspStalledReader(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	session := ""
	do := func(req string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		status, err := br.ReadString('\n')
		if err != nil || !strings.Contains(status, " 200 ") {
			t.Fatalf("%s: %q %v", strings.Fields(req)[0], status, err)
		}
		length := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			line = strings.TrimSpace(line)
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ":")
			switch strings.ToLower(k) {
			case "content-length":
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			case "session":
				session, _, _ = strings.Cut(strings.TrimSpace(v), ";")
			}
		}
		if _, err := io.CopyN(io.Discard, br, int64(length)); err != nil {
			t.Fatal(err)
		}
	}
	u := "rtsp://" + addr + "/" + path
	do("DESCRIBE " + u + " RTSP/1.0\r\nCSeq: 1\r\n\r\n")
	do("SETUP " + u + "/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
	do("PLAY " + u + " RTSP/1.0\r\nCSeq: 3\r\nSession: " + session + "\r\n\r\n")
	return c
}

// rtspPublishHeavy publishes a synthetic 12 Mbit/s H.264 stream at path
// (the parameter sets of a real clip, pictures of random bytes that only
// need to be packetized, not decoded) until the test ends.
func rtspPublishHeavy(t *testing.T, hub *media.Hub, path string) {
	t.Helper()
	testutil.PublishFile(t, hub, "live/params", testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10}), false)
	src, _ := hub.Lookup("live/params")
	v := src.Description().Tracks[src.Description().VideoTrack()]
	pub, err := hub.Publish(path, media.Description{Tracks: []*media.Track{v}}, "test heavy")
	if err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer pub.Close()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			pic := make([]byte, 50_000)
			rand.Read(pic)
			u := &media.Unit{PTS: time.Duration(i) * time.Second / 30, Received: time.Now(), Key: i%10 == 0}
			u.DTS = u.PTS
			if u.Key {
				pic[0] = 0x65 // IDR slice
				u.Data = [][]byte{v.SPS, v.PPS, pic}
			} else {
				pic[0] = 0x41 // non-IDR slice
				u.Data = [][]byte{pic}
			}
			pub.Write(u)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
}

func TestRTSPStalledReaderIsDroppedWithoutSlowingOthers(t *testing.T) {
	n := startRTSPReadNodeWith(t, ingest.RTSPConfig{WriteQueueSize: 256, WriteTimeout: 2 * time.Second})
	rtspPublishHeavy(t, n.hub, "live/slow")
	good, err := rtspWatch(t, "rtsp://"+n.addr+"/live/slow")
	if err != nil {
		t.Fatal(err)
	}
	stalled := rtspStalledReader(t, n.addr, "live/slow")
	testutil.Eventually(t, 20*time.Second, "stalled reader dropped", func() bool {
		return strings.Contains(n.logs.String(), "rtsp reader too slow, dropped")
	})
	before := good.Stats().AccessUnits
	testutil.Eventually(t, 10*time.Second, "the other reader keeps receiving", func() bool {
		return good.Stats().AccessUnits > before+15
	})
	select {
	case <-good.Done():
		t.Fatalf("the healthy reader was dropped too: %v", good.Err())
	default:
	}
	if got := n.readers("live/slow"); got != 1 {
		t.Fatalf("hub shows %d readers, want the 1 shared reader", got)
	}
	// The stalled connection was closed by the server.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stalled); err != nil {
		t.Fatalf("stalled connection not closed by the server: %v", err)
	}
}

// TestRTSPSlowRenditionDoesNotStallOtherStreams: while a DESCRIBE waits for
// a rendition to start, a DESCRIBE of another stream is answered.
func TestRTSPSlowRenditionDoesNotStallOtherStreams(t *testing.T) {
	prov := newBlockingRenditions()
	n := startRTSPReadNodeHub(t, media.HubConfig{Renditions: prov}, ingest.RTSPConfig{})
	defer close(prov.release)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 2})
	testutil.PublishFile(t, n.hub, "live/ok", clip, false)

	slow := make(chan error, 1)
	go func() {
		_, err := rtspWatch(t, "rtsp://"+n.addr+"/live/ok@360p")
		slow <- err
	}()
	select {
	case <-prov.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the rendition was never asked for")
	}
	// The provider holds the slow request; another stream's read goes on.
	p, err := rtspWatch(t, "rtsp://"+n.addr+"/live/ok")
	if err != nil {
		t.Fatalf("read of another stream while a rendition starts: %v", err)
	}
	p.WaitFrames(t, 5, 320, 240, 10*time.Second)
	select {
	case err := <-slow:
		t.Fatalf("the slow read ended before its rendition was released: %v", err)
	default:
	}
}
