package e2e

// Each test here replays an attack on a real `gradient node` process and
// asserts what must hold instead.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/hashicorp/memberlist"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
)

// squatSDP is an H.264 ANNOUNCE body, all a squatter needs to reserve a name.
const squatSDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=squat\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" +
	"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n"

// rtspAnnounce sends an ANNOUNCE of path on c and returns the status line.
func rtspAnnounce(t *testing.T, c net.Conn, r *bufio.Reader, addr, path string) string {
	t.Helper()
	return rtspAnnounceAuth(t, c, r, addr, path, "")
}

// rtspAnnounceAuth is rtspAnnounce with an Authorization header (if any).
func rtspAnnounceAuth(t *testing.T, c net.Conn, r *bufio.Reader, addr, path, authorization string) string {
	t.Helper()
	h := ""
	if authorization != "" {
		h = "Authorization: " + authorization + "\r\n"
	}
	fmt.Fprintf(c, "ANNOUNCE rtsp://%s/%s RTSP/1.0\r\nCSeq: 1\r\n%sContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		addr, path, h, len(squatSDP), squatSDP)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("ANNOUNCE: %v", err)
	}
	for { // the rest of the head
		l, err := r.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(line)
}

// An ANNOUNCE without RECORD reserves the name only until
// rtsp.setup_timeout: then the squatter's connection is closed and the
// real encoder (ffmpeg) publishes. With a cluster secret set, an anonymous
// viewer still reads the stream over RTSP (reading is open by default;
// the secret guards relays only).
func TestAbuseRTSPSquatterHoldsNoNameBeyondSetupTimeout(t *testing.T) {
	n := startAbuseNode(t, map[string]string{
		"rtsp":    `{addr: "$RTSP", udp_rtp_addr: "off", udp_rtcp_addr: "off", setup_timeout: 3s}`,
		"overlay": `{secret: "cluster-secret-0123456789abcdef"}`,
	})
	n.waitHealthy(t)
	sq, err := net.Dial("tcp", n.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	sr := bufio.NewReader(sq)
	if st := rtspAnnounce(t, sq, sr, n.rtsp, "live/cam1"); !strings.Contains(st, " 200 ") {
		t.Fatalf("squatter's ANNOUNCE: %q, want 200", st)
	}
	// The squat is real while it lasts: a second ANNOUNCE of the name is refused.
	other, err := net.Dial("tcp", n.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	st := rtspAnnounce(t, other, bufio.NewReader(other), n.rtsp, "live/cam1")
	other.Close()
	if !strings.Contains(st, " 409 ") {
		t.Fatalf("second ANNOUNCE during the squat: %q, want 409", st)
	}
	// The node closes the squatter (it sends nothing more, and reads EOF).
	sq.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.Copy(io.Discard, sr); err != nil {
		t.Fatalf("squatter connection not closed by the node: %v", err)
	}
	// The line is written before the close; the node's output reaches the
	// test through a pipe, which may lag the socket.
	testutil.Eventually(t, 5*time.Second, "the squatter's closing logged", func() bool {
		return n.logCount("no RECORD or PLAY in time") > 0
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitLive(t, "live/cam1")

	p, err := testutil.RTSPPlay(t, n.rtspURL("live/cam1"), testutil.RTSPPlayOptions{Transport: gortsplib.TransportTCP, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("anonymous RTSP viewer with a cluster secret set: %v, want it to read", err)
	}
	p.WaitFrames(t, 10, 320, 240, 20*time.Second)
	p.Close()
}

// Bogus WHEP offers for a rendition (empty, not SDP, too many media
// sections, wrong content type) never start it nor take the one slot: a
// real viewer coming during their flood gets that rendition (not 503) and
// decodes its frames.
// The refusals are logged once a minute per client and status, not 200
// times.
func TestAbuseBogusWHEPOffersDoNotTakeARealViewersSlot(t *testing.T) {
	n := startAbuseNode(t, map[string]string{"serverlets": `{slots: 1}`})
	n.waitHealthy(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitLive(t, "live/cam1")

	var many strings.Builder
	many.WriteString("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&many, "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:%d\r\na=recvonly\r\na=rtpmap:96 H264/90000\r\n", i)
	}
	bogus := []struct {
		ctype, body string
		want        int
	}{
		{"application/sdp", "", 400},
		{"application/sdp", "not an offer", 400},
		{"application/sdp", many.String(), 400},
		{"text/plain", "v=0", 415},
	}
	endpoint := n.url("live/cam1@180p/whep")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Bogus offers alone start nothing.
	for _, b := range bogus {
		if status, _, err := testutil.PostWHEP(ctx, endpoint, b.ctype, []byte(b.body)); err != nil || status != b.want {
			t.Fatalf("bogus offer %.20q: %d %v, want %d", b.body, status, err, b.want)
		}
	}
	if n.live(t, "live/cam1@180p") {
		t.Fatal("bogus offers started the rendition")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int]int{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				b := bogus[(w+i)%len(bogus)]
				status, _, err := testutil.PostWHEP(ctx, endpoint, b.ctype, []byte(b.body))
				mu.Lock()
				if err != nil {
					got[-1]++
				} else if status != b.want {
					got[status*1000+b.want]++
				} else {
					got[status]++
				}
				mu.Unlock()
			}
		}(w)
	}
	// The real viewer comes while the bogus offers are still arriving.
	testutil.Eventually(t, 30*time.Second, "some bogus offers answered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[400]+got[415] >= 20
	})
	sizes, _ := whepFrames(t, endpoint, 20)
	wg.Wait()
	t.Logf("200 bogus offers answered: %v", got)
	if got[400]+got[415] != 200 {
		t.Fatalf("bogus offers: %v, want all 200 refused 400/415 (keys status*1000+want are mismatches, -1 errors)", got)
	}
	if lines := n.logCount("rejected whep offer"); lines == 0 || lines > 4 {
		t.Errorf("%d 'rejected whep offer' log lines for 200 refusals, want 1-4 (once a minute per client and status)", lines)
	}

	if len(sizes) < 20 {
		t.Fatalf("real viewer of live/cam1@180p decoded %d frames, want 20", len(sizes))
	}
	for _, s := range sizes {
		if s != "320x180" {
			t.Fatalf("real viewer decoded a %s frame, want 320x180", s)
		}
	}
}

// One client address may hold at most http_max_conns_per_ip connections
// on the HTTP port and rtsp.max_conns_per_ip on the RTSP port: beyond,
// HTTP answers 429 and RTSP closes; another address is served meanwhile,
// the capped one again once it lets go, and the refusals are logged once.
func TestAbuseConnectionsPerIPAreCapped(t *testing.T) {
	n := startAbuseNode(t, map[string]string{
		"http_max_conns_per_ip": "20",
		"limit_loopback":        "true",
		"rtsp":                  `{addr: "$RTSP", udp_rtp_addr: "off", udp_rtcp_addr: "off", max_conns_per_ip: 5}`,
	})
	n.client = clientFrom("127.0.0.3")
	n.waitHealthy(t)
	hold := func(addr string, k int) []net.Conn {
		var cs []net.Conn
		for i := 0; i < k; i++ {
			c, err := dialFrom("127.0.0.1", addr)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			c.Close()
		}
	}
	idle := hold(n.http, 20)
	time.Sleep(200 * time.Millisecond) // let the server accept them all
	for i := 0; i < 5; i++ {
		r, err := clientFrom("127.0.0.1").Get(n.url("healthz"))
		if err != nil {
			t.Fatalf("request %d beyond the limit: %v, want a 429 answer", i, err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("request %d beyond the limit: %s, want 429", i, r.Status)
		}
	}
	r, err := clientFrom("127.0.0.2").Get(n.url("healthz"))
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("another address while 127.0.0.1 is capped: %v %v, want 200", r, err)
	}
	r.Body.Close()
	closeAll(idle)
	testutil.Eventually(t, 10*time.Second, "127.0.0.1 served again after letting go", func() bool {
		r, err := clientFrom("127.0.0.1").Get(n.url("healthz"))
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})

	held := hold(n.rtsp, 5)
	defer closeAll(held)
	time.Sleep(200 * time.Millisecond)
	c, err := dialFrom("127.0.0.1", n.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "OPTIONS rtsp://%s/ RTSP/1.0\r\nCSeq: 1\r\n\r\n", n.rtsp)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Closed unanswered: EOF, or a reset when the OPTIONS arrived first.
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("6th RTSP connection of one address: read %q, %v; want it closed unanswered", b, err)
	}
	c.Close()
	c, err = dialFrom("127.0.0.2", n.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "OPTIONS rtsp://%s/ RTSP/1.0\r\nCSeq: 1\r\n\r\n", n.rtsp)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); !strings.Contains(line, "200") {
		t.Fatalf("another address's RTSP OPTIONS: %q %v, want 200", line, err)
	}
	if got := n.logCount(`listener=http ip=127.0.0.1`); got != 1 {
		t.Errorf("%d log lines for 127.0.0.1's HTTP refusals, want 1 (once a minute)", got)
	}
	if got := n.logCount(`listener=rtsp ip=127.0.0.1`); got != 1 {
		t.Errorf("%d log lines for 127.0.0.1's RTSP refusal, want 1", got)
	}
}

// A client may start at most serverlets.max_starts_per_client renditions a
// minute: beyond, HTTP (HLS, WHEP) answers 429 and RTSP 403; a rendition
// already running costs nothing, and another client still starts one.
func TestAbuseRenditionStartsPerClientAreCapped(t *testing.T) {
	n := startAbuseNode(t, map[string]string{
		"serverlets":     `{slots: 2, max_starts_per_client: 1}`,
		"limit_loopback": "true",
	})
	n.client = clientFrom("127.0.0.3")
	n.waitHealthy(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitLive(t, "live/cam1")
	get := func(from, p string) int {
		r, err := clientFrom(from).Get(n.url(p))
		if err != nil {
			t.Fatalf("GET %s from %s: %v", p, from, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return r.StatusCode
	}
	if s := get("127.0.0.1", "live/cam1@180p/index.m3u8"); s != 200 {
		t.Fatalf("first start: %d, want 200", s)
	}
	if s := get("127.0.0.1", "live/cam1@240p/index.m3u8"); s != http.StatusTooManyRequests {
		t.Fatalf("second start in the minute: %d, want 429", s)
	}
	if s := get("127.0.0.1", "live/cam1@180p/index.m3u8"); s != 200 {
		t.Fatalf("the running rendition again: %d, want 200", s)
	}
	// A WHEP offer counts as a start too, and is refused before its body is read.
	status, _, _ := testutil.PostWHEP(context.Background(), n.url("live/cam1@240p/whep"), "application/sdp", []byte("v=0"))
	if status != http.StatusTooManyRequests {
		t.Fatalf("WHEP start beyond the budget: %d, want 429", status)
	}
	// And an RTSP DESCRIBE of a rendition not running: 403.
	c, err := dialFrom("127.0.0.1", n.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "DESCRIBE rtsp://%s/live/cam1@240p RTSP/1.0\r\nCSeq: 1\r\n\r\n", n.rtsp)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.Contains(line, " 403 ") {
		t.Fatalf("RTSP DESCRIBE start beyond the budget: %q, want 403", line)
	}
	if s := get("127.0.0.2", "live/cam1@240p/index.m3u8"); s != 200 {
		t.Fatalf("another client's start: %d, want 200", s)
	}
	if n.logCount("rendition start refused") != 1 {
		t.Errorf("refused starts logged %d times, want once", n.logCount("rendition start refused"))
	}
}

// selfSigned writes a CA and a certificate for 127.0.0.1 signed by it, and
// returns the files and a pool holding the CA.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "abuse test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return certFile, keyFile, pool
}

// With http_tls_cert and http_tls_key the HTTP port speaks HTTPS: a client
// trusting the test's CA gets /healthz and watches over WHEP; a plain HTTP
// request gets no page.
func TestAbuseHTTPSOnTheHTTPPort(t *testing.T) {
	cert, key, pool := selfSigned(t)
	n := startAbuseNode(t, map[string]string{"http_tls_cert": cert, "http_tls_key": key})
	n.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	n.waitHealthy(t)
	r, err := n.client.Get(n.url("healthz"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.TLS == nil || r.StatusCode != 200 || r.ProtoMajor != 2 {
		t.Fatalf("/healthz over HTTPS: %s %s, TLS %v; want 200 over HTTP/2 and TLS", r.Proto, r.Status, r.TLS != nil)
	}
	if r, err := http.Get("http://" + n.http + "/healthz"); err == nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode == 200 {
			t.Fatalf("plain HTTP on the HTTPS port answered 200 %q", b)
		}
	}
	if r, err := http.Get(n.url("healthz")); err == nil { // no CA: refused
		r.Body.Close()
		t.Fatal("a client without the CA trusted the node's certificate")
	}

	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitLive(t, "live/cam1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frames := make(chan struct{}, 1000)
	sess, err := testutil.DialWHEP(ctx, n.url("live/cam1/whep"), testutil.WHEPOptions{Loopback: true, HTTPClient: n.client,
		OnAU: func(testutil.WHEPAccessUnit) {
			select {
			case frames <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		t.Fatalf("WHEP over HTTPS: %v", err)
	}
	defer sess.Close()
	for i := 0; i < 15; i++ {
		select {
		case <-frames:
		case <-ctx.Done():
			t.Fatalf("WHEP over HTTPS: %d access units, want 15", i)
		}
	}
}

// A memberlist node without the cluster's gossip key cannot join a keyed
// node process: its join fails and it never shows in the node's members.
func TestAbuseKeylessStrangerCannotJoinKeyedGossip(t *testing.T) {
	gossip := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	n := startAbuseNode(t, map[string]string{"gossip": `{addr: "` + gossip + `", key: "` + clusterKey + `"}`})
	n.waitHealthy(t)

	conf := memberlist.DefaultLANConfig()
	conf.Name = "stranger"
	conf.BindAddr, conf.BindPort = "127.0.0.1", testutil.FreePort(t, "tcp")
	conf.AdvertiseAddr, conf.AdvertisePort = conf.BindAddr, conf.BindPort
	conf.TCPTimeout = 2 * time.Second
	conf.LogOutput = io.Discard
	m, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	joined, err := m.Join([]string{gossip})
	t.Logf("keyless join: %d joined, err %v", joined, err)
	if joined != 0 && err == nil {
		t.Error("the keyless stranger's join reported success")
	}
	time.Sleep(3 * time.Second) // gossip rounds in which a joined stranger would show
	for _, mem := range m.Members() {
		if mem.Name != "stranger" {
			t.Errorf("the stranger learnt member %s of the keyed cluster", mem.Name)
		}
	}
	r, err := n.client.Get(n.url("api/v1/cluster"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var st overlay.ClusterStatus
	if err := jsonDecode(r.Body, &st); err != nil {
		t.Fatal(err)
	}
	for _, mem := range st.Members {
		if mem.Name == "stranger" {
			t.Fatalf("the keyless stranger is a member of the keyed node: %+v", st.Members)
		}
	}
	if len(st.Members) != 1 {
		t.Fatalf("members %+v, want the node alone", st.Members)
	}
}
