package serverlet_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

type logBuffer = testutil.LogBuffer

func TestMain(m *testing.M) {
	astiav.SetLogLevel(astiav.LogLevelError) // libx264's banner per serverlet is noise here
	dir, err := os.MkdirTemp("", "serverlet-plugins-")
	if err != nil {
		panic(err)
	}
	pluginsDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ensureFunc is a media.RenditionProvider made of a function.
type ensureFunc func(ctx context.Context, path string) error

func (f ensureFunc) Ensure(ctx context.Context, path string) error { return f(ctx, path) }

// startManager builds a hub whose renditions a started manager makes: the
// hub is built first, with a provider that asks the manager built next.
func startManager(cfg serverlet.ManagerConfig, log *slog.Logger) (*media.Hub, *serverlet.Manager, error) {
	var m *serverlet.Manager
	hub, err := media.NewHub(media.HubConfig{
		Renditions: ensureFunc(func(ctx context.Context, path string) error { return m.Ensure(ctx, path) })}, log)
	if err != nil {
		return nil, nil, err
	}
	m, err = serverlet.NewManager(cfg, hub, log)
	if err == nil {
		if err = m.Start(); err != nil {
			m.Close()
		}
	}
	if err != nil {
		hub.Close()
		return nil, nil, err
	}
	return hub, m, nil
}

// newTestManager returns a hub whose renditions the manager makes, with
// the manager's log kept for failures.
func newTestManager(t *testing.T, cfg serverlet.ManagerConfig) (*media.Hub, *serverlet.Manager, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.IdleStop == 0 {
		cfg.IdleStop = time.Second
	}
	hub, m, err := startManager(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		hub.Close()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return hub, m, logs
}

// publishClip publishes a looping test clip at path.
func publishClip(t *testing.T, hub *media.Hub, path string, o testutil.ClipOptions) {
	t.Helper()
	clip := testutil.Clip(t, o)
	stop := testutil.PublishFile(t, hub, path, clip, false)
	t.Cleanup(stop)
}

// readUnits reads units of r until n video units arrived or d passed.
func readUnits(t *testing.T, r *media.Reader, n int, d time.Duration) []*media.Unit {
	t.Helper()
	video := r.Description().VideoTrack()
	var out []*media.Unit
	timeout := time.After(d)
	for count := 0; count < n; {
		select {
		case u, ok := <-r.C():
			if !ok {
				t.Fatalf("%s ended after %d video units", r.Stream().Path(), count)
			}
			out = append(out, u)
			if u.Track == video {
				count++
			}
		case <-timeout:
			t.Fatalf("%s: %d video units in %v, want %d", r.Stream().Path(), count, d, n)
		}
	}
	return out
}

// decodeVideo decodes the video units into frames.
func decodeVideo(t *testing.T, desc media.Description, units []*media.Unit) []testutil.Frame {
	t.Helper()
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	v := desc.VideoTrack()
	var frames []testutil.Frame
	for i, u := range units {
		if u.Track != v {
			continue
		}
		au := u.Data
		if i == 0 || u.Key {
			au = media.WithParameterSets(au, desc.Tracks[v].SPS, desc.Tracks[v].PPS)
		}
		fs, err := dec.Decode(au, int64(u.PTS/time.Microsecond))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		frames = append(frames, fs...)
	}
	return frames
}
