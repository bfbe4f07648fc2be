package media

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParsePath: an accepted path round-trips through JoinPath, is at most
// MaxNameLen bytes, holds only the allowed bytes, and its stream part
// passes ValidateName; a refused one wraps ErrInvalidName and says so in
// at most 200 bytes whatever the input's length.
// maxNameErrLen bounds a name refusal. It is not 200: a refusal quotes the
// name (up to MaxNameLen bytes), and %q writes a byte that is not
// printable as 4 ("\\xff"), so a 199-byte name of such bytes gives an
// 846-byte message. It is bounded by the length cap, not by the input.
const maxNameErrLen = 4*MaxNameLen + 100

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"live/cam1", "live/cam1@360p", "a@b@c", "live/../x", "/live", "live//x", "x@", "@x",
		"live/\x00", "live/é", strings.Repeat("a", MaxNameLen), strings.Repeat("a/", 150) + "a", strings.Repeat("\xff", 199)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		stream, rendition, err := ParsePath(p)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ParsePath(%q): %v does not wrap ErrInvalidName", p, err)
			}
			if len(err.Error()) > maxNameErrLen {
				t.Fatalf("ParsePath error of %d bytes: %.100q…", len(err.Error()), err.Error())
			}
			return
		}
		if got := JoinPath(stream, rendition); got != p {
			t.Fatalf("JoinPath(ParsePath(%q)) = %q", p, got)
		}
		if len(p) > MaxNameLen {
			t.Fatalf("accepted a %d-byte path", len(p))
		}
		if err := ValidateName(stream); err != nil {
			t.Fatalf("accepted %q whose stream %q does not validate: %v", p, stream, err)
		}
		if strings.Contains(rendition, "/") || strings.Contains(rendition, "@") {
			t.Fatalf("rendition %q of %q", rendition, p)
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./@", c) >= 0) {
				t.Fatalf("accepted %q with byte 0x%02x", p, c)
			}
		}
		for _, seg := range strings.Split(stream, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted %q with segment %q", p, seg)
			}
		}
	})
}

// FuzzValidateName: ValidateName and ParsePath agree on names without a
// rendition, and a refusal is short.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"live/cam1", "live/cam1@360p", "..", "a/./b", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) || len(err.Error()) > maxNameErrLen {
				t.Fatalf("ValidateName(%.100q): %.300v", name, err)
			}
			return
		}
		if strings.Contains(name, "@") {
			t.Fatalf("accepted %q with a rendition separator", name)
		}
		s, r, perr := ParsePath(name)
		if perr != nil || s != name || r != "" {
			t.Fatalf("ValidateName accepts %q, ParsePath says %q %q %v", name, s, r, perr)
		}
	})
}
