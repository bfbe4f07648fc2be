package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/optimizer"
)

// The optimizer/problem-and-plan.md example: the optimum downscales at the root.
const planExample = `{"root":"n0","levels":[{"name":"1080p","kbps":4500},{"name":"720p","kbps":2500},{"name":"360p","kbps":800}],
 "nodes":[{"id":"n0"},{"id":"n1","transcode_cost":0.5,"transcode_slots":2}],
 "links":[{"a":"n0","b":"n1","cost_per_mbps":0.02}],
 "demands":[{"node":"n1","viewers":120,"last_mile_cost_per_mbps":0.01,"utility":{"1080p":0.05,"720p":0.045,"360p":0.03}}]}`

func TestPlanCommandPrintsAFeasiblePlanWithItsCost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(path, []byte(planExample), 0o644)
	var out bytes.Buffer
	if err := plan([]string{"--algorithm", "primal-dual", path}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var pl optimizer.Plan
	if err := json.Unmarshal(out.Bytes(), &pl); err != nil {
		t.Fatalf("output is not a plan: %v\n%s", err, out.String())
	}
	if pl.Cost.Total > -2.6239 || pl.Cost.Total < -2.6241 {
		t.Fatalf("total %v, want the optimum -2.624", pl.Cost.Total)
	}
}

func TestPlanCommandNamesTheBadField(t *testing.T) {
	bad := strings.Replace(planExample, `"b":"n1"`, `"b":"n9"`, 1)
	path := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(path, []byte(bad), 0o644)
	err := plan([]string{"--algorithm", "primal-dual", path}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "links[0].b") {
		t.Fatalf("bad link: %v, want an error naming links[0].b", err)
	}
	if err := plan([]string{"--algorithm", "nope", path}, nil, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
}
