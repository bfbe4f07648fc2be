package vod

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

type vodEnv struct {
	s   *Service
	srv *httptest.Server
	dir string
}

func newVoDEnv(t *testing.T, edit func(*Config)) *vodEnv {
	t.Helper()
	cfg := DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	dir := t.TempDir()
	s, err := NewService(cfg, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Route(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		s.Close()
	})
	return &vodEnv{s: s, srv: srv, dir: dir}
}

func (e *vodEnv) post(t *testing.T, query string, body io.Reader) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(e.srv.URL+"/api/v1/vod/titles?"+query, "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	json.Unmarshal(b, &v)
	if v == nil {
		v = map[string]any{"body": string(b)}
	}
	return resp.StatusCode, v
}

func (e *vodEnv) get(t *testing.T, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (e *vodEnv) waitReady(t *testing.T, id string) TitleJSON {
	t.Helper()
	var tj TitleJSON
	testutil.Eventually(t, 120*time.Second, "title "+id+" is ready", func() bool {
		_, b := e.get(t, "/api/v1/vod/titles/"+id)
		tj = TitleJSON{}
		json.Unmarshal(b, &tj)
		if tj.State == StateFailed {
			t.Fatalf("title failed: %s", tj.Error)
		}
		return tj.State == StateReady
	})
	return tj
}

// uploadsLeft lists what an upload left in the uploads folder.
func (e *vodEnv) uploadsLeft(t *testing.T) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(e.dir, "uploads", "*"))
	return m
}

func TestAnUploadIsPackagedIntoVerifiedChunksThatFFprobePlays(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 50, Audio: "aac"})
	e := newVoDEnv(t, nil)
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code, v := e.post(t, "title=Big+Trip&description=a+long+way+home", f)
	if code != http.StatusAccepted || v["state"] != "processing" {
		t.Fatalf("POST: %d %v, want 202 processing", code, v)
	}
	id := v["id"].(string)
	tj := e.waitReady(t, id)
	if math.Abs(tj.Duration-10) > 4 || len(tj.Renditions) == 0 || tj.Renditions[0].Width != 320 || tj.Poster == "" {
		t.Fatalf("ready title: %+v, want 10 s ± one segment, a 320-wide rendition and a poster", tj)
	}
	if left := e.uploadsLeft(t); len(left) != 0 {
		t.Errorf("the upload is still there once packaged: %v", left)
	}

	// ffprobe plays the master playlist: H.264 and AAC, the clip's duration.
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
		"-of", "json", e.srv.URL+"/vod/"+id+"/index.m3u8").CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	var probe struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		} `json:"streams"`
		Format struct{ Duration string } `json:"format"`
	}
	json.Unmarshal(out, &probe)
	codecs := ""
	for _, s := range probe.Streams {
		codecs += s.CodecName + " "
	}
	dur, _ := strconv.ParseFloat(probe.Format.Duration, 64)
	if !strings.Contains(codecs, "h264") || !strings.Contains(codecs, "aac") || math.Abs(dur-10) > 4 {
		t.Fatalf("ffprobe saw codecs %q, duration %v; want h264 and aac, 10 s ± one segment\n%s", codecs, dur, out)
	}

	// A segment: its SHA-256 is the Repr-Digest; a range is that slice of it.
	_, pl := e.get(t, "/vod/"+id+"/source.m3u8")
	var seg string
	for _, l := range strings.Split(string(pl), "\n") {
		if strings.HasSuffix(l, ".m4s") {
			seg = l
			break
		}
	}
	if seg == "" || !strings.Contains(string(pl), "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(string(pl), "#EXT-X-ENDLIST") {
		t.Fatalf("media playlist:\n%s", pl)
	}
	resp, full := e.get(t, seg)
	sum := sha256.Sum256(full)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Repr-Digest") != Digest(sum).ReprDigest() ||
		!strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("chunk: %d, Repr-Digest %q for bytes hashing to %q, Cache-Control %q", resp.StatusCode,
			resp.Header.Get("Repr-Digest"), Digest(sum).ReprDigest(), resp.Header.Get("Cache-Control"))
	}
	resp, part := e.get(t, seg, "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, full[100:200]) {
		t.Fatalf("range: %d, %d bytes equal to the slice: %v", resp.StatusCode, len(part), bytes.Equal(part, full[100:200]))
	}
	if resp, _ := e.get(t, seg, "Range", fmt.Sprintf("bytes=%d-", len(full)+10)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d, want 416", resp.StatusCode)
	}
	if resp, b := e.get(t, "/vod/"+id+"/poster.jpg"); resp.StatusCode != http.StatusOK || len(b) < 2 || b[0] != 0xFF || b[1] != 0xD8 {
		t.Errorf("poster: %d, %d bytes, want a JPEG", resp.StatusCode, len(b))
	}

	// /watch/vod redirects to the player.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noFollow.Get(e.srv.URL + "/watch/vod/" + id + "?device=phone"); err != nil || resp.StatusCode != http.StatusFound ||
		resp.Header.Get("Location") != "/vod/"+id+"/" {
		t.Errorf("/watch/vod: %v %v", resp, err)
	}

	// The catalog page and the search find it; a viewer counts once.
	if _, b := e.get(t, "/vod/?q=trip"); !strings.Contains(string(b), "Big Trip") {
		t.Error("the catalog page's search for \"trip\" does not show Big Trip")
	}
	if _, b := e.get(t, "/vod/?q=nosuchword"); strings.Contains(string(b), "Big Trip") {
		t.Error("a search for another word shows Big Trip")
	}
	e.get(t, "/vod/"+id+"/index.m3u8?viewer=abc")
	e.get(t, "/vod/"+id+"/index.m3u8?viewer=abc")
	var after TitleJSON
	_, b := e.get(t, "/api/v1/vod/titles/"+id)
	json.Unmarshal(b, &after)
	if after.Views != 2 { // ffprobe, then viewer abc once
		t.Errorf("views = %d, want 2 (ffprobe once, viewer abc once)", after.Views)
	}

	// rm: 204, then 404; the chunks go with it.
	req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+"/api/v1/vod/titles/"+id, nil)
	for i, want := range []int{http.StatusNoContent, http.StatusNotFound} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("DELETE #%d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	if resp, _ := e.get(t, seg); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a chunk of the removed title: %d, want 404", resp.StatusCode)
	}
}

