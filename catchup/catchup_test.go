package catchup_test

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/catchup"
	"github.com/paxosd/paxosd/core"
)

func config() catchup.Config {
	return catchup.Config{Peers: []uint64{2, 3, 4}, Interval: 10, Timeout: 8, Grace: 3, Slack: 5, Batch: 50, Live: 1000, Stall: 1000}
}

func probes() []core.Message {
	var out []core.Message
	for _, p := range config().Peers {
		out = append(out, core.Message{Type: core.MsgProbe, To: p})
	}
	return out
}

func req(peer, from uint64) []core.Message {
	return []core.Message{{Type: core.MsgLearnReq, To: peer, Instance: from, End: from + config().Batch}}
}

// unnumbered returns msgs with the learn requests' numbers (After) cleared,
// to compare with req; the tests answer requests by number.
func unnumbered(msgs []core.Message) []core.Message {
	for k := range msgs {
		if msgs[k].Type == core.MsgLearnReq {
			msgs[k].After = 0
		}
	}
	return msgs
}

func TestProbeInterval(t *testing.T) {
	c := catchup.New(config())
	for now := uint64(1); now <= 35; now++ {
		var want []core.Message
		if now%10 == 1 { // at once, then every Interval
			want = probes()
		}
		if got := c.Tick(now, 0); !reflect.DeepEqual(got, want) {
			t.Errorf("Tick(%d) = %v, want %v", now, got, want)
		}
	}
}

// op is one step of a scenario: observe a peer's frontier, get a response,
// or call Maybe/Tick at (now, applied) and expect exactly want.
type op struct {
	kind            string // "observe", "response", "maybe", "tick"
	peer, committed uint64 // observe, response
	now, applied    uint64 // maybe, tick
	want            []core.Message
	outstanding     bool // after the step
}

func observe(peer, committed uint64, outstanding bool) op {
	return op{kind: "observe", peer: peer, committed: committed, outstanding: outstanding}
}

// response: peer answers the learn request numbered seq (the scenario's
// first request is 1), with values.
func response(peer, seq uint64, outstanding bool) op {
	return op{kind: "response", peer: peer, committed: seq, outstanding: outstanding}
}
func maybe(now, applied uint64, want []core.Message, outstanding bool) op {
	return op{kind: "maybe", now: now, applied: applied, want: want, outstanding: outstanding}
}
func tick(now, applied uint64, want []core.Message, outstanding bool) op {
	return op{kind: "tick", now: now, applied: applied, want: want, outstanding: outstanding}
}

func TestRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []op
	}{
		{"large lag: at once, from the most advanced peer", []op{
			observe(2, 10, false), observe(3, 30, false), observe(4, 20, false),
			maybe(1, 0, req(3, 0), true),
			maybe(2, 0, nil, true), // one request at a time
			observe(4, 90, true),
			maybe(3, 0, nil, true),
		}},
		{"the latest report counts: a peer that crashed may have gone back", []op{
			observe(2, 30, false), observe(2, 3, false),
			maybe(1, 0, nil, false), // lag 3, within Slack: waits Grace
		}},
		{"only peers count", []op{
			observe(9, 30, false), maybe(1, 0, nil, false),
		}},
		{"lag above Slack is urgent", []op{
			observe(2, 6, false), maybe(1, 0, req(2, 0), true),
		}},
		{"small lag waits Grace", []op{
			observe(2, 5, false), // lag == Slack
			maybe(1, 0, nil, false), maybe(2, 0, nil, false), maybe(3, 0, nil, false),
			maybe(4, 0, req(2, 0), true),
		}},
		{"catching up resets the grace period", []op{
			observe(2, 3, false),
			maybe(1, 0, nil, false),
			maybe(2, 3, nil, false), // caught up by normal commits
			observe(2, 6, false),
			maybe(3, 3, nil, false), maybe(5, 3, nil, false),
			maybe(6, 3, req(2, 3), true),
		}},
		{"not behind", []op{
			observe(2, 5, false), maybe(1, 5, nil, false), maybe(50, 7, nil, false),
		}},
		{"response from the wrong peer keeps the request", []op{
			observe(2, 30, false), maybe(1, 0, req(2, 0), true),
			response(3, 1, true), maybe(2, 0, nil, true),
			response(2, 1, false), maybe(3, 10, req(2, 10), true),
		}},
		{"only the answer to the outstanding request ends it", []op{
			observe(2, 30, false), maybe(1, 0, req(2, 0), true), // 1
			response(2, 1, false), maybe(2, 0, req(2, 0), true), // 2: the same request again
			response(2, 1, true),                                  // a duplicate of the first answer
			response(2, 2, false), maybe(3, 10, req(2, 10), true), // 3
			response(2, 2, true), response(2, 1, true), // late duplicates
			maybe(4, 10, nil, true), response(2, 3, false),
		}},
		{"timeout moves to another peer, which is skipped for a while", []op{
			observe(2, 30, false), observe(3, 20, false),
			maybe(1, 0, req(2, 0), true),
			tick(8, 0, probes(), true),    // the first tick probes; 7 ticks: not yet timed out
			tick(9, 0, req(3, 0), true),   // 8 ticks: 2 failed until 17, ask 3
			tick(10, 0, nil, true),        // 3 still outstanding
			response(3, 2, false),         //
			maybe(11, 5, req(3, 5), true), // 2 still skipped
			response(3, 3, false),
			maybe(17, 20, req(2, 20), true), // 2 usable again: the only one ahead
		}},
		{"the only advanced peer failed: wait", []op{
			observe(2, 30, false), observe(3, 1, false),
			maybe(1, 1, req(2, 1), true),
			tick(9, 1, probes(), false), // 2 timed out (the first tick also probes); 3 is not ahead
			maybe(16, 1, nil, false),
			maybe(17, 1, req(2, 1), true),
		}},
	} {
		c := catchup.New(config())
		for j, o := range tc.ops {
			var got []core.Message
			switch o.kind {
			case "observe":
				c.Observe(0, o.peer, o.committed)
			case "response":
				c.OnResponse(0, o.peer, o.committed, false)
			case "maybe":
				got = unnumbered(c.Maybe(o.now, o.applied))
			case "tick":
				got = unnumbered(c.Tick(o.now, o.applied))
			}
			if !reflect.DeepEqual(got, o.want) || c.Outstanding() != o.outstanding {
				t.Errorf("%s: op %d (%s): got %v outstanding %v, want %v %v", tc.name, j, o.kind, got, c.Outstanding(), o.want, o.outstanding)
			}
		}
	}
}

func TestBestAndBehind(t *testing.T) {
	c := catchup.New(config())
	if p, k := c.Best(0); p != 0 || k != 0 || c.Behind(0, 0) {
		t.Fatalf("empty: Best = %d,%d Behind=%v", p, k, c.Behind(0, 0))
	}
	c.Observe(0, 3, 12)
	c.Observe(0, 4, 12) // a tie keeps the first peer in Peers order
	c.Observe(0, 2, 7)
	c.Observe(0, 9, 40) // not a peer (a follower, say): ignored
	for _, tc := range []struct {
		applied    uint64
		wantBehind bool
	}{{0, true}, {11, true}, {12, false}, {40, false}} {
		if got := c.Behind(0, tc.applied); got != tc.wantBehind {
			t.Errorf("Behind(%d) = %v, want %v", tc.applied, got, tc.wantBehind)
		}
	}
	if p, k := c.Best(0); p != 3 || k != 12 {
		t.Errorf("Best = %d,%d, want 3,12", p, k)
	}
}

