package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/internal/testports"
	"github.com/paxosd/paxosd/node"
)

func TestQuantile(t *testing.T) {
	bounds := []float64{0.001, 0.002, 0.004}
	before := node.LatencySnapshot{Count: 10, Bounds: bounds, Counts: []uint64{10, 10, 10}}
	for _, tc := range []struct {
		q      float64
		counts []uint64 // cumulative, after
		count  uint64
		want   float64
	}{
		{0.5, []uint64{60, 110, 110}, 110, 0.001},     // 50 of 100 in the first bucket: its top
		{0.99, []uint64{60, 110, 110}, 110, 0.00198},  // 99th of 100: 49/50 through (0.001, 0.002]
		{0.5, []uint64{10, 10, 110}, 110, 0.003},      // all in (0.002, 0.004]: half way
		{0.99, []uint64{10, 10, 10}, 110, 0.004},      // all beyond the last bound: that bound
		{0.99, []uint64{10, 10, 10}, 10, math.NaN()},  // none
		{0.25, []uint64{35, 110, 110}, 110, 0.001},    // 25 of 25 in the first bucket
		{0.75, []uint64{10, 110, 110}, 110, 0.00175},  // 75 of 100 in (0.001, 0.002]
		{1, []uint64{20, 30, 110}, 110, 0.004},        // the top of the last bucket
		{0.05, []uint64{20, 30, 110}, 110, 0.0005},    // 5 of 10 in [0, 0.001]
		{0.1, []uint64{20, 20, 110}, 110, 0.001},      // on a bucket's top edge
		{0.5, []uint64{20, 20, 110}, 110, 0.00288889}, // 40 of 90 in (0.002, 0.004]
	} {
		got := quantile(tc.q, before, node.LatencySnapshot{Count: tc.count, Bounds: bounds, Counts: tc.counts})
		if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tc.want) > 1e-7 {
			t.Errorf("quantile(%v, %v) = %v, want %v", tc.q, tc.counts, got, tc.want)
		}
	}
}

func TestTailEntry(t *testing.T) {
	long := strings.Repeat("a", maxTailValue-1) + "é" + "tail" // é straddles the cut
	bin := append([]byte{0xff, 0xfe}, make([]byte, 2*maxTailValue)...)
	for _, tc := range []struct {
		data      []byte
		value     string
		b64       bool
		truncated bool
	}{
		{[]byte("<script>alert(1)</script>"), "<script>alert(1)</script>", false, false},
		{[]byte(long), strings.Repeat("a", maxTailValue-1), false, true},
		{bin, "", true, true},
		{[]byte{0xc3}, "", true, false},
	} {
		te := tailEntry(core.Entry{Index: 7, Data: tc.data})
		if te.Index != 7 || te.Size != len(tc.data) || te.Truncated != tc.truncated || te.Value != tc.value || (te.ValueBase64 != "") != tc.b64 {
			t.Errorf("tailEntry(%.20q): %+v", tc.data, te)
		}
		if len(te.Value) > maxTailValue || !utf8.ValidString(te.Value) || len(te.ValueBase64) > (maxTailValue+2)/3*4 {
			t.Errorf("tailEntry(%.20q) keeps %d bytes of text, %d of base64", tc.data, len(te.Value), len(te.ValueBase64))
		}
	}
	// HTML in a value leaves the server as escaped JSON text.
	if b := frame("entries", []TailEntry{tailEntry(core.Entry{Data: []byte("<b>")})}); strings.Contains(string(b), "<b>") {
		t.Errorf("frame carries raw HTML: %s", b)
	}
}

// startPageNode starts a one-node cluster with the status page (tail on, and
// ring as its events) and serves its handler; it returns the server, the
// page's base URL and a client.
func startPageNode(t *testing.T, ring *EventRing) (*Server, string, *client.Client) {
	t.Helper()
	addr := testports.Addrs(t, 1)[0]
	s, err := Start(context.Background(), Config{ID: 1, Peers: map[uint64]string{1: addr}, DataDir: t.TempDir() + "/node1", Cluster: "test",
		Metrics: NewRegistry(), StatusPage: &StatusPage{Events: ring, Tail: true}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.StatusHandler())
	t.Cleanup(func() {
		s.Stop()
		hs.Close()
	})
	cl, err := client.New([]string{addr}, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return s, hs.URL, cl
}

// sseEvent is one server-sent event as a viewer reads it.
type sseEvent struct{ name, data string }

// readEvents reads server-sent events from r onto the returned channel
// until r ends.
func readEvents(r io.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "" && ev.name != "":
				out <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	return out
}

// next returns the next event named name from evs, skipping others.
func next(t *testing.T, evs <-chan sseEvent, name string, ok func(string) bool) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev, open := <-evs:
			if !open {
				t.Fatalf("stream ended before a %q event", name)
			}
			if ev.name == name && (ok == nil || ok(ev.data)) {
				return ev.data
			}
		case <-deadline:
			t.Fatalf("no %q event within 30s", name)
		}
	}
}

