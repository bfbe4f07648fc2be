package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// password is a configured password: plain text, or a hash of it.
type password struct {
	plain  string // set for a plain-text password
	sha256 []byte // set for "sha256:<base64>"
	argon  *argon2Hash
}

type argon2Hash struct {
	time, memory uint32
	threads      uint8
	salt, hash   []byte
}

// parsePass reads "sha256:<base64>", "argon2:$argon2id$v=19$m=…,t=…,p=…$salt$hash"
// (MediaMTX's forms) or a plain password.
func parsePass(s string) (password, error) {
	switch {
	case strings.HasPrefix(s, "sha256:"):
		b, err := base64.StdEncoding.DecodeString(s[len("sha256:"):])
		if err != nil || len(b) != sha256.Size {
			return password{}, errors.New(`"sha256:" must be followed by the base64 of a SHA-256 sum`)
		}
		return password{sha256: b}, nil
	case strings.HasPrefix(s, "argon2:"):
		h, err := parseArgon2(s[len("argon2:"):])
		if err != nil {
			return password{}, fmt.Errorf(`"argon2:": %w`, err)
		}
		return password{argon: h}, nil
	}
	return password{plain: s}, nil
}

// parseArgon2 reads an argon2id PHC string, as `argon2 salt -id -e` prints it.
func parseArgon2(s string) (*argon2Hash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, errors.New("want $argon2id$v=19$m=<KiB>,t=<passes>,p=<threads>$<salt>$<hash>")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return nil, fmt.Errorf("version %q: want v=%d", parts[2], argon2.Version)
	}
	h := &argon2Hash{}
	var threads uint
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memory, &h.time, &threads); err != nil ||
		h.memory == 0 || h.time == 0 || threads == 0 || threads > 255 || h.memory > 4<<20 {
		return nil, fmt.Errorf("parameters %q: want m=<KiB up to 4 GiB>,t=<passes>,p=<1..255>", parts[3])
	}
	h.threads = uint8(threads)
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil {
		return nil, fmt.Errorf("salt: %w", err)
	}
	if h.hash, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(h.hash) < 16 {
		return nil, errors.New("hash: want unpadded base64 of at least 16 bytes")
	}
	return h, nil
}

// hashed reports whether the password is kept as a hash, which RTSP Digest
// cannot check (it needs the clear password on both sides).
func (p password) hashed() bool { return p.sha256 != nil || p.argon != nil }

// check reports whether the client proved the password: sent it in clear
// (pass), or, for a plain-text password, proved it with Digest (verify).
func (p password) check(pass string, verify func(string) bool) bool {
	if pass == "" {
		if verify != nil && !p.hashed() && p.plain != "" {
			return verify(p.plain)
		}
		return false
	}
	switch {
	case p.sha256 != nil:
		sum := sha256.Sum256([]byte(pass))
		return eq(string(sum[:]), string(p.sha256))
	case p.argon != nil:
		a := p.argon
		sum := argon2.IDKey([]byte(pass), a.salt, a.time, a.memory, a.threads, uint32(len(a.hash)))
		return eq(string(sum), string(a.hash))
	}
	return p.plain != "" && eq(pass, p.plain)
}