// Requests spare the master while another peer has what is missing, and go
// to the master for the rest, or when the other peer stops answering.
func TestSparesTheMaster(t *testing.T) {
	c := catchup.New(config())
	c.SetMaster(0, 3)
	c.Observe(0, 3, 100)
	c.Observe(0, 4, 90)
	c.Observe(0, 2, 20)
	if got := unnumbered(c.Maybe(1, 0)); !reflect.DeepEqual(got, req(4, 0)) {
		t.Fatalf("behind both: got %v, want a request to peer 4 (the most advanced non-master)", got)
	}
	c.OnResponse(1, 4, 1, false)
	if got := unnumbered(c.Maybe(2, 90)); !reflect.DeepEqual(got, req(3, 90)) {
		t.Fatalf("only the master is ahead: got %v, want a request to it", got)
	}
	c.OnResponse(2, 3, 2, false)
	if got := unnumbered(c.Maybe(3, 50)); !reflect.DeepEqual(got, req(4, 50)) {
		t.Fatalf("got %v, want peer 4 again", got)
	}
	// Peer 4 does not answer: after the timeout the master serves.
	got := unnumbered(c.Tick(3+config().Timeout, 50)) // probes, then the new request
	if len(got) == 0 || !reflect.DeepEqual(got[len(got)-1:], req(3, 50)) {
		t.Fatalf("peer 4 failed: got %v, want a request to the master", got)
	}
	// A master that is not the most advanced is not special.
	c.OnResponse(3+config().Timeout, 3, 4, false)
	c.SetMaster(0, 2)
	if got := unnumbered(c.Maybe(4+2*config().Timeout, 50)); !reflect.DeepEqual(got, req(3, 50)) {
		t.Fatalf("got %v, want the most advanced peer 3", got)
	}
}

func snapReq(peer, base, index, after uint64) []core.Message {
	return []core.Message{{Type: core.MsgSnapReq, To: peer, Instance: base, End: index, After: after}}
}

// chunk is peer's answer to the request (base, index, after) asked of it.
func chunk(peer, base, index, after uint64, c core.SnapChunk) core.Message {
	return core.Message{Type: core.MsgSnapResp, From: peer, Instance: base, End: index, After: after, Snap: &c}
}

func ents(from, to uint64) []core.Entry {
	var out []core.Entry
	for i := from; i < to; i++ {
		out = append(out, core.Entry{Index: i, Data: []byte{byte(i)}})
	}
	return out
}

func rows(ids ...uint64) []core.DedupEntry {
	var out []core.DedupEntry
	for _, id := range ids {
		out = append(out, core.DedupEntry{ClientID: id, Recent: []core.SeqIndexes{{Seq: id}}})
	}
	return out
}

// A base is fetched in order, entries then rows, each chunk answering the
// request outstanding; only a whole base is installed, with every row.
func TestFetchBase(t *testing.T) {
	c := catchup.New(config())
	c.Observe(0, 2, 100)
	st := core.ApplyState{Applied: 90, NextIndex: 40, FirstIndex: 20}
	const applied, next = 10, 5 // the node's own: its log ends at 5, below the base's first index
	c.NeedBase(2, next)
	if got := c.Maybe(1, applied); !reflect.DeepEqual(got, snapReq(2, 0, 5, 0)) {
		t.Fatalf("first request %v", got)
	}
	// Entries [20,30): the base starts above the node's log.
	stage, inst := c.OnChunk(chunk(2, 0, 5, 0, core.SnapChunk{State: st, Entries: ents(20, 30)}), applied, next)
	if !reflect.DeepEqual(stage, ents(20, 30)) || inst != nil {
		t.Fatalf("first chunk: stage %v install %v", stage, inst)
	}
	// A duplicate of it, or an answer to another request, changes nothing.
	if stage, inst := c.OnChunk(chunk(2, 0, 5, 0, core.SnapChunk{State: st, Entries: ents(20, 30)}), applied, next); stage != nil || inst != nil {
		t.Fatalf("duplicate chunk taken: %v %v", stage, inst)
	}
	if got := c.Maybe(2, applied); !reflect.DeepEqual(got, snapReq(2, 90, 30, 0)) {
		t.Fatalf("second request %v", got)
	}
	// Entries that do not start where asked are refused.
	if stage, _ := c.OnChunk(chunk(2, 90, 30, 0, core.SnapChunk{State: st, Entries: ents(31, 40)}), applied, next); stage != nil {
		t.Fatalf("a chunk with a hole was staged: %v", stage)
	}
	if got := c.Maybe(3, applied); !reflect.DeepEqual(got, snapReq(2, 90, 30, 0)) {
		t.Fatalf("request after a bad chunk %v", got)
	}
	stage, _ = c.OnChunk(chunk(2, 90, 30, 0, core.SnapChunk{State: st, Entries: ents(30, 40)}), applied, next)
	if !reflect.DeepEqual(stage, ents(30, 40)) {
		t.Fatalf("third chunk: %v", stage)
	}
	// Rows in two chunks.
	if got := c.Maybe(201, applied); !reflect.DeepEqual(got, snapReq(2, 90, 40, 0)) {
		t.Fatalf("first rows request %v", got)
	}
	if _, inst := c.OnChunk(chunk(2, 90, 40, 0, core.SnapChunk{State: st, Dedup: rows(3, 7)}), applied, next); inst != nil {
		t.Fatal("installed before the last row")
	}
	if got := c.Maybe(202, applied); !reflect.DeepEqual(got, snapReq(2, 90, 40, 7)) {
		t.Fatalf("second rows request %v", got)
	}
	_, inst = c.OnChunk(chunk(2, 90, 40, 7, core.SnapChunk{State: st, Dedup: rows(9), Done: true}), applied, next)
	want := &core.Snapshot{State: st, Dedup: rows(3, 7, 9)}
	if !reflect.DeepEqual(inst, want) {
		t.Fatalf("installed %+v, want %+v", inst, want)
	}
	if c.Fetching() {
		t.Fatal("still fetching after the install")
	}
}

