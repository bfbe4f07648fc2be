package vod

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseDigest: an accepted digest is 64 hex digits and its String is
// the input in lower case; a refusal is bounded whatever the input's
// length: it quotes the input only when it has the 64 bytes of a digest,
// which %q writes in at most 4*64 bytes.
func FuzzParseDigest(f *testing.F) {
	d := sha256.Sum256([]byte("x"))
	f.Add(hex.EncodeToString(d[:]))
	f.Add(strings.ToUpper(hex.EncodeToString(d[:])))
	f.Add(strings.Repeat("g", 64))
	f.Add("")
	f.Add(strings.Repeat("\xff", 64))
	f.Add(strings.Repeat("\xff", 1000))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			if len(err.Error()) > 4*64+200 {
				t.Fatalf("refusal of %d bytes", len(err.Error()))
			}
			return
		}
		if d.String() != strings.ToLower(s) {
			t.Fatalf("ParseDigest(%q).String() = %q", s, d.String())
		}
		var back Digest
		if err := back.UnmarshalText([]byte(d.String())); err != nil || back != d {
			t.Fatalf("digest %s does not round-trip: %v", d, err)
		}
	})
}

// FuzzCheckTitle: an accepted title is non-blank UTF-8 of at most 200
// bytes without control characters, its description UTF-8 of at most
// 5000 bytes; a refusal wraps ErrBadTitle and never quotes the input.
func FuzzCheckTitle(f *testing.F) {
	f.Add("Big Buck Bunny", "A rabbit.")
	f.Add(" ", "")
	f.Add("a\x00b", "")
	f.Add("é", "\xff")
	f.Add(strings.Repeat("a", 201), "")
	f.Fuzz(func(t *testing.T, title, desc string) {
		err := CheckTitle(title, desc)
		if err != nil {
			if !errors.Is(err, ErrBadTitle) || len(err.Error()) > 200 {
				t.Fatalf("CheckTitle: %.300v", err)
			}
			return
		}
		if strings.TrimSpace(title) == "" || len(title) > 200 || len(desc) > 5000 ||
			!utf8.ValidString(title) || !utf8.ValidString(desc) ||
			strings.ContainsFunc(title, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("accepted title %q, description %q", title, desc)
		}
	})
}

// FuzzVerifyPeerRequest: whatever Authorization header a peer sends, the
// request verifies only when it is the signature of the named node for
// this method and path within the skew; every refusal wraps ErrPeerAuth
// and is bounded by the header's length; a request signed by
// SignPeerRequest verifies as its node.
func FuzzVerifyPeerRequest(f *testing.F) {
	const secret = "cluster-secret"
	now := time.Unix(1_700_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := hex.EncodeToString(peerSignature(peerKey(secret), "n1", ts, "GET", "/internal/vod/chunks/ab"))
	f.Add("Gradient-Peer node=n1,ts="+ts+",sig="+sig, "/internal/vod/chunks/ab")
	f.Add("gradient-peer node=n1, ts="+ts+", sig="+sig, "/internal/vod/chunks/ab")
	f.Add("Gradient-Peer node=n1,ts=99999999999999999999,sig=00", "/x")
	f.Add("Gradient-Peer node=n1,ts=-9223372036854775808,sig=00", "/x")
	f.Add("Gradient-Peer node=,ts=,sig=", "/")
	f.Add("Gradient-Peer node=a=b,ts=1,sig=zz,node=c", "/")
	f.Add("Basic dXNlcjpwYXNz", "/")
	f.Fuzz(func(t *testing.T, auth, path string) {
		r, err := http.NewRequest("GET", "http://node"+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.URL.Path = path
		r.Header.Set("Authorization", auth)
		node, err := VerifyPeerRequest(r, secret, now)
		if err != nil {
			if !errors.Is(err, ErrPeerAuth) {
				t.Fatalf("refusal %v does not wrap ErrPeerAuth", err)
			}
			if len(err.Error()) > 300+8*len(auth) {
				t.Fatalf("refusal of %d bytes for a %d-byte header", len(err.Error()), len(auth))
			}
		} else {
			fields, ok := parsePeerAuth(r.Header.Get("Authorization"))
			if !ok || fields["node"] != node {
				t.Fatalf("accepted %q as node %q", auth, node)
			}
			want := peerSignature(peerKey(secret), node, fields["ts"], "GET", path)
			if fields["sig"] != hex.EncodeToString(want) && !strings.EqualFold(fields["sig"], hex.EncodeToString(want)) {
				t.Fatalf("accepted %q with a signature that is not the node's", auth)
			}
		}
		// An open cluster accepts everything and names the header's node.
		if _, err := VerifyPeerRequest(r, "", now); err != nil {
			t.Fatalf("an open cluster refused: %v", err)
		}
	})
}

// ftsQueryRE is what ftsQuery may produce: quoted prefix terms of word
// characters (no quotes, operators or spaces inside), separated by spaces.
var ftsQueryRE = regexp.MustCompile(`^("[\p{L}\p{N}\p{M}]+"\*( "[\p{L}\p{N}\p{M}]+"\*)*)?$`)

// FuzzFTSQuery: whatever a user searches for, the MATCH expression is a
// conjunction of at most maxSearchTerms quoted prefix terms of at most
// maxSearchTermRunes runes, and SQLite's FTS5 (with the catalog's
// tokenizer) accepts it without a syntax error.
func FuzzFTSQuery(f *testing.F) {
	for _, s := range []string{"bunny", "big buck", `"a" OR b*`, "NEAR(a b)", "a AND NOT b", "-a +b ^c", "col:x", "é̃ 東京 ٣",
		strings.Repeat("word ", 40), strings.Repeat("x", 500), "\xff\xfe", `""""`, "a\x00b"} {
		f.Add(s)
	}
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE VIRTUAL TABLE fts USING fts5 (id UNINDEXED, title, description, tokenize = 'unicode61 remove_diacritics 2');
		INSERT INTO fts VALUES ('a', 'Big Buck Bunny', 'A rabbit.');`); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := ftsQuery(s)
		if !utf8.ValidString(q) || !ftsQueryRE.MatchString(q) {
			t.Fatalf("ftsQuery(%q) = %q", s, q)
		}
		if q == "" {
			return
		}
		terms := strings.Split(q, " ")
		if len(terms) > maxSearchTerms {
			t.Fatalf("ftsQuery(%q) has %d terms", s, len(terms))
		}
		for _, term := range terms {
			if n := utf8.RuneCountInString(term) - 3; n > maxSearchTermRunes {
				t.Fatalf("term %q of %d runes", term, n)
			}
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM fts WHERE fts MATCH ?`, q).Scan(&n); err != nil {
			t.Fatalf("FTS5 refuses ftsQuery(%q) = %q: %v", s, q, err)
		}
	})
}

