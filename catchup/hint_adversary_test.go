package catchup_test

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/catchup"
	"github.com/paxosd/paxosd/core"
)

// Adversary tests of the failure detector's hint (Catchup.PeerDown).

// hintConfig: long Live and Timeout, so that only the hint makes a peer
// stop counting.
func hintConfig() catchup.Config {
	cfg := config()
	cfg.Live, cfg.Timeout, cfg.Stall = 1000, 1000, 50
	return cfg
}

// fetchHalfDone starts a fetch of peer 2's base (applied 90, entries
// [20,40), rows 3, 7, 9) at a node that applied 10 and whose log ends at 5,
// and takes its entries and its first rows: the request for the rows after
// 7 is outstanding.
func fetchHalfDone(t *testing.T, c *catchup.Catchup, st core.ApplyState) {
	t.Helper()
	const applied, next = 10, 5
	c.NeedBase(2, next)
	if got := c.Maybe(2, applied); !reflect.DeepEqual(got, snapReq(2, 0, 5, 0)) {
		t.Fatalf("first request %v", got)
	}
	c.OnChunk(chunk(2, 0, 5, 0, core.SnapChunk{State: st, Entries: ents(20, 40)}), applied, next)
	if got := c.Maybe(3, applied); !reflect.DeepEqual(got, snapReq(2, 90, 40, 0)) {
		t.Fatalf("rows request %v", got)
	}
	c.OnChunk(chunk(2, 90, 40, 0, core.SnapChunk{State: st, Dedup: rows(3, 7)}), applied, next)
	if got := c.Maybe(4, applied); !reflect.DeepEqual(got, snapReq(2, 90, 40, 7)) {
		t.Fatalf("second rows request %v", got)
	}
}

// Attack (claim 2, "a false report costs at most the time to the peer's
// next message"): a false report about the only peer ahead, while its base
// is half fetched. With no live source left, Maybe took the node for not
// behind and dropped the fetch, so once the peer spoke again the fetch
// started over from the node's own log's end: every entry and row taken
// was lost. Gossip that flaps about a peer (a loaded node misses its SWIM
// probes) could keep a large base from ever being installed. The fetch is
// kept while a peer heard from within Live is ahead: after the peer's next
// message (and the learn request that finds it again) it resumes where it
// stood.
func TestFalseReportKeepsHalfFetchedBase(t *testing.T) {
	c := catchup.New(hintConfig())
	c.Observe(1, 2, 100) // the only peer ahead; 3 and 4 never heard from
	st := core.ApplyState{Applied: 90, NextIndex: 40, FirstIndex: 20}
	fetchHalfDone(t, c, st)
	c.PeerDown(2) // false
	if c.Outstanding() {
		t.Fatal("the request to 2 is still outstanding after 2 was reported down")
	}
	for now := uint64(5); now < 9; now++ {
		if got := c.Tick(now, 10); len(got) != 0 && !reflect.DeepEqual(got, probes()) {
			t.Fatalf("tick %d: %v, want nothing but probes (no live peer ahead)", now, got)
		}
	}
	c.Observe(9, 2, 100) // its next message
	got := c.Maybe(9, 10)
	if len(got) != 1 || got[0].Type != core.MsgLearnReq || got[0].To != 2 {
		t.Fatalf("after 2 spoke again: %v, want a learn request to it", got)
	}
	c.OnResponse(10, 2, got[0].After, false)
	c.NeedBase(2, 5) // it answers that the values are below its base
	if got := c.Maybe(10, 10); !reflect.DeepEqual(got, snapReq(2, 90, 40, 7)) {
		t.Fatalf("the fetch after a false report: %v, want it to resume with %v", got, snapReq(2, 90, 40, 7))
	}
	_, inst := c.OnChunk(chunk(2, 90, 40, 7, core.SnapChunk{State: st, Dedup: rows(9), Done: true}), 10, 5)
	if want := (&core.Snapshot{State: st, Dedup: rows(3, 7, 9)}); !reflect.DeepEqual(inst, want) {
		t.Fatalf("installed %+v, want %+v", inst, want)
	}
}

