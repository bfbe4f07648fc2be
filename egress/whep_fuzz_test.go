package egress

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

// A WHEP offer as a browser sends it (trimmed: one candidate, no extmaps).
const fuzzBrowserOffer = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1\r\n" +
	"a=msid-semantic: WMS\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\r\n" +
	"a=ice-ufrag:abcd\r\n" +
	"a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaa\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:0\r\n" +
	"a=recvonly\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n" +
	"a=rtpmap:97 rtx/90000\r\n" +
	"a=fmtp:97 apt=96\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=mid:1\r\n" +
	"a=recvonly\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n"

// maxOfferErrorLen bounds what a refused offer sends back and logs: a
// hostile offer must not be echoed at length.
const maxOfferErrorLen = 512

// FuzzCheckOffer: an offer body is accepted only if it parses as SDP with
// a video section (and then its audio flag matches the SDP); a refused
// one is a 400 with a bounded reason. Never panics.
func FuzzCheckOffer(f *testing.F) {
	f.Add([]byte(fuzzBrowserOffer))
	f.Add([]byte(strings.Replace(fuzzBrowserOffer, "m=video", "m=text", 1)))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n"))
	f.Add([]byte("v=0\n"))
	f.Add([]byte("  \r\n"))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=" + strings.Repeat("x", 4000) + "\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxOfferSize {
			return // acceptOffer never reads more
		}
		hasVideo, hasAudio, oe := checkOffer(body)
		if oe != nil {
			if oe.status != http.StatusBadRequest {
				t.Fatalf("refused with status %d: %v", oe.status, oe)
			}
			if n := len(oe.Error()); n > maxOfferErrorLen {
				t.Fatalf("refusal is %d bytes long: %.200q…", n, oe.Error())
			}
			return
		}
		if !hasVideo {
			t.Fatal("accepted an offer without video")
		}
		var parsed sdp.SessionDescription
		if err := parsed.UnmarshalString(string(body)); err != nil {
			t.Fatalf("accepted an offer that does not parse: %v", err)
		}
		audio := false
		for _, m := range parsed.MediaDescriptions {
			audio = audio || m.MediaName.Media == "audio"
		}
		if audio != hasAudio {
			t.Fatalf("hasAudio = %v, the SDP says %v", hasAudio, audio)
		}
	})
}

// FuzzCheckOfferType: only application/sdp (with any parameters) or no
// Content-Type passes; a refusal is a 415 with a bounded reason for a
// header of ordinary size.
func FuzzCheckOfferType(f *testing.F) {
	for _, s := range []string{"", "application/sdp", "application/SDP; charset=utf-8", "text/plain", "application/sdp;;", "a/b; x=\"\\\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		oe := checkOfferType(ct)
		if oe == nil {
			if ct != "" && !strings.EqualFold(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]), "application/sdp") {
				t.Fatalf("accepted content type %q", ct)
			}
			return
		}
		if oe.status != http.StatusUnsupportedMediaType {
			t.Fatalf("status %d for %q", oe.status, ct)
		}
		if len(oe.Error()) > 64+6*len(ct) {
			t.Fatalf("refusal of %d bytes for a %d-byte header", len(oe.Error()), len(ct))
		}
	})
}