// A base that changes mid-fetch restarts its rows; if entries below the old
// base's first index were skipped, the entries restart from the node's own
// log's end, since the new base may need them.
func TestFetchBaseChanges(t *testing.T) {
	c := catchup.New(config())
	c.Observe(0, 2, 100)
	c.Observe(0, 3, 100)
	old := core.ApplyState{Applied: 90, NextIndex: 40, FirstIndex: 20}
	const applied, next = 10, 5
	c.NeedBase(2, next)
	c.Maybe(1, applied)
	c.OnChunk(chunk(2, 0, 5, 0, core.SnapChunk{State: old, Entries: ents(20, 40)}), applied, next)
	c.Maybe(2, applied)
	c.OnChunk(chunk(2, 90, 40, 0, core.SnapChunk{State: old, Dedup: rows(3)}), applied, next)
	// Peer 2 stops answering; peer 3 has an older base, from index 10.
	c.Maybe(3, applied)
	if got := unnumbered(c.Tick(100, applied)); !reflect.DeepEqual(got, append(probes(), req(3, applied)...)) {
		t.Fatalf("after the timeout: %v, want probes and a learn request to peer 3", got)
	}
	c.OnResponse(100, 3, 1, false) // it answers that its values are below its base
	c.NeedBase(3, next)
	if got := c.Maybe(200, applied); !reflect.DeepEqual(got, snapReq(3, 90, 40, 3)) {
		t.Fatalf("request to the other peer %v", got)
	}
	older := core.ApplyState{Applied: 60, NextIndex: 30, FirstIndex: 10}
	if stage, inst := c.OnChunk(chunk(3, 90, 40, 3, core.SnapChunk{State: older, Dedup: rows(1), Done: true}), applied, next); stage != nil || inst != nil {
		t.Fatalf("a chunk of another base taken after entries were skipped: %v %v", stage, inst)
	}
	if got := c.Maybe(201, applied); !reflect.DeepEqual(got, snapReq(3, 60, 5, 0)) {
		t.Fatalf("the fetch does not start over from the log's end: %v", got)
	}
	stage, _ := c.OnChunk(chunk(3, 60, 5, 0, core.SnapChunk{State: older, Entries: ents(10, 30)}), applied, next)
	if !reflect.DeepEqual(stage, ents(10, 30)) {
		t.Fatalf("entries of the older base: %v", stage)
	}
	c.Maybe(202, applied)
	_, inst := c.OnChunk(chunk(3, 60, 30, 0, core.SnapChunk{State: older, Dedup: rows(1), Done: true}), applied, next)
	if want := (&core.Snapshot{State: older, Dedup: rows(1)}); !reflect.DeepEqual(inst, want) {
		t.Fatalf("installed %+v, want %+v", inst, want)
	}
}

