package testutil

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireTool skips nothing: a missing tool is a broken test machine, so the
// test fails and says how to fix it.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make setup` (scripts/setup.sh) first", name)
	}
	return p
}

// ClipOptions describe a test clip made with the ffmpeg command.
type ClipOptions struct {
	Width, Height int
	FPS           int
	Seconds       int
	Bitrate       string // e.g. "500k"
	GOP           int    // frames between keyframes; default FPS (one per second)
	Audio         string // "", "aac" or "opus"
	VideoCodec    string // default "libx264"; e.g. "libx265" or "mjpeg" for refusal tests
}

var clipMu sync.Mutex

// Clip returns the path of an MPEG-TS or MP4 clip with a test pattern (and
// a tone), encoded once per option set and cached under the system temp
// folder so that tests share it. H.264 clips have no B-frames.
func Clip(t testing.TB, o ClipOptions) string {
	t.Helper()
	RequireTool(t, "ffmpeg")
	if o.FPS == 0 {
		o.FPS = 30
	}
	if o.Seconds == 0 {
		o.Seconds = 10
	}
	if o.Bitrate == "" {
		o.Bitrate = "500k"
	}
	if o.GOP == 0 {
		o.GOP = o.FPS
	}
	if o.VideoCodec == "" {
		o.VideoCodec = "libx264"
	}
	ext := "mkv"
	name := fmt.Sprintf("gradient-clip-%dx%d-%d-%ds-%s-g%d-%s-%s.%s", o.Width, o.Height, o.FPS, o.Seconds,
		o.Bitrate, o.GOP, o.Audio, o.VideoCodec, ext)
	path := filepath.Join(os.TempDir(), name)
	clipMu.Lock()
	defer clipMu.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	args := []string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=%d", o.Width, o.Height, o.FPS)}
	if o.Audio != "" {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
	}
	args = append(args, "-t", fmt.Sprint(o.Seconds), "-c:v", o.VideoCodec, "-b:v", o.Bitrate, "-g", fmt.Sprint(o.GOP))
	switch o.VideoCodec {
	case "libx264":
		args = append(args, "-preset", "veryfast", "-tune", "zerolatency", "-bf", "0", "-pix_fmt", "yuv420p", "-keyint_min", fmt.Sprint(o.GOP))
	case "libx265":
		args = append(args, "-preset", "ultrafast", "-pix_fmt", "yuv420p")
	}
	switch o.Audio {
	case "aac":
		args = append(args, "-c:a", "aac", "-b:a", "64k", "-ac", "2")
	case "opus":
		args = append(args, "-c:a", "libopus", "-b:a", "64k", "-ac", "2")
	}
	tmp := path + ".part." + ext
	args = append(args, tmp)
	out, err := exec.Command("ffmpeg", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make clip: ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Process is a command started by a test; it is killed at cleanup.
type Process struct {
	Cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs name with args until the test ends; its combined output is
// kept for Output and logged when the test fails.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	p := &Process{Cmd: cmd, output: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
		if t.Failed() {
			t.Logf("%s %s output:\n%s", name, strings.Join(args, " "), tail(p.output.String(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Output is what the process printed so far.
func (p *Process) Output() string { return p.output.String() }

// Done is closed when the process exits.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, valid after Done.
func (p *Process) Err() error { return p.err }

// Wait waits for the process to exit, at most d.
func (p *Process) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v; output:\n%s", p.Cmd.Path, d, tail(p.Output(), 4000))
		return nil
	}
}

// FFmpegPublish loops clip into url with -re -c copy until the test ends.
// format is "rtsp" or "mpegts"; extra args go before the output URL.
func FFmpegPublish(t testing.TB, clip, format, url string, extra ...string) *Process {
	t.Helper()
	args := []string{"-hide_banner", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i", clip, "-c", "copy", "-f", format}
	args = append(args, extra...)
	args = append(args, url)
	return Start(t, "ffmpeg", args...)
}

// FreePort returns a loopback port that was free a moment ago for both TCP
// and UDP (memberlist binds both on one port). It is drawn at random below
// Linux's ephemeral range (32768-60999), so that the kernel does not hand
// it to some client's outgoing connection before the test binds it, and
// tests running in parallel packages rarely draw the same one. Within one
// test binary it never hands out a port twice, so that tests running side
// by side (several SeaweedFS servers of 8 ports each) cannot draw the
// same port before either binds it. network is kept for readability at
// call sites.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 200; i++ {
		p := 20000 + rand.IntN(12000)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err != nil {
			continue
		}
		c.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free %s port found", network)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // FreePort's answers in this process
)

// Eventually polls cond every 20 ms until it returns true or d passes, then
// fails the test with msg.
func Eventually(t testing.TB, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