func TestBadUploadsGetAClearAnswerAndLeaveNothingBehind(t *testing.T) {
	e := newVoDEnv(t, func(c *Config) { c.MaxUpload = 64 << 10 })
	big := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10})
	bigBytes, err := os.ReadFile(big)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, query string
		body        []byte
		want        int
	}{
		{"empty body", "title=x", nil, http.StatusBadRequest},
		{"not media", "title=x", bytes.Repeat([]byte("this is not a video "), 200), http.StatusUnsupportedMediaType},
		{"over max_upload", "title=x", bigBytes, http.StatusRequestEntityTooLarge},
		{"no title", "", bytes.Repeat([]byte("x"), 10), http.StatusBadRequest},
		{"control characters in the title", "title=a%00b", bytes.Repeat([]byte("x"), 10), http.StatusBadRequest},
	} {
		code, v := e.post(t, tc.query, bytes.NewReader(tc.body))
		if code != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, code, v, tc.want)
		}
		if left := e.uploadsLeft(t); len(left) != 0 {
			t.Errorf("%s left %v", tc.name, left)
		}
	}
	if ts, err := e.s.List(""); err != nil || len(ts) != 0 {
		t.Errorf("catalog after bad uploads: %d titles, %v; want none", len(ts), err)
	}
	for _, p := range []string{"/api/v1/vod/titles/nosuch", "/vod/nosuch/index.m3u8", "/vod/chunks/" + strings.Repeat("0", 64) + ".m4s"} {
		if resp, _ := e.get(t, p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func (e *vodEnv) upload(t *testing.T, clip string) string {
	t.Helper()
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code, v := e.post(t, "title=clip", f)
	if code != http.StatusAccepted {
		t.Fatalf("POST: %d %v", code, v)
	}
	return v["id"].(string)
}

func TestACorruptChunkIsNeverServedAndItsTitleIsMarkedDamaged(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 50, Audio: "aac"})
	e := newVoDEnv(t, nil)
	id := e.upload(t, clip)
	e.waitReady(t, id)
	tt, err := e.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	seg := tt.Manifest.Renditions[0].Segments[1]
	hex := seg.Digest.String()
	file := filepath.Join(e.dir, "chunks", hex[:2], hex)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A restart on the same folder: nothing of the chunk is in memory.
	e.srv.Close()
	e.s.Close()
	s, err := NewService(DefaultConfig(), e.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mux := http.NewServeMux()
	s.Route(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	resp, body := e.get(t, ChunkURL(seg.Digest, false))
	if resp.StatusCode == http.StatusOK || bytes.Equal(body, b) {
		t.Fatalf("the corrupt chunk was served: %d, %d bytes", resp.StatusCode, len(body))
	}
	after, err := s.Get(id)
	if err != nil || after.State != StateFailed || !strings.Contains(after.Error, "damaged") {
		t.Fatalf("title after its chunk went bad: %s %q %v, want failed as damaged", after.State, after.Error, err)
	}
}

func TestAClientThatDisconnectsMidUploadLeavesNothing(t *testing.T) {
	e := newVoDEnv(t, nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /api/v1/vod/titles?title=x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
	c.Write(bytes.Repeat([]byte{0x47}, 300_000))
	testutil.Eventually(t, 10*time.Second, "the upload's temporary file exists", func() bool {
		return len(e.uploadsLeft(t)) == 1
	})
	c.Close()
	testutil.Eventually(t, 10*time.Second, "the partial upload is removed", func() bool {
		return len(e.uploadsLeft(t)) == 0
	})
	if ts, _ := e.s.List(""); len(ts) != 0 {
		t.Errorf("a title from a broken upload: %+v", ts)
	}
}

func TestAMultipartUploadTakesItsFileAndTitle(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4, GOP: 25, Audio: "aac"})
	e := newVoDEnv(t, nil)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("title", "From a form")
	fw, _ := mw.CreateFormFile("file", "clip.mkv")
	b, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(b)
	mw.Close()
	resp, err := http.Post(e.srv.URL+"/api/v1/vod/titles", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("multipart POST: %d %v", resp.StatusCode, v)
	}
	tj := e.waitReady(t, v["id"].(string))
	if tj.Title != "From a form" {
		t.Errorf("title %q, want the form's", tj.Title)
	}
}

// TestAMultipartUploadTakesFieldsSentAfterItsFile: a browser sends a form
// in its order; the title and description after the file still name it.
func TestAMultipartUploadTakesFieldsSentAfterItsFile(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4, GOP: 25, Audio: "aac"})
	e := newVoDEnv(t, nil)
	b, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	post := func(title string) (int, map[string]any) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("file", "clip.mkv")
		fw.Write(b)
		mw.WriteField("title", title)
		mw.WriteField("description", "Sent after the file")
		mw.Close()
		resp, err := http.Post(e.srv.URL+"/api/v1/vod/titles", mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	code, v := post("After The File")
	if code != http.StatusAccepted {
		t.Fatalf("multipart POST: %d %v", code, v)
	}
	tj := e.waitReady(t, v["id"].(string))
	if tj.Title != "After The File" || tj.Description != "Sent after the file" {
		t.Errorf("title %q description %q, want the fields sent after the file", tj.Title, tj.Description)
	}
	// A bad title after the file refuses the upload as a whole.
	if code, _ := post("bad\x01title"); code != http.StatusBadRequest {
		t.Fatalf("a control character in a trailing title: %d, want 400", code)
	}
	if ts, _ := e.s.List(""); len(ts) != 1 {
		t.Fatalf("%d titles after a refused upload, want the first one only", len(ts))
	}
}

