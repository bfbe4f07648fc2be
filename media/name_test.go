package media

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestValidateNameRejectsHostileNames(t *testing.T) {
	bad := []string{"", "/live", "live/", "live//cam", "..", "live/../etc", "live/./cam",
		"live/cam@1", "live\x00cam", "live/cam\n", "live cam", "live/ca%2e", string(make([]byte, 300))}
	for _, name := range bad {
		if err := ValidateName(name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	for _, name := range []string{"live/cam1", "a", "live/cam-1_b.x", "x/y/z"} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", name, err)
		}
	}
}

func TestParsePathSplitsRendition(t *testing.T) {
	s, r, err := ParsePath("live/cam1@360p")
	if err != nil || s != "live/cam1" || r != "360p" {
		t.Fatalf("ParsePath = %q %q %v", s, r, err)
	}
	if JoinPath(s, r) != "live/cam1@360p" || JoinPath(s, "") != "live/cam1" {
		t.Fatal("JoinPath does not invert ParsePath")
	}
	for _, p := range []string{"live/cam1@", "live/cam1@a@b", "live/cam1@../x", "@360p"} {
		if _, _, err := ParsePath(p); err == nil {
			t.Errorf("ParsePath(%q) accepted", p)
		}
	}
}

// TestParsePathBoundsWhatItQuotes: a 500 KB rendition name is refused
// without being echoed into the error (which responses and logs carry).
func TestParsePathBoundsWhatItQuotes(t *testing.T) {
	long := "live/cam1@" + strings.Repeat("x", 500<<10)
	_, _, err := ParsePath(long)
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("ParsePath of a 500 KB path: error of %d bytes (%v)", len(fmt.Sprint(err)), err != nil)
	}
	if _, _, err := ParsePath("live/cam1@" + strings.Repeat("x", MaxNameLen-len("live/cam1@"))); err != nil {
		t.Fatalf("a path of exactly MaxNameLen refused: %v", err)
	}
}
