package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	// Test-only: drives headless Chromium over the DevTools protocol. The
	// paxosd binary does not link it (TestLinksNoEtcdOrZooKeeper checks).
	"github.com/chromedp/chromedp"

	"github.com/paxosd/paxosd/internal/testports"
)

const installChromium = "apt-get install chromium (Debian)"

// TestStatusPage loads the status page of a real 3-node cluster's master
// in headless Chromium and checks what a person would see: the master,
// the three members, the node's event on becoming master (the server's
// logger feeds the page's event ring), the entries appended (those appended
// while the page is open arrive live, and HTML in a value shows as text),
// and the charts.
// It saves a screenshot as statuspage.png in $PAXOSD_TEST_ARTIFACTS, or
// in the test's temporary directory, and logs the path.
func TestStatusPage(t *testing.T) {
	chromium := tool(t, "chromium", installChromium)
	c, metrics := monitoredCluster(t)
	appendOK(t, c.eps, "before the page opened", "<b>not bold</b>")
	var master uint64
	for _, s := range c.status(t) {
		if *s.Role == "master" {
			master = *s.ID
		}
	}
	if master == 0 {
		t.Fatal("no node says it is master")
	}
	url := "http://" + metrics[master-1] + "/"

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1280, 1100), chromedp.Flag("disable-gpu", true))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium: load %s: %v", url, err)
	}
	// wait polls a JavaScript predicate in the page for 30 s.
	wait := func(what, predicate string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("the page does not show %s within 30s: %v\npage text:\n%s", what, err, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(`+strconv.Quote(sel)+`).textContent`))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	wait("the live stream connected", `document.getElementById("conn").textContent === "live"`)
	wait("the master", fmt.Sprintf(`document.getElementById("master").textContent.startsWith("node %d (")`, master))
	wait("three members", `document.querySelectorAll("#members tbody tr").length === 3`)
	for i, a := range c.addrs {
		row := fmt.Sprintf(`#members tbody tr[data-id="%d"]`, i+1)
		wait(fmt.Sprintf("member %d at %s, a voter", i+1, a), fmt.Sprintf(`(r => r && r.cells[1].textContent === %q && r.cells[2].textContent === "voter")(document.querySelector(%q))`, a, row))
	}
	wait("the master's row marked", fmt.Sprintf(`document.querySelector("#members tr.master").dataset.id === "%d"`, master))
	wait("the node's event on becoming master", `[...document.querySelectorAll("#events li .msg")].some(m => m.textContent.includes("master elected"))`)
	wait("the entries appended before", `document.querySelector("#tail").textContent.includes("before the page opened")`)

	// Appended while the page is open: they arrive over the stream.
	appendOK(t, c.eps, "live one", "live two", "live three")
	wait("the entries appended while open", `[...document.querySelectorAll("#tail tbody tr")].some(r => r.dataset.index === "4" && r.cells[1].textContent === "live three")`)
	if got := text("#tail"); !strings.Contains(got, "<b>not bold</b>") {
		t.Errorf("the value with HTML is not shown as text; tail: %q", got)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#tail b, #tail script").length`)); err != nil || n != 0 {
		t.Errorf("a value became HTML in the page: %d elements, %v", n, err)
	}
	wait("the append rate charted", `document.querySelector("#chart-rate path.rate").getAttribute("d").includes("L")`)
	wait("the append latency charted", `document.querySelectorAll("#chart-latency circle.mean").length > 0`)
	t.Logf("page: master %q, ballot %q, chosen instance %q", text("#master"), text("#ballot"), text("#chosen"))

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("PAXOSD_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "statuspage.png")
	if err := os.WriteFile(p, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of node %d's status page: %s (set PAXOSD_TEST_ARTIFACTS=DIR to keep it)", master, p)
}

// TestStatusPageFlags: the log tail is off by default with
// --auth-tokens-file (the metrics port has no authentication) and on
// again with --status-page-tail; --status-page=false serves no page, and
// the metrics still.
func TestStatusPageFlags(t *testing.T) {
	needProcesses(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("s3cr3t admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		flags      []string
		page, tail bool
	}{
		{nil, true, true},
		{[]string{"--auth-tokens-file", tokens}, true, false},
		{[]string{"--auth-tokens-file", tokens, "--status-page-tail"}, true, true},
		{[]string{"--status-page-tail=false"}, true, false},
		{[]string{"--status-page=false"}, false, false},
	} {
		ports := testports.Addrs(t, 2)
		args := append([]string{"server", "--id", "1", "--peers", "1=" + ports[0], "--gossip-listen", "off",
			"--data-dir", filepath.Join(dir, fmt.Sprint("data", i)), "--metrics-addr", ports[1]}, tc.flags...)
		p := startProc(t, filepath.Join(dir, fmt.Sprintf("node%d.log", i)), args...)
		t.Cleanup(func() { p.stop(t) }) // also when the test fails early
		base := "http://" + ports[1]
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if r, err := http.Get(base + "/healthz"); err == nil {
				r.Body.Close()
				break
			}
			if p.exited() || time.Now().After(deadline) {
				t.Fatalf("%v: no /healthz within 20s:\n%s", tc.flags, p.output())
			}
		}
		if code, _ := httpGet(t, base+"/metrics"); code != 200 {
			t.Errorf("%v: /metrics answered %d", tc.flags, code)
		}
		code, body := httpGet(t, base+"/api/status")
		switch {
		case !tc.page && code != 404:
			t.Errorf("%v: /api/status answered %d, want 404", tc.flags, code)
		case tc.page && code != 200:
			t.Errorf("%v: /api/status answered %d %q", tc.flags, code, body)
		case tc.page && !strings.Contains(body, fmt.Sprintf(`"tail_on":%v`, tc.tail)):
			t.Errorf("%v: /api/status does not say tail_on %v: %s", tc.flags, tc.tail, body)
		}
		if code, _ := httpGet(t, base+"/"); (code == 200) != tc.page {
			t.Errorf("%v: / answered %d", tc.flags, code)
		}
		p.stop(t)
	}
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--status-page-tail"}, "--status-page-tail needs --metrics-addr"},
		{[]string{"--metrics-addr", "127.0.0.1:0", "--status-page=false", "--status-page-tail"}, "--status-page-tail needs the status page"},
	} {
		r := run(t, "", append([]string{"server", "--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir", filepath.Join(dir, "refused")}, tc.flags...)...)
		refused(t, fmt.Sprint(tc.flags), r, tc.want)
	}
}
