package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/dashboard"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/vod"
)

// A cluster whose nodes speak TLS: HTTPS on the HTTP port, RTSPS on the
// RTSP port, each verifying its peers against overlay.peer_ca.

// testCA is a CA made for one test, and its PEM file.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(2 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, file: file, pool: pool}
}

// leaf issues a server certificate for 127.0.0.1 and returns its files.
func (ca *testCA) leaf(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(2 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// tlsNode is a `gradient node` process with HTTPS and RTSPS on.
type tlsNode struct {
	*procNode
	client *http.Client // trusts the cluster CA
}

func (p *tlsNode) base() string                { return "https://" + p.http }
func (p *tlsNode) surl(path string) string     { return p.base() + "/" + path }
func (p *tlsNode) rtspsURL(path string) string { return "rtsps://" + p.rtsp + "/" + path }

func startTLSNode(t *testing.T, bin, name, join string, signer, peerCA *testCA, extra string) *tlsNode {
	t.Helper()
	cert, key := signer.leaf(t)
	p := &tlsNode{procNode: &procNode{name: name,
		http:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		rtsp:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		gossip: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: signer.pool}}}}
	joinLine := ""
	if join != "" {
		joinLine = "  join: [\"" + join + "\"]\n"
	}
	cfg := fmt.Sprintf(`name: %s
data: %s
http: "%s"
http_tls_cert: "%s"
http_tls_key: "%s"
rtsp: {addr: "%s", udp_rtp_addr: "off", udp_rtcp_addr: "off", tls_cert: "%s", tls_key: "%s"}
srt: {addr: "off"}
rtmp: {addr: "off"}
gossip:
  addr: "%s"
  key: "%s"
%soverlay:
  peer_ca: "%s"
  device_classes:
    tv: {source: 10, 360p: 2}
  default_device: tv
  planner_debounce: 100ms
  planner_interval: 1s
  probe_interval: 300ms
  probe_timeout: 200ms
  suspicion_mult: 4
  push_pull_interval: 2s
vod:
  segment_duration: 2s
  replicas: 1
  ladder: [{name: "180p", height: 180, kbps: 300}]
%s`, name, t.TempDir(), p.http, cert, key, p.rtsp, cert, key, p.gossip, clusterKey, joinLine, peerCA.file, extra)
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p.proc = testutil.Start(t, bin, "node", "--config", file)
	testutil.Eventually(t, 30*time.Second, name+" answers /healthz over HTTPS", func() bool {
		r, err := p.client.Get(p.surl("healthz"))
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	return p
}

func (p *tlsNode) getJSON(t *testing.T, path string, out any) int {
	t.Helper()
	r, err := p.client.Get(p.surl(path))
	if err != nil {
		return 0
	}
	defer r.Body.Close()
	if r.StatusCode == 200 && json.NewDecoder(r.Body).Decode(out) != nil {
		return 0
	}
	return r.StatusCode
}

func (p *tlsNode) cluster(t *testing.T) (overlay.ClusterStatus, bool) {
	var st overlay.ClusterStatus
	return st, p.getJSON(t, "api/v1/cluster", &st) == 200
}

// whepFrames opens a WHEP session at url over HTTPS and counts the
// access units received.
func tlsWHEPFrames(t *testing.T, client *http.Client, url string) (func() int, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frames := make(chan struct{}, 10000)
	sess, err := testutil.DialWHEP(ctx, url, testutil.WHEPOptions{Loopback: true, HTTPClient: client,
		OnAU: func(testutil.WHEPAccessUnit) {
			select {
			case frames <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		t.Fatalf("WHEP %s: %v", url, err)
	}
	return func() int { return len(frames) }, func() { sess.Close() }
}

// TestTLSClusterVoDWatchRelayOverHTTPSAndRTSPS: three node processes, all
// with HTTPS on the HTTP port and RTSPS on the RTSP port. n0 and n1 carry
// certificates of the cluster CA (their overlay.peer_ca); n2's is signed
// by another CA. Between n0 and n1 everything works over TLS: a live
// relay n0→n1 over rtsps:// feeds a WHEP viewer at n1, /watch at a full
// n0 sends the viewer to an https:// edge, a VoD title added at n0 plays
// at n1 from chunks fetched from n0 over HTTPS, and n1's dashboard reads
// n0's load over HTTPS. n2 is refused: n1's relay from it fails with a
// log line and n1's dashboard reports a certificate error for it.
func TestTLSClusterVoDWatchRelayOverHTTPSAndRTSPS(t *testing.T) {
	bin := buildGradient(t)
	ca, rogue := newTestCA(t, "cluster CA"), newTestCA(t, "rogue CA")
	n0 := startTLSNode(t, bin, "n0", "", ca, ca, "webrtc: {ice_udp_addr: \"127.0.0.1:0\", max_sessions: 1}\n")
	n1 := startTLSNode(t, bin, "n1", n0.gossip, ca, ca, "webrtc: {ice_udp_addr: \"127.0.0.1:0\"}\n")
	n2 := startTLSNode(t, bin, "n2", n0.gossip, rogue, ca, "webrtc: {ice_udp_addr: \"127.0.0.1:0\"}\n")
	nodes := []*tlsNode{n0, n1, n2}
	testutil.Eventually(t, 30*time.Second, "3 members alive at every node, advertising HTTPS and RTSPS", func() bool {
		for _, p := range nodes {
			st, ok := p.cluster(t)
			if !ok || len(st.Members) != 3 {
				return false
			}
			for _, m := range st.Members {
				if m.State != "alive" || !m.Meta.HTTPS || !m.Meta.RTSPS {
					return false
				}
			}
		}
		return true
	})

	// Live: published into n0 over RTSPS, relayed to n1 over RTSPS.
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", n0.rtspsURL("live/cam1"), "-rtsp_transport", "tcp")
	testutil.Eventually(t, 30*time.Second, "live/cam1 is known at n1", func() bool {
		st, ok := n1.cluster(t)
		return ok && len(st.Streams) >= 1
	})
	noFollow := &http.Client{Timeout: 30 * time.Second, Transport: n1.client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	watch := func(p *tlsNode, stream string) (int, string) {
		r, err := noFollow.Get(p.surl("watch/" + stream + "?device=tv"))
		if err != nil {
			return 0, err.Error()
		}
		r.Body.Close()
		return r.StatusCode, r.Header.Get("Location")
	}
	if code, loc := watch(n1, "live/cam1"); code != http.StatusFound || !strings.HasPrefix(loc, "/live/cam1") {
		t.Fatalf("/watch at n1: %d %q, want 302 to the local player", code, loc)
	}
	frames1, close1 := tlsWHEPFrames(t, n1.client, n1.surl("live/cam1/whep?device=tv"))
	defer close1()
	testutil.Eventually(t, 40*time.Second, "the WHEP viewer at n1 receives 30 access units relayed from n0", func() bool {
		return frames1() >= 30
	})
	st1, _ := n1.cluster(t)
	relayed := false
	for _, r := range st1.Relays {
		if r.Path == "live/cam1" {
			for _, s := range r.Sources {
				if s == "rtsps://"+n0.rtsp {
					relayed = true
				}
			}
			t.Logf("n1 relays %s from %v", r.Path, r.Sources)
		}
	}
	if !relayed {
		t.Errorf("n1's relays %+v: want live/cam1 pulled from rtsps://%s", st1.Relays, n0.rtsp)
	}

	// /watch at a full n0 (max_sessions 1, held by one viewer) redirects to
	// an edge's https:// URL.
	_, close0 := tlsWHEPFrames(t, n0.client, n0.surl("live/cam1/whep?device=tv"))
	defer close0()
	code, loc := watch(n0, "live/cam1")
	if code != http.StatusFound || !(strings.HasPrefix(loc, n1.base()+"/watch/live/cam1") || strings.HasPrefix(loc, n2.base()+"/watch/live/cam1")) {
		t.Fatalf("/watch at the full n0: %d %q, want 302 to https://<edge>/watch/live/cam1", code, loc)
	}
	t.Logf("/watch at the full n0 redirects to %s", loc)

	// VoD: added at n0, played at n1 from chunks fetched over HTTPS.
	vclip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 6, GOP: 25})
	cmd := exec.Command(bin, "vod", "add", "--node", n0.base(), "--title", "Over TLS", vclip)
	// The CLI verifies the node against the system pool: the cluster CA is
	// put there for it only (the nodes verify each other with peer_ca).
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca.file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gradient vod add over HTTPS: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	id := lines[len(lines)-1]
	testutil.Eventually(t, 40*time.Second, "n1 lists the title ready", func() bool {
		var tj vod.TitleJSON
		return n1.getJSON(t, "api/v1/vod/titles/"+id, &tj) == 200 && tj.State == vod.StateReady
	})
	chunks := 0
	for _, path := range tlsTitleChunks(t, n1, id) {
		r, err := n1.client.Get(n1.base() + path)
		if err != nil {
			t.Fatalf("n1 %s: %v", path, err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		name := path[strings.LastIndexByte(path, '/')+1:]
		want, _, _ := strings.Cut(name, ".")
		if sum := sha256.Sum256(b); r.StatusCode != 200 || hex.EncodeToString(sum[:]) != want {
			t.Fatalf("n1 %s: %s, %d bytes not matching the digest", path, r.Status, len(b))
		}
		chunks++
	}
	var cs vod.CacheStatus
	if code := n1.getJSON(t, "api/v1/vod/cache", &cs); code != 200 {
		t.Fatalf("n1 /api/v1/vod/cache: %d", code)
	}
	up := cs.Fetch.BytesServed["peer"] + cs.Fetch.BytesServed["origin"]
	t.Logf("n1 served %d chunks of the title; bytes by source %v", chunks, cs.Fetch.BytesServed)
	if !cs.Cluster || up == 0 {
		t.Fatalf("n1's /api/v1/vod/cache %+v: want chunks fetched from n0 over HTTPS", cs)
	}

	// The dashboard at n1 reads n0's load over HTTPS, and reports n2's
	// certificate as refused.
	n0ok, n2refused := dashboardLoads(t, n1, n0.name, n2.name)
	if !n0ok {
		t.Error("n1's dashboard load event has no error-free load of n0")
	}
	if !n2refused {
		t.Error("n1's dashboard load event does not report n2's certificate as refused")
	}

	// n2 (certificate of another CA) is refused as a relay source.
	testutil.FFmpegPublish(t, clip, "rtsp", n2.rtspsURL("live/rogue"), "-rtsp_transport", "tcp")
	testutil.Eventually(t, 30*time.Second, "live/rogue is known at n1", func() bool {
		st, ok := n1.cluster(t)
		if !ok {
			return false
		}
		for _, s := range st.Streams {
			if s.Name == "live/rogue" {
				return true
			}
		}
		return false
	})
	go watch(n1, "live/rogue") // demand at n1: the plan relays n2→n1
	testutil.Eventually(t, 40*time.Second, "n1 logs the refusal of n2's certificate", func() bool {
		return strings.Contains(n1.proc.Output(), "relay refused the source's TLS certificate")
	})
	var streams struct {
		Streams []struct {
			Path string `json:"path"`
		} `json:"streams"`
	}
	if n1.getJSON(t, "api/v1/streams", &streams) == 200 {
		for _, s := range streams.Streams {
			if s.Path == "live/rogue" {
				t.Errorf("n1 carries live/rogue, relayed from a node whose certificate its peer_ca does not sign")
			}
		}
	}
	for _, l := range strings.Split(n1.proc.Output(), "\n") {
		if strings.Contains(l, "relay refused") {
			t.Logf("n1: %s", l)
			break
		}
	}
}

// tlsTitleChunks are the chunk paths of every rendition of title id as
// p's playlists name them.
func tlsTitleChunks(t *testing.T, p *tlsNode, id string) []string {
	t.Helper()
	get := func(path string) string {
		r, err := p.client.Get(p.base() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 {
			t.Fatalf("%s %s: %s", p.name, path, r.Status)
		}
		return string(b)
	}
	var out []string
	for _, l := range strings.Split(get("/vod/"+id+"/index.m3u8"), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, ml := range strings.Split(get("/vod/"+id+"/"+l), "\n") {
			if i := strings.Index(ml, "/vod/chunks/"); i >= 0 {
				u := ml[i:]
				if j := strings.IndexByte(u, '"'); j >= 0 {
					u = u[:j]
				}
				out = append(out, strings.TrimSpace(u))
			}
		}
	}
	if len(out) < 2 {
		t.Fatalf("%s: title %s names %d chunks", p.name, id, len(out))
	}
	return out
}

// dashboardLoads reads p's dashboard event stream until a load event lists
// ok without an error and refused with a certificate error (or 30 s pass).
func dashboardLoads(t *testing.T, p *tlsNode, ok, refused string) (okSeen, refusedSeen bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.surl("api/v1/events"), nil)
	c := &http.Client{Transport: p.client.Transport}
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s /api/v1/events: %v", p.name, err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	event := ""
	for sc.Scan() {
		l := sc.Text()
		if e, found := strings.CutPrefix(l, "event: "); found {
			event = e
			continue
		}
		data, found := strings.CutPrefix(l, "data: ")
		if !found || event != "load" {
			continue
		}
		var ev dashboard.LoadEvent
		if json.Unmarshal([]byte(data), &ev) != nil {
			continue
		}
		for _, n := range ev.Nodes {
			if n.Node == ok && n.Error == "" {
				okSeen = true
			}
			if n.Node == refused && strings.Contains(n.Error, "certificate") {
				refusedSeen = true
				t.Logf("%s's dashboard: load of %s: %s", p.name, refused, n.Error)
			}
		}
		if okSeen && refusedSeen {
			return
		}
	}
	return
}
