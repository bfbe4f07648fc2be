package ingest

import (
	"net/http"
	"strings"
	"testing"
)

// chromeOffer is a browser-like offer whose video section lists codecs.
func chromeOffer(video string, rtpmaps ...string) string {
	var b strings.Builder
	b.WriteString("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n")
	b.WriteString("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n")
	b.WriteString("m=video 9 UDP/TLS/RTP/SAVPF " + video + "\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n")
	for _, m := range rtpmaps {
		b.WriteString("a=rtpmap:" + m + "\r\n")
	}
	return b.String()
}

func TestParseWHIPOffer(t *testing.T) {
	for _, tc := range []struct {
		name, sdp string
		status    int    // 0: accepted
		says      string // in the refusal
	}{
		{"H264 and VP8", chromeOffer("96 97 98", "96 VP8/90000", "97 rtx/90000", "98 H264/90000"), 0, ""},
		{"VP8 and VP9 only", chromeOffer("96 97 98 99", "96 VP8/90000", "97 rtx/90000", "98 VP9/90000", "99 rtx/90000"),
			http.StatusNotAcceptable, "video codecs VP8, VP9 are not carried"},
		{"AV1 only", chromeOffer("45", "45 AV1/90000"), http.StatusNotAcceptable, "AV1"},
		{"audio only", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
			http.StatusBadRequest, "no video"},
		{"not SDP", "hello\r\n", http.StatusBadRequest, "malformed SDP"},
		{"empty", " \r\n", http.StatusBadRequest, "empty offer"},
	} {
		oc, we := parseOffer([]byte(tc.sdp))
		switch {
		case tc.status == 0 && we != nil:
			t.Errorf("%s: refused %d %q", tc.name, we.status, we.reason)
		case tc.status == 0 && (!oc.h264 || !oc.opus):
			t.Errorf("%s: h264 %v opus %v, want both", tc.name, oc.h264, oc.opus)
		case tc.status != 0 && we == nil:
			t.Errorf("%s: accepted, want %d", tc.name, tc.status)
		case tc.status != 0 && (we.status != tc.status || !strings.Contains(we.reason, tc.says)):
			t.Errorf("%s: %d %q, want %d saying %q", tc.name, we.status, we.reason, tc.status, tc.says)
		}
	}
}

// FuzzParseWHIPOffer: any body is refused or accepted, never a panic.
func FuzzParseWHIPOffer(f *testing.F) {
	f.Add([]byte(chromeOffer("96 98", "96 VP8/90000", "98 H264/90000")))
	f.Add([]byte(chromeOffer("96", "96 VP9")))
	f.Add([]byte("v=0\r\nm=video 9 X 1\r\na=rtpmap:\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		oc, we := parseOffer(b)
		if we == nil && !oc.h264 {
			t.Fatalf("accepted an offer without H264: %q", b)
		}
		if we != nil && we.status != http.StatusBadRequest && we.status != http.StatusNotAcceptable {
			t.Fatalf("status %d", we.status)
		}
	})
}
