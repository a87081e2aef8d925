package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paxosd/paxosd/internal/testports"
)

// tool finds an external tool for the monitoring tests: on PATH or in Go's
// bin directory. Missing, the test skips, unless PAXOSD_REQUIRE_TOOLS=1
// (.ci/run sets it and installs them) makes that a failure.
func tool(t *testing.T, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if p := filepath.Join(dir, "bin", name); fileExists(p) {
				return p
			}
		}
	}
	msg := fmt.Sprintf("%s not found on PATH or in $(go env GOPATH)/bin; install it with: %s", name, install)
	if os.Getenv("PAXOSD_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg + " (PAXOSD_REQUIRE_TOOLS=1)")
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

const (
	installPromtool = "apt-get install prometheus (Debian; promtool comes with it)"
	installGrpcurl  = "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest"
	installProbe    = "go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.63"
)

// monitoredCluster starts three servers, each with --metrics-addr, node 1
// with --metrics-pprof too, and waits for a master. It returns the cluster
// and the metrics addresses.
func monitoredCluster(t *testing.T) (*cluster, []string) {
	t.Helper()
	needProcesses(t)
	ports := testports.Addrs(t, 9)
	c := &cluster{dir: t.TempDir(), addrs: ports[:3:3]}
	var parts []string
	for i, a := range c.addrs {
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, a))
	}
	c.peers, c.eps = strings.Join(parts, ","), strings.Join(c.addrs, ",")
	metrics := ports[6:9]
	for i := range c.addrs {
		args := []string{"server", "--id", fmt.Sprint(i + 1), "--peers", c.peers, "--gossip-listen", ports[3+i],
			"--data-dir", filepath.Join(c.dir, fmt.Sprintf("data%d", i+1)), "--metrics-addr", metrics[i]}
		if i == 0 {
			args = append(args, "--metrics-pprof")
		}
		c.procs = append(c.procs, startProc(t, filepath.Join(c.dir, fmt.Sprintf("node%d.log", i+1)), args...))
	}
	t.Cleanup(func() { c.stop(t) })
	if err := c.waitMaster(); err != nil {
		t.Fatalf("cluster did not start: %v\n%s", err, c.logs())
	}
	return c, metrics
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// waitHTTP waits until GET url answers code.
func waitHTTP(t *testing.T, url string, code int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, body := httpGet(t, url)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q, want %d within 20s", url, got, body, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var metricName = regexp.MustCompile(`(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]`)

// scrapeNames returns the metric names of a scrape (histograms' _bucket,
// _sum and _count series included as such).
func scrapeNames(body string) map[string]bool {
	out := map[string]bool{}
	for _, m := range metricName.FindAllStringSubmatch(body, -1) {
		out[m[1]] = true
	}
	return out
}

// TestMonitoring drives the monitoring endpoints of a real cluster:
// /metrics (checked by promtool), /healthz, /readyz, pprof on the metrics
// address, the shipped alert rules and dashboard, gRPC reflection through
// grpcurl and gRPC health through grpc-health-probe, ready and not.
func TestMonitoring(t *testing.T) {
	promtool := tool(t, "promtool", installPromtool)
	grpcurl := tool(t, "grpcurl", installGrpcurl)
	probe := tool(t, "grpc-health-probe", installProbe)
	c, metrics := monitoredCluster(t)
	appendOK(t, c.eps, "a", "b", "c")

	for i, m := range metrics {
		if code, body := httpGet(t, "http://"+m+"/healthz"); code != 200 {
			t.Errorf("node %d /healthz: %d %q", i+1, code, body)
		}
		t.Logf("node %d /readyz: %s", i+1, strings.TrimSpace(waitHTTP(t, "http://"+m+"/readyz", 200)))
	}
	if code, _ := httpGet(t, "http://"+metrics[0]+"/debug/pprof/"); code != 200 {
		t.Errorf("--metrics-pprof: /debug/pprof/ answered %d", code)
	}
	if code, _ := httpGet(t, "http://"+metrics[1]+"/debug/pprof/"); code != 404 {
		t.Errorf("without --metrics-pprof: /debug/pprof/ answered %d, want 404", code)
	}

	// The exposition: every node's passes promtool, and the master's holds
	// the metrics the docs list.
	names := map[string]bool{}
	for i, m := range metrics {
		_, body := httpGet(t, "http://"+m+"/metrics")
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		out, err := cmd.CombinedOutput()
		t.Logf("node %d: promtool check metrics: %v %s", i+1, err, out)
		if err != nil {
			t.Errorf("node %d: promtool check metrics failed: %v\n%s", i+1, err, out)
		}
		for n := range scrapeNames(body) {
			names[n] = true
		}
	}
	for _, want := range []string{
		"paxosd_append_duration_seconds_bucket", "paxosd_commit_duration_seconds_bucket", "paxosd_storage_sync_duration_seconds_bucket",
		"paxosd_instance_entries_bucket", "paxosd_instance_bytes_bucket", "paxosd_instances_in_flight", "paxosd_proposals_queued",
		"paxosd_is_master", "paxosd_master_id", "paxosd_master_changes_total", "paxosd_lease_remaining_seconds",
		"paxosd_applied_instances", "paxosd_chosen_unapplied_instances", "paxosd_first_index", "paxosd_next_index",
		"paxosd_disk_free_bytes", "paxosd_disk_used_bytes", "paxosd_disk_min_free_bytes", "paxosd_lag_instances",
		"paxosd_peer_lag_instances", "paxosd_peer_live", "paxosd_catchup_sent_bytes_total", "paxosd_dedup_hits_total",
		"paxosd_dedup_clients", "paxosd_peer_link_up", "paxosd_grpc_server_handled_total", "paxosd_grpc_server_handling_seconds_bucket",
		"paxosd_node_up", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !names[want] {
			t.Errorf("no node exposes %s", want)
		}
	}

	// The shipped rules pass promtool, and the dashboard queries only
	// metrics a scrape has.
	rules := filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml")
	out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput()
	t.Logf("promtool check rules: %v %s", err, out)
	if err != nil {
		t.Errorf("promtool check rules %s: %v\n%s", rules, err, out)
	}
	dashboard, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "paxosd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dashboard, &dash); err != nil {
		t.Fatalf("deploy/grafana/paxosd.json: %v", err)
	}
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range regexp.MustCompile(`paxosd_[a-zA-Z0-9_]+`).FindAllString(tg.Expr, -1) {
				used++
				if !names[n] {
					t.Errorf("dashboard panel %q queries %s, which no scrape has", p.Title, n)
				}
			}
		}
	}
	if used == 0 {
		t.Error("the dashboard queries no paxosd_ metric")
	}

	// Reflection: grpcurl lists, describes and calls with no proto files.
	grpc := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(grpcurl, append([]string{"-plaintext", "-max-time", "10"}, args...)...).CombinedOutput()
		t.Logf("$ grpcurl -plaintext %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("grpcurl %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if list := grpc(c.addrs[0], "list"); !slices.Contains(strings.Fields(list), "paxosd.v1.LogService") || !strings.Contains(list, "grpc.health.v1.Health") {
		t.Errorf("grpcurl list does not show paxosd.v1.LogService and grpc.health.v1.Health:\n%s", list)
	}
	if d := grpc(c.addrs[0], "describe", "paxosd.v1.LogService"); !strings.Contains(d, "rpc Append") {
		t.Errorf("grpcurl describe paxosd.v1.LogService shows no Append:\n%s", d)
	}
	if s := grpc(c.addrs[0], "paxosd.v1.LogService/Status"); !strings.Contains(s, `"masterId"`) {
		t.Errorf("grpcurl call of Status shows no masterId:\n%s", s)
	}

	// Health: SERVING while ready.
	health := func(addr, service string) (int, string) {
		t.Helper()
		out, err := exec.Command(probe, "-addr", addr, "-service", service, "-connect-timeout", "5s", "-rpc-timeout", "5s").CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("grpc-health-probe: %v", err)
		}
		t.Logf("$ grpc-health-probe -addr %s -service %q   (exit %d)\n%s", addr, service, code, out)
		return code, string(out)
	}
	// waitHealth probes until the answer is want (SERVING exits 0,
	// NOT_SERVING 4). The health service re-reads the node every 250 ms,
	// and a node that misses a lease renewal on a loaded machine knows no
	// master for a moment, so one answer may lag /readyz.
	waitHealth := func(svc string, wantCode int, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, out := health(c.addrs[0], svc)
			if code == wantCode && strings.Contains(out, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("grpc-health-probe -service %q: exit %d %q, want exit %d %s within 20s", svc, code, out, wantCode, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, svc := range []string{"paxosd.v1.LogService", ""} {
		waitHealth(svc, 0, "SERVING")
	}

	// Node 1 alone knows no master once the others stopped: /readyz 503
	// with the reason, health NOT_SERVING (grpc-health-probe exits 4) for
	// the API and still SERVING overall; /healthz still 200.
	c.procs[1].stop(t)
	c.procs[2].stop(t)
	body := waitHTTP(t, "http://"+metrics[0]+"/readyz", 503)
	t.Logf("node 1 alone, /readyz: 503 %s", strings.TrimSpace(body))
	if !strings.Contains(body, "no master") {
		t.Errorf("/readyz 503 does not say why: %q", body)
	}
	if code, _ := httpGet(t, "http://"+metrics[0]+"/healthz"); code != 200 {
		t.Errorf("/healthz of a live node without master: %d, want 200", code)
	}
	waitHealth("paxosd.v1.LogService", 4, "NOT_SERVING")
	if code, out := health(c.addrs[0], ""); code != 0 {
		t.Errorf("overall health of a running node: exit %d %q, want SERVING", code, out)
	}
}

// TestMetricsAddrInUse: a taken --metrics-addr fails the start before the
// node creates its data directory.
func TestMetricsAddrInUse(t *testing.T) {
	needProcesses(t)
	ports := testports.Addrs(t, 1)
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := filepath.Join(t.TempDir(), "data")
	r := run(t, "", "server", "--id", "1", "--peers", "1="+ports[0], "--data-dir", dir, "--metrics-addr", l.Addr().String())
	refused(t, "--metrics-addr in use", r, "--metrics-addr", "address already in use")
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the data directory was created though the start failed")
	}
	r = run(t, "", "server", "--id", "1", "--peers", "1="+ports[0], "--data-dir", dir, "--metrics-pprof")
	refused(t, "--metrics-pprof without --metrics-addr", r, "--metrics-pprof needs --metrics-addr")
}
