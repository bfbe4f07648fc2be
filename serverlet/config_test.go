package serverlet_test

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

func TestManagerConfigValidateNamesTheYAMLKey(t *testing.T) {
	if err := serverlet.DefaultManagerConfig().Validate(); err != nil {
		t.Fatalf("DefaultManagerConfig does not validate: %v", err)
	}
	for want, edit := range map[string]func(*serverlet.ManagerConfig){
		"slots: ":           func(c *serverlet.ManagerConfig) { c.Slots = -1 },
		"idle_stop: ":       func(c *serverlet.ManagerConfig) { c.IdleStop = -time.Second },
		"ladder: ":          func(c *serverlet.ManagerConfig) { c.Ladder = map[string]string{"a b": "scale x360"} },
		"ladder.360p: ":     func(c *serverlet.ManagerConfig) { c.Ladder = map[string]string{"360p": " "} },
		"preset: ":          func(c *serverlet.ManagerConfig) { c.Encoder.Preset = "turbo" },
		"threads: ":         func(c *serverlet.ManagerConfig) { c.Encoder.Threads = -2 },
		"plugins[1]: ":      func(c *serverlet.ManagerConfig) { c.Plugins = []string{"gray", "a b"} },
		"inline_busy_max: ": func(c *serverlet.ManagerConfig) { c.InlineBusyMax = 1.5 },
	} {
		c := serverlet.DefaultManagerConfig()
		edit(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Validate = %v, want an error starting %q", err, want)
		}
	}
}

func TestManagerConfigKeepsTheServerletsYAMLKeys(t *testing.T) {
	var c serverlet.ManagerConfig
	in := "ladder:\n  gray: grayscale\nslots: 3\nidle_stop: 2s\npreset: fast\nthreads: 2\nplugin_dir: /p\nplugins: [gray]\nshared_decode: false\ninline_rungs: false\ninline_busy_max: 0.6\ncascade_scale: false\n"
	dec := yaml.NewDecoder(strings.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Ladder["gray"] != "grayscale" || c.Slots != 3 || c.IdleStop != 2*time.Second || c.Encoder.Preset != "fast" ||
		c.Encoder.Threads != 2 || c.PluginDir != "/p" || len(c.Plugins) != 1 || c.SharedDecode == nil || *c.SharedDecode ||
		c.InlineRungs == nil || *c.InlineRungs || c.InlineBusyMax != 0.6 || c.CascadeScale == nil || *c.CascadeScale {
		t.Errorf("decoded %+v from\n%s", c, in)
	}
}

func TestSharedDecodeIsOnUnlessTurnedOff(t *testing.T) {
	if d := serverlet.DefaultManagerConfig().SharedDecode; d == nil || !*d {
		t.Errorf("DefaultManagerConfig().SharedDecode = %v, want true", d)
	}
	if d := serverlet.DefaultManagerConfig(); d.InlineRungs == nil || !*d.InlineRungs || d.InlineBusyMax != 0.8 || d.CascadeScale == nil || !*d.CascadeScale {
		t.Errorf("DefaultManagerConfig() inline_rungs %v inline_busy_max %v cascade_scale %v, want true, 0.8 and true", d.InlineRungs, d.InlineBusyMax, d.CascadeScale)
	}
	// Each default is its own: turning one off leaves the next default on.
	c := serverlet.DefaultManagerConfig()
	*c.SharedDecode = false
	if !*serverlet.DefaultManagerConfig().SharedDecode {
		t.Error("turning shared_decode off in one config turned off the default")
	}
}

func TestNewManagerDoesNoIOAndCloseIsSafe(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	// A plugin that does not exist is not looked for before Start.
	m, err := serverlet.NewManager(serverlet.ManagerConfig{PluginDir: t.TempDir(), Plugins: []string{"nosuch"}}, hub, nil)
	if err != nil {
		t.Fatalf("NewManager read its plugins: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close without Start: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	m, err = serverlet.NewManager(serverlet.ManagerConfig{PluginDir: t.TempDir(), Plugins: []string{"nosuch"}}, hub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(); err == nil || !strings.Contains(err.Error(), "plugins[0]: ") {
		t.Errorf("Start with a missing plugin: %v, want an error naming plugins[0]", err)
	}
	if _, err := serverlet.NewManager(serverlet.ManagerConfig{Slots: -1}, hub, nil); err == nil {
		t.Error("NewManager accepted slots: -1")
	}
}
