package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// abuseNode is a `gradient node` process on loopback that the abuse tests
// attack: its ports, and its log (the process's output).
type abuseNode struct {
	http, rtsp, srt, rtmp string
	scheme                string
	client                *http.Client
	proc                  *testutil.Process
}

// startAbuseNode starts a node process whose config is the defaults below
// with the top-level sections in sections replacing theirs (or added).
// Every port is free, gossip is off unless sections say otherwise.
func startAbuseNode(t *testing.T, sections map[string]string) *abuseNode {
	t.Helper()
	bin := buildGradient(t)
	n := &abuseNode{
		http:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		rtsp:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		srt:    fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "udp")),
		rtmp:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		scheme: "http", client: http.DefaultClient,
	}
	keys := []string{"name", "data", "http", "rtsp", "srt", "rtmp", "webrtc", "gossip"}
	vals := map[string]string{
		"name":   "abuse",
		"data":   t.TempDir(),
		"http":   `"` + n.http + `"`,
		"rtsp":   `{addr: "` + n.rtsp + `", udp_rtp_addr: "off", udp_rtcp_addr: "off"}`,
		"srt":    `{addr: "` + n.srt + `"}`,
		"rtmp":   `{addr: "` + n.rtmp + `"}`,
		"webrtc": `{ice_udp_addr: "127.0.0.1:0"}`,
		"gossip": `{addr: "off"}`,
	}
	for k, v := range sections {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = strings.ReplaceAll(strings.ReplaceAll(v, "$RTSP", n.rtsp), "$SRT", n.srt)
	}
	var b strings.Builder
	for _, k := range keys {
		v := vals[k]
		if strings.HasPrefix(v, "\n") {
			fmt.Fprintf(&b, "%s:%s\n", k, v)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(vals["http_tls_cert"], "/") {
		n.scheme = "https"
	}
	n.proc = testutil.Start(t, bin, "node", "--config", file)
	return n
}

// waitHealthy waits for /healthz with client (nil: n.client).
func (n *abuseNode) waitHealthy(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "node answers /healthz", func() bool {
		r, err := n.client.Get(n.url("healthz"))
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
}

func (n *abuseNode) url(p string) string { return n.scheme + "://" + n.http + "/" + p }
func (n *abuseNode) rtspURL(p string) string {
	return "rtsp://" + n.rtsp + "/" + p
}

// live reports whether the node's hub has path (GET /api/v1/streams, which
// loopback may read).
func (n *abuseNode) live(t *testing.T, path string) bool {
	r, err := n.client.Get(n.url("api/v1/streams"))
	if err != nil {
		return false
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"`+path+`"`) {
			return true
		}
	}
	return false
}

func (n *abuseNode) waitLive(t *testing.T, path string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, path+" live", func() bool { return n.live(t, path) })
}

// logCount counts the node log's lines containing s.
func (n *abuseNode) logCount(s string) int { return strings.Count(n.proc.Output(), s) }

// dialFrom connects to addr from the loopback address local (another
// "client IP" on this host: 127.0.0.2 …).
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// clientFrom is an HTTP client whose connections come from local.
func clientFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
