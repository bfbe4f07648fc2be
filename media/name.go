package media

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen bounds a stream path, rendition included.
const MaxNameLen = 200

// ErrInvalidName is wrapped by every name validation error.
var ErrInvalidName = errors.New("invalid stream name")

// ValidateName checks a stream name such as "live/cam1": one or more
// slash-separated segments of letters, digits, '-', '_' and '.', none of
// them "." or "..", no '@' (it separates the rendition), no control
// characters, no leading or trailing slash.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxNameLen)
	}
	for _, seg := range strings.Split(name, "/") {
		if err := validateSegment(seg); err != nil {
			return fmt.Errorf("%w %q: %v", ErrInvalidName, name, err)
		}
	}
	return nil
}

func validateSegment(seg string) error {
	switch seg {
	case "":
		return errors.New("empty path segment")
	case ".", "..":
		return fmt.Errorf("path segment %q not allowed", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		case c == '@':
			return errors.New("'@' is reserved for renditions")
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("control character 0x%02x", c)
		default:
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// ParsePath splits "live/cam1@360p" into its stream and rendition and
// validates both. The bare stream name ("live/cam1") is the source
// rendition, returned as "".
func ParsePath(path string) (stream, rendition string, err error) {
	if len(path) > MaxNameLen {
		// Before anything quotes it: a hostile name must not become a
		// megabyte of error response and log.
		return "", "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxNameLen)
	}
	stream, rendition, found := strings.Cut(path, "@")
	if err := ValidateName(stream); err != nil {
		return "", "", err
	}
	if found {
		if err := validateSegment(rendition); err != nil {
			return "", "", fmt.Errorf("%w: rendition %q: %v", ErrInvalidName, rendition, err)
		}
	}
	return stream, rendition, nil
}

// JoinPath is the inverse of ParsePath.
func JoinPath(stream, rendition string) string {
	if rendition == "" {
		return stream
	}
	return stream + "@" + rendition
}
