package testutil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// ChromiumPath is the browser the tests drive: Debian's chromium package.
const ChromiumPath = "/usr/bin/chromium"

// Chromium starts a headless Chromium for the test and returns a chromedp
// context for its first tab; the browser is closed at cleanup. It uses a
// fresh profile in t.TempDir(), lets media autoplay without a gesture,
// keeps WebRTC candidates on loopback unobfuscated so a local WHEP server
// is reachable, and turns off everything that would reach the network on
// its own (sync, component updates, QUIC). A missing browser fails the
// test: run scripts/setup.sh.
//
// The page's console output and uncaught exceptions are logged when the
// test fails. extra adds flags, e.g. FakeMediaDevices.
func Chromium(t testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		t.Fatalf("%s not found: run `make setup` (scripts/setup.sh) first", ChromiumPath)
	}
	profile := filepath.Join(t.TempDir(), "profile")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// WebRTC against a server on 127.0.0.1: gather loopback candidates
		// and show real addresses instead of mDNS names.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(960, 720),
	}
	opts = append(opts, extra...)
	var console consoleLog
	browserOut := &lockedBuffer{}
	opts = append(opts, chromedp.CombinedOutput(browserOut))

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(func(string, ...any) {}))
	chromedp.ListenTarget(ctx, console.listen)

	// The first Run starts the browser and binds it to the context it is
	// given, so it must be ctx itself, not a shorter-lived child.
	if err := chromedp.Run(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start %s: %v\n%s", ChromiumPath, err, tail(browserOut.String(), 4000))
	}
	t.Cleanup(func() {
		// Close the browser gracefully and wait for it to exit, then
		// empty its profile: Chromium's helpers write there for a moment
		// after the browser is gone, which would fail t.TempDir's removal.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		chromedp.Cancel(cctx)
		cancel()
		cancelCtx()
		cancelAlloc()
		for deadline := time.Now().Add(5 * time.Second); ; {
			if err := os.RemoveAll(profile); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if t.Failed() {
			if s := console.String(); s != "" {
				t.Logf("browser console:\n%s", tail(s, 8000))
			}
		}
	})
	return ctx
}

// FakeMediaDevices gives getUserMedia a fake camera (a test pattern) and
// microphone (a beep) and grants it without asking: a publish page can
// run headless.
var FakeMediaDevices = []chromedp.ExecAllocatorOption{
	chromedp.Flag("use-fake-device-for-media-stream", true),
	chromedp.Flag("use-fake-ui-for-media-stream", true),
}

// consoleLog collects what the page printed.
type consoleLog struct {
	mu    sync.Mutex
	lines []string
}

func (c *consoleLog) listen(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		args := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		line = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "exception: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
	default:
		return
	}
	c.mu.Lock()
	c.lines = append(c.lines, time.Now().Format("15:04:05.000")+" "+line)
	c.mu.Unlock()
}

func (c *consoleLog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// ArtifactsDir is where tests leave files for people to look at
// (screenshots): $GRADIENT_ARTIFACTS, or artifacts/ at the repository root.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("GRADIENT_ARTIFACTS")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatalf("artifacts folder: %v (set GRADIENT_ARTIFACTS)", err)
		}
		dir = filepath.Join(root, "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts folder: %v", err)
	}
	return dir
}

// repoRoot is the nearest parent of the working directory with a go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Screenshot saves the browser's viewport as a PNG in the artifacts folder,
// named after the test and name, and logs its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	var png []byte
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Run(sctx, chromedp.CaptureScreenshot(&png)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	file := unsafeFileChars.ReplaceAllString(t.Name()+"-"+name, "_") + ".png"
	path := filepath.Join(ArtifactsDir(t), file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
