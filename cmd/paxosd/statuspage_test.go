package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	// Test-only: drives headless Chromium over the DevTools protocol. The
	// paxosd binary does not link it (TestLinksNoEtcdOrZooKeeper checks).
	"github.com/chromedp/chromedp"
)

const installChromium = "apt-get install chromium (Debian)"

// TestStatusPage loads the status page of a real 3-node cluster's master
// in headless Chromium and checks what a person would see: the master,
// the three members, the entries appended (those appended while the page
// is open arrive live, and HTML in a value shows as text), and the charts.
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
