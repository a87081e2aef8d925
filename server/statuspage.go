package server

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// StatusPage configures the live status page (StatusHandler), served on
// --metrics-addr at /: the cluster as this node sees it, append rate and
// latency over the last minutes, recent log events and the last entries.
type StatusPage struct {
	// Events, when set, is the ring of recent log records the page shows
	// (NewEventRing, wrapped around the node's log handler).
	Events *EventRing
	// Tail shows the last entries applied, their values included (cut to
	// maxTailValue bytes). The page has no authentication: see
	// docs/operations.md, "Status page", before turning it on with auth.
	Tail bool
}

// The page's bounds: what it keeps, and what each viewer may cost.
const (
	seriesLen          = 300                    // samples kept, one a second: the last 5 minutes
	sampleInterval     = time.Second            // how often the series and the viewers' status are refreshed
	tailLen            = 20                     // last entries kept and shown
	maxTailValue       = 256                    // bytes of an entry's value shown
	tailReadBytes      = 256 << 10              // bytes of entries one tail read may load
	tailInterval       = 250 * time.Millisecond // at most this often the tail reads the log
	maxStreamClients   = 16                     // live viewers at once; more get 503
	streamBuffer       = 64                     // frames queued per viewer before it is dropped
	eventBuffer        = 64                     // events queued per viewer before it is dropped
	streamWriteTimeout = 10 * time.Second       // a viewer's write may block this long before it is cut off
	streamRetryMillis  = 2000                   // the browser reconnects after this long
)

//go:embed statuspage
var statusAssets embed.FS

// Sample is one second of the series: entries applied (the whole cluster's
// appends, as this node applies them), and the appends this node took as
// master with their mean and estimated 99th percentile latency (nil with
// none that second).
type Sample struct {
	T           int64    `json:"t"` // Unix milliseconds
	EntriesPerS float64  `json:"entries_per_s"`
	AppendsPerS float64  `json:"appends_per_s"`
	MeanMs      *float64 `json:"latency_mean_ms"`
	P99Ms       *float64 `json:"latency_p99_ms"`
}

