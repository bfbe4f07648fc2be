package serverlet_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

var (
	pluginsMu  sync.Mutex
	pluginsDir string                // for the whole test process, removed by TestMain
	plugins    = map[string]string{} // name → built file
)

// buildPlugin builds the package at pkg (relative to this package) as a Go
// plugin named name.so, with -race when this test binary has it (a plugin
// must be built with the same flags as the binary loading it); mismatch
// flips that. A process never unloads a plugin and refuses a second build
// of one, so each is built once per test process and reused (go test
// -count=N).
func buildPlugin(t *testing.T, name, pkg string, mismatch bool) string {
	t.Helper()
	pluginsMu.Lock()
	defer pluginsMu.Unlock()
	if f, ok := plugins[name]; ok {
		return f
	}
	out := filepath.Join(pluginsDir, name+".so")
	args := []string{"build", "-buildmode=plugin", "-o", out}
	if serverlet.RaceEnabled != mismatch {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	plugins[name] = out
	return out
}

func TestGrayscalePluginMakesChromaFlat(t *testing.T) {
	dir := filepath.Dir(buildPlugin(t, "grayscale", "./examples/grayscale", false))
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{PluginDir: dir, Plugins: []string{"grayscale"},
		Ladder: map[string]string{"gray": "grayscale"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4})
	src, err := hub.Subscribe("live/cam1", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, err := hub.Subscribe("live/cam1@gray", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	chromaSpread := func(frames []testutil.Frame) int {
		lo, hi := 255, 0
		for _, f := range frames {
			for _, p := range [][]byte{f.U, f.V} {
				for _, v := range p {
					lo, hi = min(lo, int(v)), max(hi, int(v))
				}
			}
		}
		return hi - lo
	}
	srcSpread := chromaSpread(decodeVideo(t, src.Description(), readUnits(t, src, 30, 10*time.Second)))
	gray := decodeVideo(t, r.Description(), readUnits(t, r, 30, 10*time.Second))
	if len(gray) < 25 {
		t.Fatalf("decoded %d frames of @gray", len(gray))
	}
	if s := chromaSpread(gray); s > 4 || srcSpread < 100 {
		t.Fatalf("chroma spans %d values in @gray (source: %d); want a flat chroma from a colourful source", s, srcSpread)
	}
}

func TestPanickingPluginStopsOnlyItsRendition(t *testing.T) {
	dir := filepath.Dir(buildPlugin(t, "panicky", "./testdata/panicky", false))
	hub, m, logs := newTestManager(t, serverlet.ManagerConfig{PluginDir: dir, Plugins: []string{"panicky"},
		Ladder: map[string]string{"bad": "panicky"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4})
	good, err := hub.Subscribe("live/cam1@180p", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	bad, err := hub.Subscribe("live/cam1@bad", "test")
	if err == nil {
		defer bad.Close()
		for {
			if _, err = bad.Read(); err != nil {
				break
			}
		}
	}
	if !errors.Is(err, media.ErrStreamEnded) && !errors.Is(err, media.ErrNotFound) {
		t.Fatalf("reader of the panicking rendition got %v, want the stream to end", err)
	}
	testutil.Eventually(t, 5*time.Second, "failure counted", func() bool { return m.Stats().Failed == 1 })
	if !strings.Contains(logs.String(), "panicked") {
		t.Errorf("the panic is not logged")
	}
	if _, ok := hub.Lookup("live/cam1"); !ok {
		t.Fatal("the source ended with the plugin")
	}
	readUnits(t, good, 30, 10*time.Second) // the other rendition keeps running
	// The rendition can be asked again (and fails again), the node stays up.
	if r, err := hub.Subscribe("live/cam1@bad", "test"); err == nil {
		r.Close()
	}
}

func TestLoadPluginRefusesBadPlugins(t *testing.T) {
	dir := filepath.Dir(buildPlugin(t, "nosymbol", "./testdata/nosymbol", false))
	buildPlugin(t, "wrongtype", "./testdata/wrongtype", false)
	buildPlugin(t, "otherflags", "./testdata/otherflags", true)
	for _, tc := range []struct{ name, want string }{
		{"missing", "no such file"},
		{"nosymbol", "does not export New"},
		{"wrongtype", "is a func() string, want func(serverlet.Args)"},
		{"otherflags", "must be built with the same Go toolchain"},
	} {
		err := serverlet.NewRegistry().LoadPlugin(dir, tc.name)
		if err == nil || !errors.Is(err, serverlet.ErrPlugin) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("plugin %s: err %v, want one saying %q", tc.name, err, tc.want)
		} else {
			t.Logf("plugin %s: %v", tc.name, err)
		}
	}
	// A manager refuses to start with a bad plugin in its config.
	if _, _, err := startManager(serverlet.ManagerConfig{PluginDir: dir, Plugins: []string{"nosymbol"}}, nil); err == nil ||
		!strings.Contains(err.Error(), "plugins[0]: ") {
		t.Errorf("serverlet.Manager.Start with a plugin without New: %v, want an error naming plugins[0]", err)
	}
}
