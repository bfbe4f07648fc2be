// Package e2e runs whole Gradient nodes against real publishers (the ffmpeg
// command, the test-pattern publisher) and real viewers (ffmpeg, the Go
// WHEP client, headless Chromium).
package e2e

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
)

// testNode is a node on loopback with free ports and a captured log.
type testNode struct {
	*node.Node
	cfg  node.Config
	logs *syncBuffer
}

type syncBuffer = testutil.LogBuffer

// freeRTPPair returns an even UDP port whose successor is free too.
func freeRTPPair(t testing.TB) (int, int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		p := testutil.FreePort(t, "udp") &^ 1
		a, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		b, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p, p + 1
	}
	t.Fatal("no free even/odd UDP port pair")
	return 0, 0
}

// startNode starts a node on 127.0.0.1 with every port free and gossip off.
func startNode(t testing.TB) *testNode {
	t.Helper()
	return startNodeWith(t, func(*node.Config) {})
}

func (n *testNode) rtspURL(path string) string { return "rtsp://" + n.cfg.RTSP.Addr + "/" + path }
func (n *testNode) srtURL(path string) string {
	return "srt://" + n.cfg.SRT.Addr + "?streamid=publish:" + path + "&latency=120000"
}
func (n *testNode) httpURL(p string) string { return "http://" + n.HTTPAddr() + "/" + p }

// waitStream waits until path is live in the node's hub.
func (n *testNode) waitStream(t testing.TB, path string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, "stream "+path+" published", func() bool {
		_, ok := n.Hub.Lookup(path)
		return ok
	})
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o644) }