// Attack (claim 3, a base installed only whole): a report about the peer
// whose base is half fetched, while another peer, with another base, is
// ahead. The late chunk of the first base must be ignored, both while the
// node asks the other peer and after it fetches from it, and the base
// installed holds the other base's rows only (that peer's store starts the
// rows over: the base asked for is not its own). A regression guard: it
// fails if PeerDown left the fetch with the reported peer (the next request
// would go to it, not to a live peer) or if OnChunk took a chunk from a
// peer it is not fetching from.
func TestReportMidFetchMixesNoBases(t *testing.T) {
	c := catchup.New(hintConfig())
	c.Observe(1, 2, 100)
	c.Observe(1, 3, 100)
	old := core.ApplyState{Applied: 90, NextIndex: 40, FirstIndex: 20}
	fetchHalfDone(t, c, old)
	late := chunk(2, 90, 40, 7, core.SnapChunk{State: old, Dedup: rows(9), Done: true})
	c.PeerDown(2)
	got := c.Maybe(5, 10)
	if len(got) != 1 || got[0].Type != core.MsgLearnReq || got[0].To != 3 {
		t.Fatalf("after 2 was reported down: %v, want a learn request to 3", got)
	}
	if stage, inst := c.OnChunk(late, 10, 5); stage != nil || inst != nil || !c.Outstanding() {
		t.Fatalf("a late chunk from 2 taken while asking 3: stage %v install %v outstanding %v", stage, inst, c.Outstanding())
	}
	c.OnResponse(6, 3, got[0].After, false)
	c.NeedBase(3, 5)
	if got := c.Maybe(6, 10); !reflect.DeepEqual(got, snapReq(3, 90, 40, 7)) {
		t.Fatalf("request to 3: %v", got)
	}
	if stage, inst := c.OnChunk(late, 10, 5); stage != nil || inst != nil || !c.Outstanding() {
		t.Fatalf("a late chunk from 2 taken while fetching from 3: stage %v install %v outstanding %v", stage, inst, c.Outstanding())
	}
	// 3's base is another: its store starts the rows over. Entries were
	// skipped below the first base's first index, so the entries start over
	// too (TestFetchBaseChanges).
	other := core.ApplyState{Applied: 95, NextIndex: 40, FirstIndex: 20}
	if stage, inst := c.OnChunk(chunk(3, 90, 40, 7, core.SnapChunk{State: other, Dedup: rows(1, 4), Done: true}), 10, 5); stage != nil || inst != nil {
		t.Fatalf("a chunk of another base taken after entries were skipped: %v %v", stage, inst)
	}
	if got := c.Maybe(7, 10); !reflect.DeepEqual(got, snapReq(3, 95, 5, 0)) {
		t.Fatalf("request for the other base: %v", got)
	}
	c.OnChunk(chunk(3, 95, 5, 0, core.SnapChunk{State: other, Entries: ents(20, 40)}), 10, 5)
	if got := c.Maybe(8, 10); !reflect.DeepEqual(got, snapReq(3, 95, 40, 0)) {
		t.Fatalf("rows request for the other base: %v", got)
	}
	if stage, inst := c.OnChunk(late, 10, 5); stage != nil || inst != nil || !c.Outstanding() {
		t.Fatalf("a late chunk from 2 taken while fetching 3's base: stage %v install %v outstanding %v", stage, inst, c.Outstanding())
	}
	_, inst := c.OnChunk(chunk(3, 95, 40, 0, core.SnapChunk{State: other, Dedup: rows(1, 4), Done: true}), 10, 5)
	if want := (&core.Snapshot{State: other, Dedup: rows(1, 4)}); !reflect.DeepEqual(inst, want) {
		t.Fatalf("installed %+v, want %+v (the other base's rows only)", inst, want)
	}
}

// Attack (the stream of reports about the master): a node that cannot
// learn from a working master (stalled past Stall) is kept out of
// elections by the master's work (TestStallKeepsBehindALiveMaster). A
// report about the master cleared it as the working master, and a report
// about the only live peer ahead made the node "not behind" at once: each
// false report let its phase 1 depose the working master (see instance
// TestFalseReportsDoNotLetABehindVoterDeposeTheMaster). Elections never
// read the hint: Behind holds through the reports, whether another peer
// is ahead too or the master alone.
func TestReportsAboutTheMasterKeepNodeBehind(t *testing.T) {
	for _, alone := range []bool{false, true} {
		c := catchup.New(hintConfig())
		c.Tick(0, 10)
		for now := uint64(0); now <= 200; now++ {
			c.Observe(now, 2, 20+now/10) // the master works
			if now%20 == 0 {
				c.SetMaster(now, 2) // an Accept or a Commit, from time to time
			}
			if !alone {
				c.Observe(now, 3, 20)
			}
			c.PeerDown(2) // and gossip says it is dead, each tick
			c.Tick(now, 10)
			if !c.Behind(now, 10) {
				t.Fatalf("master alone ahead %v: tick %d (stalled since 0, Stall %d): not behind a working master after a report about it",
					alone, now, hintConfig().Stall)
			}
		}
	}
}
