package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/internal/testports"
)

// jsonLines parses a node's log: every line must be one JSON object with
// time, level, msg and the node's ID.
func jsonLines(t *testing.T, p *proc, id float64) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("node %v: a log line that is not JSON (%v): %s", id, err, sc.Text())
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k]; !ok {
				t.Errorf("node %v: a line without %q: %s", id, k, sc.Text())
			}
		}
		if m[event.KeyNode] != id {
			t.Errorf("node %v: a line with node %v: %s", id, m[event.KeyNode], sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// With --log-format json, each node writes JSON lines that all carry its
// ID; the master's election carries the instance and ballot; the first
// line gives the effective configuration, and a stop by SIGTERM says why.
func TestJSONLogs(t *testing.T) {
	c := startCluster(t, "--log-format", "json")
	var elected map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for elected == nil && time.Now().Before(deadline) {
		for i, p := range c.procs {
			for _, m := range jsonLines(t, p, float64(i+1)) {
				if m["msg"] == event.MasterElected {
					elected = m
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond)
	}
	if elected == nil {
		t.Fatalf("no %q line within 20s:\n%s", event.MasterElected, c.logs())
	}
	if elected["level"] != "INFO" || elected[event.KeyInstance] == nil || elected[event.KeyBallot] == nil {
		t.Errorf("%q line: %v, want INFO with instance and ballot", event.MasterElected, elected)
	}
	if b, _ := elected[event.KeyBallot].(float64); b <= 0 {
		t.Errorf("%q with ballot %v", event.MasterElected, elected[event.KeyBallot])
	}

	c.procs[2].stop(t)
	lines := jsonLines(t, c.procs[2], 3)
	first := lines[0]
	if first["msg"] != event.Starting || first["peers"] != c.peers || first["tls"] != false || first["auth"] != false ||
		!strings.HasSuffix(first["data_dir"].(string), "data3") {
		t.Errorf("first line %v, want %q with the effective configuration", first, event.Starting)
	}
	var msgs []string
	for _, m := range lines {
		msgs = append(msgs, m["msg"].(string))
	}
	for _, want := range []string{event.Serving, event.ShuttingDown, event.NodeStopped} {
		found := false
		for _, m := range msgs {
			found = found || m == want
		}
		if !found {
			t.Errorf("node 3 did not log %q: %q", want, msgs)
		}
	}
}

// Bad log flags, and bad values in their environment variables, are usage
// errors that name the flag, before anything starts.
func TestBadLogFlags(t *testing.T) {
	needProcesses(t)
	dir := filepath.Join(t.TempDir(), "data")
	peers := "1=" + testports.Addrs(t, 1)[0]
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{args: []string{"--log-level", "verbose"}, want: "--log-level"},
		{args: []string{"--log-format", "xml"}, want: "--log-format"},
		{args: []string{"--slow-fsync-threshold", "0s"}, want: "--slow-fsync-threshold"},
		{env: "PAXOSD_LOG_LEVEL=loud", want: "--log-level"},
		{env: "PAXOSD_LOG_FORMAT=yaml", want: "--log-format"},
	} {
		for _, sub := range []string{"server", "dev"} {
			args := append([]string{sub, "--data-dir", dir}, tc.args...)
			if sub == "server" {
				args = append(args, "--id", "1", "--peers", peers)
			} else {
				args = append(args, "--base-port", strings.Split(peers, ":")[1])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, binary, args...)
			cmd.Env = env()
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			out, err := cmd.CombinedOutput()
			cancel()
			code := -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != exitUsage || !strings.Contains(string(out), tc.want) {
				t.Errorf("paxosd %q (env %q): exit %d, want %d naming %s:\n%s", args, tc.env, code, exitUsage, tc.want, out)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Fatalf("paxosd %q created its data directory", args)
			}
		}
	}
}