// A base that is not ahead of the node ends the fetch: it learns normally.
func TestFetchBaseNotAhead(t *testing.T) {
	c := catchup.New(config())
	c.Observe(0, 2, 100)
	c.NeedBase(2, 50)
	c.Maybe(1, 70)
	st := core.ApplyState{Applied: 60, NextIndex: 40, FirstIndex: 20}
	if stage, inst := c.OnChunk(chunk(2, 0, 50, 0, core.SnapChunk{State: st, Done: true}), 70, 50); stage != nil || inst != nil || c.Fetching() {
		t.Fatalf("a base behind the node: stage %v install %v fetching %v", stage, inst, c.Fetching())
	}
	if got := unnumbered(c.Maybe(2, 70)); !reflect.DeepEqual(got, req(2, 70)) {
		t.Fatalf("after: %v, want a learn request", got)
	}
}

// A peer that stopped answering does not keep the node out of elections: it
// counts toward "behind" only while heard from within Live. With the planted
// bug (CountDeadPeers) its last report counts forever, as it once did, and a
// cluster whose master died after announcing an instance nobody else learned
// never elected another.
func TestDeadPeerStopsCounting(t *testing.T) {
	for _, planted := range []bool{false, true} {
		cfg := config()
		cfg.Live, cfg.Stall, cfg.CountDeadPeers = 30, 1000, planted
		c := catchup.New(cfg)
		c.Observe(100, 2, 50) // the master said it applied 50, then died
		c.Observe(100, 3, 40) // a live peer, at our frontier
		for now := uint64(100); now <= 200; now += 10 {
			c.Tick(now, 40)
			if now%10 == 0 {
				c.Observe(now, 3, 40) // 3 keeps answering probes
			}
			want := now <= 130 || planted
			if got := c.Behind(now, 40); got != want {
				t.Fatalf("planted=%v: Behind at %d = %v, want %v", planted, now, got, want)
			}
		}
		if p, _ := c.Best(200); p == 2 && !planted {
			t.Fatalf("Best asks dead peer %d", p)
		}
	}
}

// A node behind a live peer that never gives it what it lacks stops
// counting itself behind after Stall ticks without applying anything; any
// progress starts the clock again.
func TestStallEndsBehind(t *testing.T) {
	cfg := config()
	cfg.Live, cfg.Stall = 1000, 50
	c := catchup.New(cfg)
	c.Tick(0, 10)
	c.Observe(0, 2, 20)
	for now := uint64(1); now < 50; now++ {
		c.Tick(now, 10)
		if !c.Behind(now, 10) {
			t.Fatalf("not behind at %d, before the stall bound", now)
		}
	}
	c.Tick(50, 10)
	if c.Behind(50, 10) {
		t.Fatal("still behind after 50 ticks without progress")
	}
	c.Tick(51, 11) // progress: behind again, for another Stall
	if !c.Behind(51, 11) || !c.Behind(100, 11) || c.Behind(101, 11) {
		t.Fatalf("after progress at 51: Behind(51)=%v Behind(100)=%v Behind(101)=%v, want true true false",
			c.Behind(51, 11), c.Behind(100, 11), c.Behind(101, 11))
	}
}

// A working master keeps a node that cannot learn from it behind past the
// Stall bound: such a node's phase 1 would depose it, and being no better
// off, it would do so again and again. A master that stops sending Accepts
// and Commits, or keeps sending them but gets nothing chosen (its frontier
// stops going up: it hears no one), is not working, and Stall ends being
// behind as before. With the planted bug (StallPastMaster), Stall ends it
// while the master works.
func TestStallKeepsBehindALiveMaster(t *testing.T) {
	for _, quiet := range []string{"stops sending", "gets nothing chosen"} {
		for _, planted := range []bool{false, true} {
			cfg := config()
			cfg.Live, cfg.Stall, cfg.StallPastMaster = 30, 50, planted
			c := catchup.New(cfg)
			c.Tick(0, 10)
			for now := uint64(0); now <= 100; now++ {
				c.Observe(now, 2, 20+now/10) // the master is ahead, and gets values chosen
				c.SetMaster(now, 2)
				c.Tick(now, 10)
				if want := now < 50 || !planted; c.Behind(now, 10) != want {
					t.Fatalf("planted=%v: the master works: Behind at %d = %v, want %v", planted, now, !want, want)
				}
			}
			for now := uint64(101); now <= 200; now++ {
				c.Observe(now, 2, 30) // its frontier stops
				if quiet == "gets nothing chosen" {
					c.SetMaster(now, 2) // it still sends Accepts
				}
				c.Tick(now, 10)
				// The master's frontier last went up at 100: working until 150.
				// Quiet since 100, it stopped working at 131 (Live 30).
				last := uint64(149)
				if quiet == "stops sending" {
					last = 130
				}
				if want := now <= last && !planted; c.Behind(now, 10) != want {
					t.Fatalf("planted=%v: the master %s at 100: Behind at %d = %v, want %v", planted, quiet, now, !want, want)
				}
			}
		}
	}
}

