package egress

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// An offer with more media sections than a viewer can use is refused with
// 400 before anything is built for it.
func TestCheckOfferRefusesTooManyMediaSections(t *testing.T) {
	offer := func(n int) string {
		var b strings.Builder
		b.WriteString("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:%d\r\na=recvonly\r\na=rtpmap:96 H264/90000\r\n", i)
		}
		return b.String()
	}
	if _, _, oe := checkOffer([]byte(offer(MaxOfferMedia))); oe != nil {
		t.Fatalf("%d sections refused: %v", MaxOfferMedia, oe)
	}
	_, _, oe := checkOffer([]byte(offer(MaxOfferMedia + 1)))
	if oe == nil || oe.status != http.StatusBadRequest || !strings.Contains(oe.reason, "media sections") {
		t.Fatalf("%d sections: %v, want a 400 naming the media sections", MaxOfferMedia+1, oe)
	}
}