// TestPackagingOnAFullDiskFailsTheTitleAndLeavesNothing: the disk fills up
// while a title is packaged: the title fails saying "no space", the
// chunks it had stored and its upload are removed, and the service goes on
// (a title that fits is packaged next).
func TestPackagingOnAFullDiskFailsTheTitleAndLeavesNothing(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 25, Audio: "aac"})
	e := newVoDEnv(t, func(c *Config) { c.Ladder = []LadderRung{} })
	var mu sync.Mutex
	budget := 100 << 10 // bytes the disk takes before it is full
	e.s.store.wrapTemp = func(w io.Writer) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			if len(p) > budget {
				n, _ := w.Write(p[:budget])
				budget = 0
				return n, &os.PathError{Op: "write", Path: "chunk", Err: syscall.ENOSPC}
			}
			budget -= len(p)
			return w.Write(p)
		})
	}
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	code, v := e.post(t, "title=Too+Big", f)
	f.Close()
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %v", code, v)
	}
	id := v["id"].(string)
	var tj TitleJSON
	testutil.Eventually(t, 60*time.Second, "the title fails", func() bool {
		_, b := e.get(t, "/api/v1/vod/titles/"+id)
		json.Unmarshal(b, &tj)
		return tj.State == StateFailed
	})
	if !strings.Contains(tj.Error, "no space") {
		t.Errorf("failed with %q, want it to say no space", tj.Error)
	}
	// The job drops what it stored just after the title is marked failed.
	var files, left []string
	testutil.Eventually(t, 10*time.Second, "no chunk and no upload file left", func() bool {
		files = files[:0]
		filepath.WalkDir(e.s.store.Dir(), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files = append(files, p)
			}
			return nil
		})
		left = e.uploadsLeft(t)
		return len(files) == 0 && len(left) == 0
	})
	// Space again: the service packages the next title.
	mu.Lock()
	budget = 1 << 40
	mu.Unlock()
	e.waitReady(t, e.upload(t, clip))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