// FuzzMergeRemoteTitle: a title entry as a peer gossips it (JSON, id and
// origin from the gossip entry) is merged into a started service, as
// node.mergeVoD does. It never panics; a second merge of an entry merged
// without error succeeds too; a merged title reads back with the entry's id
// and origin, and the catalog can still be listed and searched.
func FuzzMergeRemoteTitle(f *testing.F) {
	d := sha256.Sum256([]byte("m"))
	f.Add("t1", "peer", []byte(`{"id":"t1","origin":"peer","title":"Big Buck Bunny","description":"A rabbit.","state":"processing","progress":40,"created":"2024-01-01T00:00:00Z","duration":60000000000,"bytes":1000,"views":3}`))
	f.Add("t2", "peer", []byte(`{"title":"x","state":"ready","manifest_digest":"`+hex.EncodeToString(d[:])+`","poster":"zz"}`))
	f.Add("t3", "peer", []byte(`{"title":"x","state":"failed","error":"`+strings.Repeat("e", 500)+`","renditions":[{}]}`))
	f.Add("../t4", "p\x00eer", []byte(`{"title":"\u0000","state":"bogus","progress":-1,"duration":-9223372036854775808,"created":"0001-01-01T00:00:00Z"}`))
	f.Add("", "peer", []byte(`{}`))
	f.Add("t5", "", []byte(`null`))
	dir := f.TempDir()
	s, err := NewService(DefaultConfig(), dir, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	s.SetNodeName("self")
	s.FetchManifest = func(ctx context.Context, d Digest, origin string) ([]byte, error) {
		return nil, errors.New("no manifest in the fuzz test")
	}
	if err := s.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, id, origin string, data []byte) {
		var e TitleEntry
		if json.Unmarshal(data, &e) != nil {
			return
		}
		e.ID, e.Origin = id, origin
		err1 := s.MergeRemoteTitle(e)
		err2 := s.MergeRemoteTitle(e)
		// A failed merge (no verified manifest) is retried only after
		// manifestRetry: the second merge is then skipped, without error.
		if err1 == nil && err2 != nil {
			t.Fatalf("merging twice: ok, then %v", err2)
		}
		if err1 == nil && id != "" && origin != "" && origin != "self" {
			got, err := s.Get(id)
			if err == nil && (got.ID != id || got.Origin != origin) {
				t.Fatalf("merged %q of %q, read back %q of %q", id, origin, got.ID, got.Origin)
			}
		}
		if _, err := s.List(""); err != nil {
			t.Fatalf("List after a merge: %v", err)
		}
		if _, err := s.List(e.Title); err != nil {
			t.Fatalf("search for %q after a merge: %v", e.Title, err)
		}
	})
}