// TailEntry is an entry as the page shows it: its value as text when the
// bytes shown are valid UTF-8, else in base64 (as `paxosd read -w json`
// does), cut to maxTailValue bytes.
type TailEntry struct {
	Index       uint64 `json:"index"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
	Size        int    `json:"size"`
	Truncated   bool   `json:"truncated,omitempty"`
}

// pageNode is this node's own row: what `paxosd status` prints for it.
type pageNode struct {
	ID             uint64 `json:"id"`
	Address        string `json:"address"`
	Role           string `json:"role"`
	Master         uint64 `json:"master"`
	MasterAddress  string `json:"master_address"`
	Ballot         uint64 `json:"ballot"`
	ChosenInstance uint64 `json:"chosen_instance"` // the applied frontier, as status prints it
	Unapplied      int    `json:"chosen_unapplied"`
	FirstIndex     uint64 `json:"first_index"`
	LastIndex      int64  `json:"last_index"`
	Lag            uint64 `json:"lag"` // instances the most advanced live peer is ahead
	Behind         bool   `json:"behind"`
}

// pageMember is one member: what `paxosd members list` prints.
type pageMember struct {
	ID      uint64 `json:"id"`
	Address string `json:"address"`
	Role    string `json:"role"` // voter or follower
	Alive   bool   `json:"alive"`
	Live    bool   `json:"live"`
	Known   bool   `json:"known"`   // Applied is known
	Applied uint64 `json:"applied"` // its applied frontier, as last reported
	Lag     uint64 `json:"lag"`     // instances it is behind this node
	Master  bool   `json:"master"`
	Self    bool   `json:"self"`
}

// pageStatus is the cluster map, refreshed each second.
type pageStatus struct {
	Time        int64        `json:"time"`
	Error       string       `json:"error,omitempty"` // the node did not answer
	Node        pageNode     `json:"node"`
	Members     []pageMember `json:"members"`
	Pending     string       `json:"pending,omitempty"`
	PendingFrom uint64       `json:"pending_from,omitempty"`
	Gossip      bool         `json:"gossip"`
	Sample      *Sample      `json:"sample,omitempty"` // the newest
}

// pageSnapshot is /api/status, and the first frame of /api/stream.
type pageSnapshot struct {
	pageStatus
	Series   []Sample    `json:"series"`
	EventsOn bool        `json:"events_on"`
	Events   []Event     `json:"events"`
	TailOn   bool        `json:"tail_on"`
	Tail     []TailEntry `json:"tail"`
	Limits   struct {
		SeriesSeconds int `json:"series_seconds"`
		Tail          int `json:"tail"`
		TailValue     int `json:"tail_value_bytes"`
	} `json:"limits"`
}

// statusPage keeps what the page shows and serves it.
type statusPage struct {
	r   *Server
	cfg StatusPage
	hub broadcast[[]byte] // SSE frames for every viewer
	// wake tells the tail loop a viewer arrived.
	wake chan struct{}

	mu       sync.Mutex
	series   []Sample // the last seriesLen, oldest first
	lastAt   time.Time
	lastNext uint64
	lastLat  node.LatencySnapshot

	tailMu   sync.Mutex
	tail     []TailEntry // the last tailLen, oldest first
	tailNext uint64      // the tail has read the entries below
}

func newStatusPage(r *Server, cfg StatusPage) *statusPage {
	return &statusPage{r: r, cfg: cfg, hub: broadcast[[]byte]{max: maxStreamClients}, wake: make(chan struct{}, 1)}
}

// run samples the series each second and sends the viewers the status,
// until ctx ends.
func (p *statusPage) run(ctx context.Context) {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	p.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := p.sample(now)
			if p.hub.count() == 0 {
				continue
			}
			st := p.status(ctx)
			st.Sample = s
			p.hub.publish(frame("status", st))
		}
	}
}

// runTail sends the viewers the entries as they are applied, no more than
// every tailInterval, until ctx ends; it reads the log only while someone
// watches.
func (p *statusPage) runTail(ctx context.Context) {
	for {
		if p.hub.count() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		p.tailMu.Lock()
		want := p.tailNext + 1
		p.tailMu.Unlock()
		if _, err := p.r.node.WaitApplied(ctx, want); err != nil {
			return
		}
		p.refreshTail()
		select {
		case <-ctx.Done():
			return
		case <-time.After(tailInterval):
		}
	}
}

// refreshTail reads the entries applied since the last read and sends
// them to the viewers, whoever asked (the tail loop, or a snapshot: what
// it read must reach the viewers too).
func (p *statusPage) refreshTail() {
	if ents := p.readTail(); len(ents) > 0 && p.hub.count() > 0 {
		p.hub.publish(frame("entries", ents))
	}
}

// readTail reads the entries applied since the last read (the last
// tailLen at most), keeps them, and returns them.
func (p *statusPage) readTail() []TailEntry {
	first, next := p.r.node.Bounds()
	p.tailMu.Lock()
	defer p.tailMu.Unlock()
	if next <= p.tailNext {
		return nil
	}
	from := max(first, p.tailNext)
	if next > tailLen {
		from = max(from, next-tailLen)
	}
	ents, err := p.r.store.Entries(from, tailLen, tailReadBytes)
	if err != nil || len(ents) == 0 {
		return nil // trimmed meanwhile, or stopping: the next read tries again
	}
	out := make([]TailEntry, len(ents))
	for i, e := range ents {
		out[i] = tailEntry(e)
	}
	p.tail = append(p.tail, out...)
	p.tail = slices.Clone(p.tail[max(0, len(p.tail)-tailLen):])
	p.tailNext = ents[len(ents)-1].Index + 1
	return out
}

// tailEntry makes e safe to show: cut, and in base64 unless it is text.
func tailEntry(e core.Entry) TailEntry {
	te := TailEntry{Index: e.Index, Size: len(e.Data)}
	v := e.Data
	if len(v) > maxTailValue {
		cut := maxTailValue
		for cut > maxTailValue-utf8.UTFMax && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v, te.Truncated = v[:cut], true
	}
	if utf8.Valid(v) {
		te.Value = string(v)
	} else {
		te.ValueBase64 = base64.StdEncoding.EncodeToString(e.Data[:min(len(e.Data), maxTailValue)])
	}
	return te
}

// sample adds a point to the series: what happened since the last call.
func (p *statusPage) sample(now time.Time) *Sample {
	_, next := p.r.node.Bounds()
	lat := p.r.metrics.AppendLatency()
	p.mu.Lock()
	defer p.mu.Unlock()
	var s *Sample
	if dt := now.Sub(p.lastAt).Seconds(); !p.lastAt.IsZero() && dt > 0 {
		s = &Sample{T: now.UnixMilli()}
		if next >= p.lastNext {
			s.EntriesPerS = float64(next-p.lastNext) / dt
		}
		if n := lat.Count - p.lastLat.Count; lat.Count > p.lastLat.Count {
			s.AppendsPerS = float64(n) / dt
			mean := (lat.Sum - p.lastLat.Sum) / float64(n) * 1000
			p99 := quantile(0.99, p.lastLat, lat) * 1000
			s.MeanMs, s.P99Ms = &mean, &p99
		}
		p.series = append(p.series, *s)
		if len(p.series) > seriesLen {
			p.series = slices.Clone(p.series[len(p.series)-seriesLen:])
		}
	}
	p.lastAt, p.lastNext, p.lastLat = now, next, lat
	return s
}

// quantile estimates the q-quantile of the observations made between two
// snapshots of one histogram, as Prometheus's histogram_quantile does:
// linearly within the bucket that holds it; the highest finite bound when
// it lies beyond. NaN with no observations between them.
func quantile(q float64, before, after node.LatencySnapshot) float64 {
	n := after.Count - before.Count
	if n == 0 || len(after.Bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(n)
	lower, below := 0.0, uint64(0)
	for i, bound := range after.Bounds {
		c := after.Counts[i]
		if i < len(before.Counts) {
			c -= before.Counts[i]
		}
		if float64(c) >= rank {
			in := c - below
			if in == 0 {
				return bound
			}
			return lower + (bound-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = bound, c
	}
	return after.Bounds[len(after.Bounds)-1]
}

// status reads the cluster map: the node's own status, and its members as
// `paxosd members list` shows them (the same API calls).
func (p *statusPage) status(ctx context.Context) pageStatus {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := pageStatus{Time: time.Now().UnixMilli(), Members: []pageMember{}}
	st, err := p.r.node.Status(ctx)
	if err != nil {
		out.Error = fmt.Sprintf("node %d does not answer: %v", p.r.cfg.ID, err)
		return out
	}
	sr, err := p.r.api.Status(ctx, &paxosdpb.StatusRequest{})
	if err != nil {
		out.Error = fmt.Sprintf("status of node %d: %v", p.r.cfg.ID, err)
		return out
	}
	out.Node = pageNode{ID: sr.NodeId, Role: sr.Role, Master: sr.MasterId, MasterAddress: sr.MasterAddress, Ballot: sr.Ballot,
		ChosenInstance: sr.ChosenInstance, Unapplied: st.Unapplied, FirstIndex: sr.FirstIndex, LastIndex: int64(sr.EndIndex) - 1,
		Lag: node.Lag(st), Behind: st.Behind}
	for _, m := range sr.Members {
		if m.Id == sr.NodeId {
			out.Node.Address = m.Address
		}
	}
	ml, err := p.r.api.ListMembers(ctx, &paxosdpb.ListMembersRequest{})
	if err != nil {
		out.Error = fmt.Sprintf("members of node %d: %v", p.r.cfg.ID, err)
		return out
	}
	out.Gossip, out.Pending, out.PendingFrom = ml.Gossip, ml.Pending, ml.PendingFrom
	for _, m := range ml.Members {
		out.Members = append(out.Members, pageMember{ID: m.Id, Address: m.Address, Role: m.Role, Alive: m.Alive, Live: m.Live,
			Known: m.Known, Applied: m.Applied, Lag: m.Lag, Master: m.Id == ml.MasterId, Self: m.Id == ml.NodeId})
	}
	return out
}

// snapshot is everything the page shows, at once.
func (p *statusPage) snapshot(ctx context.Context) pageSnapshot {
	s := pageSnapshot{pageStatus: p.status(ctx), EventsOn: p.cfg.Events != nil, Events: []Event{}, TailOn: p.cfg.Tail, Tail: []TailEntry{}}
	s.Limits.SeriesSeconds, s.Limits.Tail, s.Limits.TailValue = seriesLen, tailLen, maxTailValue
	p.mu.Lock()
	s.Series = slices.Clone(p.series)
	p.mu.Unlock()
	if s.Series == nil {
		s.Series = []Sample{}
	}
	if len(s.Series) > 0 {
		s.Sample = &s.Series[len(s.Series)-1]
	}
	if p.cfg.Events != nil {
		s.Events = p.cfg.Events.Events()
	}
	if p.cfg.Tail {
		p.refreshTail()
		p.tailMu.Lock()
		s.Tail = append(s.Tail, p.tail...)
		p.tailMu.Unlock()
	}
	return s
}

// frame encodes one server-sent event.
func frame(event string, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", event, b)
}

// StatusHandler serves the status page: / (the page and its assets under
// /static/), /api/status (a JSON snapshot) and /api/stream (server-sent
// events: a snapshot, then "status" each second, "event" per log record,
// "entries" as they are applied, and "dropped" before the server cuts off
// a viewer that fell behind). Without Config.StatusPage it answers 404.
func (r *Server) StatusHandler() http.Handler {
	if r.page == nil {
		return http.NotFoundHandler()
	}
	mux := http.NewServeMux()
	static, _ := fs.Sub(statusAssets, "statuspage")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, req *http.Request) {
		secureHeaders(w)
		http.ServeFileFS(w, req, static, "index.html")
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		secureHeaders(w)
		http.FileServerFS(static).ServeHTTP(w, req)
	})))
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, req *http.Request) {
		secureHeaders(w)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(r.page.snapshot(req.Context()))
	})
	mux.HandleFunc("GET /api/stream", r.page.stream)
	return mux
}

// secureHeaders forbids the page any script or style but its own files,
// and any connection but to this address.
func secureHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// stream serves /api/stream to one viewer until it leaves, the node stops,
// or it falls behind: then it is told ("dropped") and cut off, and its
// browser reconnects. Publishing never waits for a viewer.
func (p *statusPage) stream(w http.ResponseWriter, req *http.Request) {
	rc := http.NewResponseController(w)
	sub, err := p.hub.subscribe(streamBuffer)
	if err != nil {
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("status page: %v: at most %d live viewers", err, maxStreamClients), http.StatusServiceUnavailable)
		return
	}
	defer sub.Close()
	var events <-chan Event // nil: none
	var evSub *Subscription[Event]
	if p.cfg.Events != nil {
		if evSub, err = p.cfg.Events.Subscribe(eventBuffer); err != nil {
			http.Error(w, fmt.Sprintf("status page: events: %v", err), http.StatusServiceUnavailable)
			return
		}
		defer evSub.Close()
		events = evSub.C
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	secureHeaders(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	first := append(fmt.Appendf(nil, "retry: %d\n\n", streamRetryMillis), frame("snapshot", p.snapshot(req.Context()))...)
	if !write(first) {
		return
	}
	for {
		var b []byte
		ok := true
		select {
		case <-req.Context().Done():
			return
		case <-p.r.done:
			return
		case b, ok = <-sub.C:
		case ev, open := <-events:
			if ok = open; ok {
				b = frame("event", ev)
			}
		}
		if !ok { // dropped: it fell behind
			write(frame("dropped", map[string]string{"reason": fmt.Sprintf(
				"this viewer fell more than %d updates behind; the server dropped it rather than wait (the page reconnects)", streamBuffer)}))
			return
		}
		if !write(b) {
			return
		}
	}
}