// An answer that carried nothing (the peer's durable frontier lags the one
// it reported) lets the next request out only a tick later: such answers
// never loop at network speed.
func TestEmptyAnswerWaitsATick(t *testing.T) {
	c := catchup.New(config())
	c.Observe(0, 2, 30)
	got := c.Maybe(1, 0)
	if len(got) != 1 {
		t.Fatalf("first request: %v", got)
	}
	c.OnResponse(1, 2, got[0].After, true)
	if got := c.Maybe(1, 0); got != nil {
		t.Fatalf("asked again in the tick of an empty answer: %v", got)
	}
	got = c.Maybe(2, 0)
	if len(got) != 1 {
		t.Fatalf("a tick later: %v, want a request", got)
	}
	c.OnResponse(2, 2, got[0].After, false) // values: at once
	if got := c.Maybe(2, 10); !reflect.DeepEqual(unnumbered(got), req(2, 10)) {
		t.Fatalf("after an answer with values: %v, want a request at once", got)
	}
}

// A failure detector's report that a peer is down (PeerDown) only
// subtracts: the peer stops being live, a source and the target of the
// outstanding request at once, instead of after Live and Timeout, and its
// next message makes it live again. A false report costs no more than
// that. Behind does not read it (TestReportsAboutTheMasterKeepNodeBehind).
func TestPeerDownIsAHint(t *testing.T) {
	cfg := config()
	cfg.Live, cfg.Timeout = 1000, 1000
	c := catchup.New(cfg)
	c.Tick(0, 10)
	c.Observe(1, 2, 100) // 2 is the master and furthest ahead
	c.SetMaster(1, 2)
	c.Observe(1, 3, 80)
	if got := unnumbered(c.Maybe(2, 10)); !reflect.DeepEqual(got, req(3, 10)) {
		t.Fatalf("first request %v, want one to 3 (the master is spared)", got)
	}
	c.PeerDown(3)
	if c.Outstanding() {
		t.Fatal("the request to 3 is still outstanding after 3 was reported down")
	}
	if _, live := c.Frontier(3, 3); live {
		t.Fatal("3 is live after a down report")
	}
	if got := unnumbered(c.Maybe(3, 10)); !reflect.DeepEqual(got, req(2, 10)) {
		t.Fatalf("after 3 is down: %v, want a request to 2", got)
	}
	c.PeerDown(2)
	if c.Outstanding() {
		t.Fatal("the request to 2 is still outstanding after 2 was reported down")
	}
	if !c.Behind(4, 10) {
		t.Fatal("not behind, with every peer ahead reported down: elections do not read the hint")
	}
	if p, _ := c.Best(4); p != 0 {
		t.Fatalf("Best is %d, with every peer ahead reported down", p)
	}
	// The report was false: 3's next message makes it live again.
	c.Observe(5, 3, 80)
	if _, live := c.Frontier(5, 3); !live || !c.Behind(5, 10) {
		t.Fatal("3 spoke again, and is not live")
	}
	if got := unnumbered(c.Maybe(6, 10)); !reflect.DeepEqual(got, req(3, 10)) {
		t.Fatalf("after 3 spoke again: %v, want a request to 3", got)
	}
}
