package ingest

import (
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/media"
)

// maxSRTStreamID is the longest stream id SRT carries (the handshake's
// SID extension is at most 512 bytes).
const maxSRTStreamID = 512

// FuzzSRTStreamIDForms: the three ways to name a stream to publish — the
// bare path, "publish:<path>" and the access-control syntax
// "#!::r=<path>,m=publish" (with any further keys) — accept exactly the
// valid stream names without rendition, and name the same stream; a
// refusal of a stream id SRT can carry is at most a few hundred bytes
// (the broadcaster reads it, the log keeps it).
func FuzzSRTStreamIDForms(f *testing.F) {
	for _, s := range []string{"live/cam1", "live/cam1@360p", "x", "a/../b", "u=alice", "live/cam1,s=abc", strings.Repeat("a", 200), strings.Repeat("\xff", 190)} {
		f.Add(s, "u=alice,s=secret")
	}
	f.Fuzz(func(t *testing.T, path, extra string) {
		_, rendition, perr := media.ParsePath(path)
		valid := perr == nil && rendition == ""
		forms := []string{path, "publish:" + path}
		if !strings.ContainsAny(path, ",=") && !strings.ContainsAny(extra, ",") {
			forms = append(forms, "#!::r="+path+",m=publish")
			if k, _, ok := strings.Cut(extra, "="); ok && k != "" && k != "r" && k != "m" && k != "t" {
				forms = append(forms, "#!::"+extra+",r="+path+",m=publish")
			}
		}
		for _, sid := range forms {
			if strings.HasPrefix(path, "#!::") || strings.HasPrefix(path, "publish:") || strings.HasPrefix(path, "read:") {
				if sid == path {
					continue // the bare form is another form then
				}
			}
			got, rej := parseSRTStreamID(sid)
			switch {
			case valid && (rej != nil || got != path):
				t.Fatalf("parseSRTStreamID(%q) = %q, %+v; want %q", sid, got, rej, path)
			case !valid && rej == nil:
				t.Fatalf("parseSRTStreamID(%q) accepted %q, not a publishable name", sid, got)
			case rej != nil && len(sid) <= maxSRTStreamID && len(rej.reason) > 6*maxSRTStreamID:
				t.Fatalf("refusal of %d bytes for a %d-byte stream id", len(rej.reason), len(sid))
			}
		}
	})
}