// The stream starts with a snapshot of the cluster, then brings the
// status each second, the records logged, and the entries appended; the
// JSON snapshot holds the same.
func TestStatusStream(t *testing.T) {
	ring := NewEventRing(nil, 50)
	s, url, cl := startPageNode(t, ring)
	// An empty log is an empty tail, not null.
	r0, err := http.Get(url + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	b0, _ := io.ReadAll(r0.Body)
	r0.Body.Close()
	if !strings.Contains(string(b0), `"tail":[]`) || !strings.Contains(string(b0), `"events":[]`) || !strings.Contains(string(b0), `"series":[`) {
		t.Errorf("/api/status of an empty log: %s", b0)
	}
	if _, err := cl.Append(context.Background(), []byte("first")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url + "/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	evs := readEvents(resp.Body)
	var snap pageSnapshot
	if err := json.Unmarshal([]byte(next(t, evs, "snapshot", nil)), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Members) != 1 || snap.Members[0].ID != 1 || snap.Members[0].Role != "voter" || !snap.Members[0].Master || !snap.TailOn || !snap.EventsOn {
		t.Errorf("snapshot: %+v", snap)
	}
	if snap.Node.Master != 1 || snap.Node.Role != "master" || snap.Node.Address != s.Addr() {
		t.Errorf("snapshot node: %+v", snap.Node)
	}
	if len(snap.Tail) != 1 || snap.Tail[0].Value != "first" {
		t.Errorf("snapshot tail: %+v", snap.Tail)
	}

	slog.New(ring).Warn("disk is slow", "node", 1)
	next(t, evs, "event", func(d string) bool {
		return strings.Contains(d, `"msg":"disk is slow"`) && strings.Contains(d, `"level":"WARN"`)
	})
	if _, err := cl.Append(context.Background(), []byte("second"), []byte("<i>third</i>")); err != nil {
		t.Fatal(err)
	}
	next(t, evs, "entries", func(d string) bool { return strings.Contains(d, `"value":"\u003ci\u003ethird\u003c/i\u003e"`) })
	st := next(t, evs, "status", func(d string) bool { return strings.Contains(d, `"last_index":2`) })
	if !strings.Contains(st, `"entries_per_s"`) {
		t.Errorf("status frame without a sample: %s", st)
	}

	// /api/status holds the same, and / serves the page with its policy.
	r2, err := http.Get(url + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	var snap2 pageSnapshot
	err = json.NewDecoder(r2.Body).Decode(&snap2)
	r2.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap2.Tail) != 3 || snap2.Tail[2].Value != "<i>third</i>" || len(snap2.Events) != 1 || snap2.Node.LastIndex != 2 || len(snap2.Series) == 0 {
		t.Errorf("/api/status: tail %+v events %+v node %+v series %d", snap2.Tail, snap2.Events, snap2.Node, len(snap2.Series))
	}
	for path, want := range map[string]string{"/": "<title>paxosd status</title>", "/static/app.js": "EventSource", "/static/style.css": "font"} {
		r, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || !strings.Contains(string(b), want) || !strings.Contains(r.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: %d, CSP %q, body without %q", path, r.StatusCode, r.Header.Get("Content-Security-Policy"), want)
		}
	}
	if r, err := http.Get(url + "/nothing"); err != nil || r.StatusCode != 404 {
		t.Errorf("GET /nothing: %v %v, want 404", r.StatusCode, err)
	} else {
		r.Body.Close()
	}
}

// A viewer that stops reading is dropped once its queue is full, and told
// so when it reads again; the page's publishing never waits for it, and a
// viewer that reads gets every update meanwhile. Viewers are bounded.
func TestStatusStreamDropsSlowViewer(t *testing.T) {
	s, url, _ := startPageNode(t, nil)
	hub := &s.page.hub
	resp, err := http.Get(url + "/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fast := readEvents(resp.Body)
	next(t, fast, "snapshot", nil)

	// The slow viewer: a raw connection that asks and never reads.
	host := strings.TrimPrefix(url, "http://")
	slow, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET /api/stream HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	for deadline := time.Now().Add(30 * time.Second); hub.count() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d viewers subscribed, want 2", hub.count())
		}
	}

	// Updates of 64 KiB, each sent once the reading viewer has the one
	// before: the slow one's socket buffers and queue fill up.
	pad := strings.Repeat("x", 64<<10)
	dropped := false
	for i := 0; i < 4000 && !dropped; i++ {
		published := make(chan struct{})
		go func() {
			hub.publish(frame("test", map[string]any{"i": i, "pad": pad}))
			close(published)
		}()
		select {
		case <-published:
		case <-time.After(10 * time.Second):
			t.Fatalf("publishing update %d blocked for 10s on a viewer that does not read", i)
		}
		want := fmt.Sprintf(`{"i":%d,`, i)
		next(t, fast, "test", func(d string) bool { return strings.HasPrefix(d, want) })
		dropped = hub.count() == 1
	}
	if !dropped {
		t.Fatal("the viewer that does not read was never dropped")
	}

	// The slow viewer, reading at last, finds out.
	slow.SetReadDeadline(time.Now().Add(30 * time.Second))
	tail := make([]byte, 64<<10)
	var seen strings.Builder
	for !strings.Contains(seen.String(), "event: dropped") {
		n, err := slow.Read(tail)
		if err != nil {
			t.Fatalf("the dropped viewer read no \"dropped\" event: %v", err)
		}
		seen.Write(tail[:n])
		if s := seen.String(); len(s) > 1<<10 {
			seen.Reset()
			seen.WriteString(s[len(s)-1<<10:])
		}
	}

	// At most maxStreamClients viewers.
	var bodies []io.Closer
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	for range maxStreamClients - 1 {
		r, err := http.Get(url + "/api/stream")
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("viewer: %v %v", r, err)
		}
		bodies = append(bodies, r.Body)
	}
	r, err := http.Get(url + "/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("viewer %d: %d, want 503", maxStreamClients+1, r.StatusCode)
	}
}
