package main

// Tests of `paxosd bench` as a user runs it: its help, its refusals of bad
// flags, and short runs against a 3-process cluster.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/internal/testports"
)

func TestBenchHelp(t *testing.T) {
	r := run(t, "", "bench", "--help")
	ok(t, "bench --help", r)
	for _, want := range []string{"Examples:", "--clients", "--size", "--duration", "--total", "--warmup", "--rate",
		"--batch", "--inflight", "--conns", "--verify", "open loop", "lost", "duplicated", "sidebyside.sh", "bench/compare",
		"paxosd bench --rate 5000", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench --help does not mention %q:\n%s", want, r.stdout)
		}
	}
	// paxosd bench measures paxosd only: no --target.
	if strings.Contains(r.stdout, "--target") {
		t.Errorf("bench --help offers --target:\n%s", r.stdout)
	}
}

// TestBenchBadFlags: each is refused before anything is sent, with an error
// that names the flag. The endpoint is a closed port: a refusal that tried
// to connect would say so instead.
func TestBenchBadFlags(t *testing.T) {
	ep := testports.Addrs(t, 1)[0]
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--clients", "0"}, []string{"--clients 0"}},
		{[]string{"--size", "0"}, []string{"--size 0", "pick 32"}},
		{[]string{"--size", "8"}, []string{"--size 8"}},
		{[]string{"--duration", "1s", "--total", "10"}, []string{"--duration", "--total", "not both"}},
		{[]string{"--duration", "-1s"}, []string{"--duration"}},
		{[]string{"--total", "0"}, []string{"--total 0"}},
		{[]string{"--warmup", "-1s"}, []string{"--warmup"}},
		{[]string{"--rate", "-5"}, []string{"--rate"}},
		{[]string{"--batch", "0"}, []string{"--batch 0"}},
		{[]string{"--inflight", "33"}, []string{"--inflight 33", "32"}},
		{[]string{"--clients", "2", "--conns", "3"}, []string{"--conns 3"}},
		{[]string{"--target", "etcd"}, []string{"target", "paxosd bench --help"}},
		{[]string{"--endpoints", " , "}, []string{"--endpoints", "at least one"}},
		{[]string{"-w", "yaml"}, []string{"--write-out"}},
		{[]string{"--clients", "many"}, []string{"clients"}},
		{[]string{"--no-such-flag"}, []string{"no-such-flag", "paxosd bench --help"}},
		{[]string{"extra"}, []string{"unexpected argument"}},
	} {
		args := append([]string{"bench", "--endpoints", ep}, tc.args...)
		refused(t, strings.Join(tc.args, " "), run(t, "", args...), tc.want...)
	}
}

func TestBenchRun(t *testing.T) {
	c := startCluster(t)
	r := run(t, "", "bench", "--endpoints", c.eps, "--clients", "2", "--size", "40", "--duration", "1s",
		"--warmup", "200ms", "--interval", "300ms", "-w", "json")
	ok(t, "bench -w json", r)
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%v", err, r)
	}
	for _, k := range []string{"throughput", "p50_ms", "p99_ms", "p999_ms", "clients", "size", "ops", "entries_per_s",
		"mb_per_s", "errors", "batch", "inflight", "duration_s", "nodes", "fsync", "lost", "duplicated"} {
		if _, ok := res[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, r.stdout)
		}
	}
	if res["ops"].(float64) <= 0 || res["lost"].(float64) != 0 || res["duplicated"].(float64) != 0 ||
		res["nodes"].(float64) != 3 || res["fsync"] != true || res["clients"].(float64) != 2 || res["size"].(float64) != 40 {
		t.Errorf("unexpected result: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "ops/s") {
		t.Errorf("no progress line on stderr:\n%v", r)
	}

	r = run(t, "", "bench", "--endpoints", c.eps, "--clients", "2", "--size", "64", "--total", "20",
		"--batch", "10", "--inflight", "2", "--warmup", "0s", "-w", "table")
	ok(t, "batched bench -w table", r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "SYSTEM") || !strings.HasPrefix(lines[1], "paxosd") {
		t.Fatalf("want a header and one row:\n%v", r)
	}
	fields := strings.Fields(lines[1])
	if got := fields[len(fields)-2:]; got[0] != "0" || got[1] != "0" {
		t.Errorf("lost, duplicated = %v, want 0 0:\n%s", got, r.stdout)
	}
}
