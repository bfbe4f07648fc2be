package overlay

import (
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// testDemand is a tracker over the default classes with a clock the test
// moves.
type testDemand struct {
	*DemandTracker
	mu      sync.Mutex
	at      time.Time
	viewers []Viewer
}

func newTestDemand(t *testing.T, sink DemandSink) *testDemand {
	t.Helper()
	td := &testDemand{at: time.Unix(1000, 0)}
	cfg := Config{}.Demand()
	cfg.DeviceClasses, cfg.DefaultDevice = DefaultDeviceClasses(), "laptop"
	cfg.WatchLease = 30 * time.Second
	cfg.Viewers = func() []Viewer {
		td.mu.Lock()
		defer td.mu.Unlock()
		return slices.Clone(td.viewers)
	}
	d, err := NewDemandTracker(cfg, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.now = func() time.Time {
		td.mu.Lock()
		defer td.mu.Unlock()
		return td.at
	}
	td.DemandTracker = d
	return td
}

func (td *testDemand) advance(d time.Duration) {
	td.mu.Lock()
	td.at = td.at.Add(d)
	td.mu.Unlock()
}

func (td *testDemand) setViewers(v ...Viewer) {
	td.mu.Lock()
	td.viewers = v
	td.mu.Unlock()
}

func wantCounts(t *testing.T, what string, got, want map[string]map[string]int) {
	t.Helper()
	if !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("%s: counts %v, want %v", what, got, want)
	}
}

func TestDemandCountsSessionsByTheirDeviceAndForgetsClosedOnes(t *testing.T) {
	d := newTestDemand(t, nil)
	d.SessionOpened("a", "live/cam1", "phone")
	d.SessionOpened("b", "live/cam1@360p", "tv")
	d.SessionOpened("c", "live/cam2", "")
	d.SessionOpened("d", "live/cam2", "fridge")
	wantCounts(t, "four sessions", d.Counts(), map[string]map[string]int{
		"live/cam1": {"phone": 1, "tv": 1}, "live/cam2": {"laptop": 2}})
	d.SessionClosed("a")
	d.SessionClosed("unknown")
	wantCounts(t, "after a close", d.Counts(), map[string]map[string]int{
		"live/cam1": {"tv": 1}, "live/cam2": {"laptop": 2}})
}

func TestDemandLeaseCountsUntilTheSessionTakesItOver(t *testing.T) {
	d := newTestDemand(t, nil)
	d.Lease("live/cam1", "tv", "")
	wantCounts(t, "leased", d.Counts(), map[string]map[string]int{"live/cam1": {"tv": 1}})
	// The player's session names no device: it takes the lease's class,
	// and the lease is used up.
	d.SessionOpened("s", "live/cam1@360p", "")
	wantCounts(t, "session took the lease", d.Counts(), map[string]map[string]int{"live/cam1": {"tv": 1}})
	d.SessionClosed("s")
	wantCounts(t, "closed", d.Counts(), map[string]map[string]int{})
}

func TestDemandLeaseExpires(t *testing.T) {
	d := newTestDemand(t, nil)
	d.Lease("live/cam1", "phone", "")
	d.advance(31 * time.Second)
	wantCounts(t, "expired lease", d.Counts(), map[string]map[string]int{})
}

// TestDemandLeaseExpiredWhileTheSessionStartsCountsTheViewerOnce: /watch
// leases a viewer, waits for the stream, and renews the lease before it
// redirects. When the lease expired during the wait and the viewer's
// session took it meanwhile, the renewal must not count the viewer again.
func TestDemandLeaseExpiredWhileTheSessionStartsCountsTheViewerOnce(t *testing.T) {
	d := newTestDemand(t, nil)
	l := d.Lease("live/cam1", "phone", "")
	d.advance(31 * time.Second)
	d.SessionOpened("s", "live/cam1", "phone")
	l.Renew()
	wantCounts(t, "one viewer, by its session", d.Counts(), map[string]map[string]int{"live/cam1": {"phone": 1}})
}

func TestDemandLeaseExpiredWhileWaitingCountsAgainOnRenew(t *testing.T) {
	d := newTestDemand(t, nil)
	l := d.Lease("live/cam1", "phone", "")
	d.advance(31 * time.Second)
	wantCounts(t, "expired", d.Counts(), map[string]map[string]int{})
	l.Renew()
	wantCounts(t, "renewed", d.Counts(), map[string]map[string]int{"live/cam1": {"phone": 1}})
}

func TestDemandPolledViewerKeepsTheClassItWasFirstCountedIn(t *testing.T) {
	d := newTestDemand(t, nil)
	d.Lease("live/cam1", "tv", "")
	d.setViewers(Viewer{Path: "live/cam1", Client: "1.2.3.4"})
	wantCounts(t, "HLS viewer took the lease", d.Counts(), map[string]map[string]int{"live/cam1": {"tv": 1}})
	wantCounts(t, "still tv", d.Counts(), map[string]map[string]int{"live/cam1": {"tv": 1}})
	if got := d.ViewedPaths(); !slices.Equal(got, []string{"live/cam1"}) {
		t.Errorf("ViewedPaths %v, want [live/cam1]", got)
	}
	d.setViewers()
	wantCounts(t, "viewer gone", d.Counts(), map[string]map[string]int{})
	if got := d.ViewedPaths(); len(got) != 0 {
		t.Errorf("ViewedPaths %v with no viewer", got)
	}
}

// recordingSink records what a tracker reports.
type recordingSink struct {
	demand map[string]map[string]int
	calls  int
	use    map[string]int
}

func (s *recordingSink) SetDemand(stream string, v map[string]int) {
	s.calls++
	if v == nil {
		delete(s.demand, stream)
		return
	}
	s.demand[stream] = v
}

func (s *recordingSink) SetTranscodeUse(u map[string]int) { s.use = u }

func TestDemandReportSendsOnlyChanges(t *testing.T) {
	sink := &recordingSink{demand: map[string]map[string]int{}}
	d := newTestDemand(t, sink)
	d.SessionOpened("a", "live/cam1", "phone")
	d.Report()
	d.Report()
	if sink.calls != 1 {
		t.Errorf("%d reports for one change, want 1", sink.calls)
	}
	d.SessionClosed("a")
	d.Report()
	if sink.calls != 2 || len(sink.demand) != 0 {
		t.Errorf("after the close: %d reports, demand %v; want 2 reports and none", sink.calls, sink.demand)
	}
}

func TestDemandTrackerCloseWithoutStartAndTwice(t *testing.T) {
	d := newTestDemand(t, nil)
	d.Close()
	d.Close()
	if err := d.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestDemandReportsTranscodeUseWhenItMoves(t *testing.T) {
	sink := &recordingSink{demand: map[string]map[string]int{}}
	d := newTestDemand(t, sink)
	use := map[string]int{"live/cam1": 1}
	d.cfg.TranscodeUse = func() map[string]int { return maps.Clone(use) }
	d.Report()
	if !maps.Equal(sink.use, use) {
		t.Fatalf("reported use %v, want %v", sink.use, use)
	}
	sink.use = nil
	d.Report()
	if sink.use != nil {
		t.Errorf("unchanged use reported again: %v", sink.use)
	}
	use = map[string]int{}
	d.Report()
	if sink.use == nil || len(sink.use) != 0 {
		t.Errorf("use that went to none reported as %v", sink.use)
	}
}

// TestDemandLeasesPerClientAreCapped: a client hitting /watch thousands of
// times counts as LeasesPerClient viewers at most; another client counts.
func TestDemandLeasesPerClientAreCapped(t *testing.T) {
	td := newTestDemand(t, nil)
	for range 3000 {
		td.Lease("live/cam1", "tv", "203.0.113.9").Renew()
	}
	td.Lease("live/cam1", "tv", "198.51.100.7")
	wantCounts(t, "3000 hits from one client, one from another", td.Counts(),
		map[string]map[string]int{"live/cam1": {"tv": 4 + 1}})
	// Once the client's leases expired it counts again, within the cap.
	td.advance(31 * time.Second)
	for range 10 {
		td.Lease("live/cam1", "tv", "203.0.113.9")
	}
	wantCounts(t, "after expiry", td.Counts(), map[string]map[string]int{"live/cam1": {"tv": 4}})
}
