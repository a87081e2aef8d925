package proposer_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/proposer"
)

const (
	k    = 8
	slot = 1
)

var voters = []uint64{1, 2, 3}

func config() proposer.Config {
	return proposer.Config{ID: 1, Voters: voters, Window: 4, MaxBatchEntries: 3, MaxBatchBytes: 100, PhaseTimeout: 5}
}

func newProposer(cfg proposer.Config) *proposer.Proposer {
	return proposer.New(cfg, idgen.NewGenerator(slot, k, 0))
}

func val(s string) core.Value {
	return core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{[]byte(s)}}}}
}

var noop = core.Value{Commands: []core.Command{{Kind: core.CmdNoop}}}

func cmd(size int) core.Command {
	return core.Command{Kind: core.CmdUser, Entries: [][]byte{[]byte(strings.Repeat("x", size))}}
}

func cmds(n, size int) []core.Command {
	out := make([]core.Command, n)
	for i := range out {
		out[i] = cmd(size)
		out[i].Req = uint64(i + 1)
	}
	return out
}

func promise(from uint64, b idgen.Ballot, entries ...core.InstanceValue) core.Message {
	return core.Message{Type: core.MsgPromise, From: from, To: 1, Ballot: b, Entries: entries}
}

func accepted(from uint64, b idgen.Ballot, i uint64) core.Message {
	return core.Message{Type: core.MsgAccepted, From: from, To: 1, Ballot: b, Instance: i}
}

// accepts returns the Accepts for instance i at b to each voter in to.
func accepts(b idgen.Ballot, i uint64, v core.Value, to ...uint64) []core.Message {
	var out []core.Message
	for _, t := range to {
		out = append(out, core.Message{Type: core.MsgAccept, To: t, Ballot: b, Instance: i, Value: v})
	}
	return out
}

// lead makes p the leader from instance from with no accepted values found.
func lead(t *testing.T, p *proposer.Proposer, now, from uint64) idgen.Ballot {
	t.Helper()
	p.StartPrepare(now, from)
	b := p.Ballot()
	p.OnPromise(now, promise(1, b))
	if out, msgs := p.OnPromise(now, promise(2, b)); out != proposer.PromiseLeading || len(msgs) != 0 {
		t.Fatalf("lead: outcome %v msgs %v", out, msgs)
	}
	return b
}

func TestStartPrepare(t *testing.T) {
	p := newProposer(config())
	var last idgen.Ballot
	for round, observe := range []idgen.Ballot{0, 0, 100, 0} {
		p.Observe(observe)
		msgs := p.StartPrepare(uint64(round), 7)
		b := p.Ballot()
		if !idgen.Owns(b, slot, k) || b <= last || b <= observe || p.Phase() != proposer.Preparing {
			t.Fatalf("round %d: ballot %d (owned=%v) after %d, observed %d, phase %v", round, b, idgen.Owns(b, slot, k), last, observe, p.Phase())
		}
		var want []core.Message
		for _, v := range voters {
			want = append(want, core.Message{Type: core.MsgPrepare, To: v, Ballot: b, Instance: 7})
		}
		if !reflect.DeepEqual(msgs, want) {
			t.Errorf("round %d: prepares %v, want %v", round, msgs, want)
		}
		last = b
	}
}

func TestOnPromise(t *testing.T) {
	iv := func(i uint64, b idgen.Ballot, s string) core.InstanceValue {
		return core.InstanceValue{Instance: i, Ballot: b, Value: val(s)}
	}
	type reply struct {
		m    core.Message // Ballot 0 means "the current ballot"; Ballot 1 a stale one
		want proposer.PromiseOutcome
	}
	const from = 5
	for _, tc := range []struct {
		name      string
		planted   bool
		replies   []reply
		wantPhase proposer.Phase
		wantVals  []core.Value // re-proposed values for instances from, from+1, ...
	}{
		{"quorum, nothing accepted", false, []reply{
			{promise(1, 0), proposer.PromiseCounted}, {promise(3, 0), proposer.PromiseLeading}},
			proposer.Leading, nil},
		{"duplicate promise is not a quorum", false, []reply{
			{promise(2, 0), proposer.PromiseCounted}, {promise(2, 0), proposer.PromiseCounted}},
			proposer.Preparing, nil},
		{"highest ballot wins, holes get no-ops", false, []reply{
			{promise(1, 0, iv(5, 3, "a"), iv(7, 4, "c")), proposer.PromiseCounted},
			{promise(2, 0, iv(4, 9, "old"), iv(5, 6, "b"), iv(7, 2, "c-old")), proposer.PromiseLeading}},
			proposer.Leading, []core.Value{val("b"), noop, val("c")}},
		{"PlantIgnoreAccepted proposes no-ops", true, []reply{
			{promise(1, 0, iv(5, 3, "a"), iv(7, 4, "c")), proposer.PromiseCounted},
			{promise(2, 0, iv(5, 6, "b")), proposer.PromiseLeading}},
			proposer.Leading, []core.Value{noop, noop, noop}},
		{"stale ballot ignored", false, []reply{
			{promise(1, 1, iv(5, 3, "a")), proposer.PromiseCounted}, {promise(2, 1), proposer.PromiseCounted},
			{promise(3, 0), proposer.PromiseCounted}},
			proposer.Preparing, nil},
		{"reject from an acceptor past us: behind", false, []reply{
			{promise(1, 0), proposer.PromiseCounted},
			{core.Message{Type: core.MsgPromise, From: 2, Reject: true, Committed: from + 1}, proposer.PromiseBehind}},
			proposer.Idle, nil},
		{"reject at our own frontier is not behind", false, []reply{
			{core.Message{Type: core.MsgPromise, From: 2, Reject: true, Committed: from}, proposer.PromiseCounted}},
			proposer.Preparing, nil},
		{"reject with a higher promise: outbid", false, []reply{
			{core.Message{Type: core.MsgPromise, From: 3, Reject: true, Promised: 1000}, proposer.PromiseOutbid}},
			proposer.Idle, nil},
	} {
		p := newProposer(config())
		if tc.planted {
			p.PlantIgnoreAccepted()
		}
		p.StartPrepare(9, from) // an earlier round, whose replies are stale
		p.StartPrepare(10, from)
		b := p.Ballot()
		var msgs []core.Message
		for j, r := range tc.replies {
			m := r.m
			switch m.Ballot {
			case 0:
				m.Ballot = b
			case 1:
				m.Ballot = b - k // our ballot of the previous round
			}
			out, ms := p.OnPromise(10, m)
			if out != r.want {
				t.Errorf("%s: reply %d: outcome %v, want %v", tc.name, j, out, r.want)
			}
			msgs = append(msgs, ms...)
		}
		if p.Phase() != tc.wantPhase {
			t.Errorf("%s: phase %v, want %v", tc.name, p.Phase(), tc.wantPhase)
		}
		var want []core.Message
		for j, v := range tc.wantVals {
			want = append(want, accepts(b, from+uint64(j), v, voters...)...)
		}
		if !reflect.DeepEqual(msgs, want) {
			t.Errorf("%s: accepts\n got %v\nwant %v", tc.name, msgs, want)
		}
		if tc.wantPhase == proposer.Leading && (p.Next() != from+uint64(len(tc.wantVals)) || p.InFlight() != len(tc.wantVals)) {
			t.Errorf("%s: next %d inflight %d", tc.name, p.Next(), p.InFlight())
		}
		if tc.wantPhase == proposer.Idle && p.Ballot() != 0 {
			t.Errorf("%s: idle with ballot %d", tc.name, p.Ballot())
		}
	}
}

func TestOutbidRaisesNextBallot(t *testing.T) {
	p := newProposer(config())
	p.StartPrepare(0, 0)
	p.OnPromise(0, core.Message{Type: core.MsgPromise, From: 2, Ballot: p.Ballot(), Reject: true, Promised: 1000})
	p.StartPrepare(1, 0)
	if b := p.Ballot(); b <= 1000 || !idgen.Owns(b, slot, k) {
		t.Errorf("ballot %d after being outbid by 1000", b)
	}
}

func TestFlush(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       func(*proposer.Config)
		pending   []core.Command
		applied   uint64
		wantSizes []int // commands per new instance
		waiting   int
	}{
		{"all fit in one value", nil, cmds(3, 1), 0, []int{3}, 0},
		{"entry limit", nil, cmds(7, 1), 0, []int{3, 3, 1}, 0},
		// commandSize is 16 + len + 2 = 48: two fit in 100 bytes, three do not.
		{"byte limit", nil, cmds(5, 30), 0, []int{2, 2, 1}, 0},
		{"oversized command goes alone", nil, append(cmds(1, 500), cmds(2, 1)...), 0, []int{1, 2}, 0},
		{"window full", func(c *proposer.Config) { c.MaxBatchEntries = 1 }, cmds(6, 1), 0, []int{1, 1, 1, 1}, 2},
		{"window moves with applied", func(c *proposer.Config) { c.MaxBatchEntries = 1 }, cmds(6, 1), 2, []int{1, 1, 1, 1, 1, 1}, 0},
	} {
		cfg := config()
		if tc.cfg != nil {
			tc.cfg(&cfg)
		}
		p := newProposer(cfg)
		b := lead(t, p, 0, 0)
		p.Propose(tc.pending...)
		msgs, placed := p.Flush(1, tc.applied)
		var want []core.Message
		var wantPlaced []proposer.Chosen
		rest := tc.pending
		for i, n := range tc.wantSizes {
			v := core.Value{Commands: rest[:n]}
			rest = rest[n:]
			want = append(want, accepts(b, uint64(i), v, voters...)...)
			wantPlaced = append(wantPlaced, proposer.Chosen{Instance: uint64(i), Ballot: b, Value: v})
		}
		if !reflect.DeepEqual(placed, wantPlaced) || !reflect.DeepEqual(msgs, want) {
			t.Errorf("%s: placed %d instances %+v, want %v", tc.name, len(placed), placed, tc.wantSizes)
		}
		if p.Waiting() != tc.waiting || p.Next() != uint64(len(tc.wantSizes)) {
			t.Errorf("%s: waiting %d next %d, want %d %d", tc.name, p.Waiting(), p.Next(), tc.waiting, len(tc.wantSizes))
		}
	}
}

func TestFlushNotLeading(t *testing.T) {
	p := newProposer(config())
	p.Propose(cmds(2, 1)...)
	if msgs, placed := p.Flush(0, 0); msgs != nil || placed != nil || p.Waiting() != 2 {
		t.Errorf("idle Flush sent %v placed %v", msgs, placed)
	}
	p.StartPrepare(0, 0)
	if msgs, placed := p.Flush(0, 0); msgs != nil || placed != nil || p.Waiting() != 2 {
		t.Errorf("preparing Flush sent %v placed %v", msgs, placed)
	}
	if got := p.TakePending(); len(got) != 2 || p.Waiting() != 0 {
		t.Errorf("TakePending returned %d, waiting %d", len(got), p.Waiting())
	}
}

// MaxBatchBytes is documented to bound one instance value, and core.Value.Size
// says proposers use it to bound batches. Flush uses an estimate instead
// (commandSize: 16 bytes of overhead per command) that undercounts commands
// whose varint fields (ClientID, Seq, Origin, Req) are large: a random 64-bit
// ClientID alone takes 10 bytes.
func TestFlushBatchBytesBoundsEncodedSize(t *testing.T) {
	cfg := config()
	cfg.MaxBatchBytes = 60
	p := newProposer(cfg)
	lead(t, p, 0, 0)
	for i := range 3 {
		p.Propose(core.Command{Kind: core.CmdUser, Entries: [][]byte{[]byte("x")}, ClientID: 1<<63 + uint64(i), Seq: 1 << 62, Origin: 1 << 62, Req: 1 << 62})
	}
	_, placed := p.Flush(0, 0)
	for _, c := range placed {
		if len(c.Value.Commands) > 1 && c.Value.Size() > cfg.MaxBatchBytes {
			t.Errorf("instance %d holds %d commands, %d bytes encoded > MaxBatchBytes %d", c.Instance, len(c.Value.Commands), c.Value.Size(), cfg.MaxBatchBytes)
		}
	}
}

func TestProposeValueOutsideWindow(t *testing.T) {
	cfg := config()
	cfg.MaxBatchEntries = 1
	p := newProposer(cfg)
	b := lead(t, p, 0, 0)
	p.Propose(cmds(4, 1)...)
	p.Flush(0, 0) // fills the window of 4
	i, msgs := p.ProposeValue(0, val("lease"))
	if i != 4 || !reflect.DeepEqual(msgs, accepts(b, 4, val("lease"), voters...)) || p.Next() != 5 {
		t.Errorf("ProposeValue: instance %d msgs %v next %d", i, msgs, p.Next())
	}
}

func TestOnAccepted(t *testing.T) {
	type reply struct {
		m          core.Message // Ballot 0 means "the current ballot"
		wantChosen bool
		wantOutbid bool
	}
	for _, tc := range []struct {
		name         string
		replies      []reply
		wantPhase    proposer.Phase
		wantInFlight int
	}{
		{"quorum of distinct voters, chosen once", []reply{
			{accepted(1, 0, 0), false, false},
			{accepted(1, 0, 0), false, false}, // duplicate does not count
			{accepted(3, 0, 0), true, false},
			{accepted(2, 0, 0), false, false}, // late: already chosen
		}, proposer.Leading, 1},
		{"per-instance counting", []reply{
			{accepted(1, 0, 0), false, false},
			{accepted(2, 0, 1), false, false},
			{accepted(3, 0, 1), true, false},
			{accepted(3, 0, 0), true, false},
		}, proposer.Leading, 0},
		{"stale ballot ignored", []reply{
			{accepted(1, 3, 0), false, false}, {accepted(2, 3, 0), false, false}, {accepted(3, 3, 0), false, false},
		}, proposer.Leading, 2},
		{"unknown instance ignored", []reply{
			{accepted(1, 0, 9), false, false}, {accepted(2, 0, 9), false, false},
		}, proposer.Leading, 2},
		{"reject without a higher promise is not a vote", []reply{
			{accepted(1, 0, 0), false, false},
			{core.Message{Type: core.MsgAccepted, From: 2, Reject: true, Promised: 0, Committed: 5}, false, false},
			{accepted(3, 0, 0), true, false},
		}, proposer.Leading, 1},
		{"reject with a higher promise steps down", []reply{
			{accepted(1, 0, 0), false, false},
			{core.Message{Type: core.MsgAccepted, From: 2, Reject: true, Promised: 1000}, false, true},
			{accepted(3, 0, 0), false, false},
		}, proposer.Idle, 0},
	} {
		p := newProposer(config())
		b := lead(t, p, 0, 0)
		p.Propose(cmd(1))
		p.Flush(0, 0)
		p.Propose(cmd(2))
		_, placed := p.Flush(0, 0)
		values := []core.Value{{Commands: []core.Command{cmd(1)}}, placed[0].Value}
		for j, r := range tc.replies {
			m := r.m
			if m.Ballot == 0 {
				m.Ballot = b
			}
			chosen, outbid := p.OnAccepted(m)
			if outbid != r.wantOutbid || (chosen != nil) != r.wantChosen {
				t.Errorf("%s: reply %d: chosen %v outbid %v, want %v %v", tc.name, j, chosen, outbid, r.wantChosen, r.wantOutbid)
			}
			if want := (proposer.Chosen{Instance: m.Instance, Ballot: b, Value: values[min(m.Instance, 1)]}); chosen != nil && !reflect.DeepEqual(*chosen, want) {
				t.Errorf("%s: reply %d: chosen %+v, want %+v", tc.name, j, *chosen, want)
			}
		}
		if p.Phase() != tc.wantPhase || p.InFlight() != tc.wantInFlight {
			t.Errorf("%s: phase %v inflight %d, want %v %d", tc.name, p.Phase(), p.InFlight(), tc.wantPhase, tc.wantInFlight)
		}
	}
}

func TestTickResendsToSilentVoters(t *testing.T) {
	p := newProposer(config()) // PhaseTimeout 5
	b := lead(t, p, 0, 0)
	p.Propose(cmd(1))
	p.Flush(10, 0)
	p.Propose(cmd(2))
	p.Flush(12, 0)
	v0, v1 := core.Value{Commands: []core.Command{cmd(1)}}, core.Value{Commands: []core.Command{cmd(2)}}
	p.OnAccepted(accepted(2, b, 0))
	p.OnAccepted(accepted(1, b, 1))
	for _, tc := range []struct {
		now  uint64
		ack  *core.Message // delivered before the tick
		want []core.Message
	}{
		{14, nil, nil},
		{15, nil, accepts(b, 0, v0, 1, 3)},
		{16, nil, nil},
		{17, nil, accepts(b, 1, v1, 2, 3)},
		{20, nil, nil}, // the second resend waits twice as long
		{24, nil, nil},
		{25, ptr(accepted(3, b, 0)), nil}, // 0 chosen just before its resend
		{26, nil, nil},
		{27, nil, accepts(b, 1, v1, 2, 3)},
		{46, nil, nil},
		{47, nil, accepts(b, 1, v1, 2, 3)},
		{66, nil, nil},
		{67, nil, accepts(b, 1, v1, 2, 3)},
		{86, nil, nil},
		{87, nil, accepts(b, 1, v1, 2, 3)}, // at most 4 x PhaseTimeout apart
	} {
		if tc.ack != nil {
			p.OnAccepted(*tc.ack)
		}
		msgs, abandoned := p.Tick(tc.now)
		if abandoned || !reflect.DeepEqual(msgs, tc.want) {
			t.Errorf("Tick(%d) = %v %v, want %v", tc.now, msgs, abandoned, tc.want)
		}
	}
}

func ptr[T any](x T) *T { return &x }

func TestTickPreparing(t *testing.T) {
	for _, tc := range []struct {
		now           uint64
		wantAbandoned bool
		wantPhase     proposer.Phase
	}{
		{10, false, proposer.Preparing},
		{14, false, proposer.Preparing},
		{15, true, proposer.Idle},
		{40, true, proposer.Idle},
	} {
		p := newProposer(config())
		p.StartPrepare(10, 0)
		msgs, abandoned := p.Tick(tc.now)
		if msgs != nil || abandoned != tc.wantAbandoned || p.Phase() != tc.wantPhase {
			t.Errorf("Tick(%d): msgs %v abandoned %v phase %v, want %v %v", tc.now, msgs, abandoned, p.Phase(), tc.wantAbandoned, tc.wantPhase)
		}
	}
	p := newProposer(config())
	if msgs, abandoned := p.Tick(100); msgs != nil || abandoned {
		t.Errorf("idle Tick: %v %v", msgs, abandoned)
	}
}

// Each phase 1 abandoned in a row waits twice as long as the one before
// (PhaseTimeout 5: 5, 10, 20, 40, 80, then 160 for ever); one that
// completes, or another node's lease (OtherLeads), starts the count over. With a fixed timeout, acceptors whose promise sync takes
// longer than PhaseTimeout never let a phase 1 complete.
func TestPrepareTimeoutBacksOff(t *testing.T) {
	p := newProposer(config())
	now := uint64(100)
	for k, want := range []uint64{5, 10, 20, 40, 80, 160, 160} {
		p.StartPrepare(now, 0)
		if _, abandoned := p.Tick(now + want - 1); abandoned {
			t.Fatalf("phase 1 number %d abandoned before %d ticks", k+1, want)
		}
		if _, abandoned := p.Tick(now + want); !abandoned {
			t.Fatalf("phase 1 number %d not abandoned after %d ticks", k+1, want)
		}
		now += want
	}
	lead(t, p, now, 0)
	p.StepDown()
	p.StartPrepare(now, 0)
	if _, abandoned := p.Tick(now + 5); !abandoned {
		t.Error("after a phase 1 that completed, the next one did not wait PhaseTimeout again")
	}
	for range 3 {
		p.StartPrepare(now, 0)
		now += p.PrepareTimeout()
		p.Tick(now)
	}
	if got := p.PrepareTimeout(); got != 80 {
		t.Fatalf("after 4 phase 1s abandoned: wait %d, want 80", got)
	}
	p.OtherLeads()
	if got := p.PrepareTimeout(); got != 5 {
		t.Errorf("after another node's lease: wait %d, want PhaseTimeout (5)", got)
	}
}

func TestForgetAndStepDown(t *testing.T) {
	p := newProposer(config())
	b := lead(t, p, 0, 0)
	p.Propose(cmds(2, 1)...)
	p.Flush(0, 0)
	p.Propose(cmd(3))
	p.Flush(0, 0)
	p.Forget(0)
	if p.InFlight() != 1 {
		t.Fatalf("inflight %d after Forget", p.InFlight())
	}
	if c, _ := p.OnAccepted(accepted(1, b, 0)); c != nil {
		t.Error("forgotten instance chosen")
	}
	p.Propose(cmd(4))
	p.StepDown()
	if p.Phase() != proposer.Idle || p.Ballot() != 0 || p.InFlight() != 0 || p.Waiting() != 1 {
		t.Errorf("after StepDown: phase %v ballot %d inflight %d waiting %d", p.Phase(), p.Ballot(), p.InFlight(), p.Waiting())
	}
	if msgs, _ := p.Tick(1000); msgs != nil {
		t.Errorf("idle proposer resent %v", msgs)
	}
}

// A Promise in pieces: the proposer asks each acceptor for its next piece
// (same ballot and start, After = End), counts the acceptor only when its
// last piece is in, ignores duplicates and pieces it did not ask for, keeps
// the phase alive while pieces arrive, and re-proposes what every piece
// reported.
func TestOnPromiseInPieces(t *testing.T) {
	p := newProposer(config())
	msgs := p.StartPrepare(0, 5)
	b := msgs[0].Ballot
	piece := func(from, after, end uint64, entries ...core.InstanceValue) core.Message {
		m := promise(from, b, entries...)
		m.Instance, m.After, m.End = 5, after, end
		return m
	}
	// Node 1's whole promise; node 2's first piece stops at 7.
	if out, _ := p.OnPromise(1, piece(1, 0, 0)); out != proposer.PromiseCounted {
		t.Fatalf("one promise: %v", out)
	}
	out, next := p.OnPromise(2, piece(2, 0, 7, core.InstanceValue{Instance: 5, Ballot: 3, Value: val("a")}, core.InstanceValue{Instance: 6, Ballot: 3, Value: val("b")}))
	want := []core.Message{{Type: core.MsgPrepare, To: 2, Ballot: b, Instance: 5, After: 7}}
	if out != proposer.PromiseCounted || !reflect.DeepEqual(next, want) {
		t.Fatalf("first piece: %v %v, want counted and %v", out, next, want)
	}
	// A duplicate of the first piece, or a piece not asked for, changes nothing.
	for _, m := range []core.Message{piece(2, 0, 7), piece(2, 9, 0)} {
		if out, next := p.OnPromise(3, m); out != proposer.PromiseCounted || next != nil {
			t.Fatalf("stray piece %v: %v %v", m, out, next)
		}
	}
	// The phase timeout counts from the last piece: at 2+PhaseTimeout-1 it is alive.
	if _, abandoned := p.Tick(2 + 5 - 1); abandoned || p.Phase() != proposer.Preparing {
		t.Fatal("phase 1 abandoned while pieces were arriving")
	}
	out, accs := p.OnPromise(6, piece(2, 7, 0, core.InstanceValue{Instance: 8, Ballot: 3, Value: val("d")}))
	if out != proposer.PromiseLeading {
		t.Fatalf("last piece: %v, want leading", out)
	}
	wantVals := map[uint64]core.Value{5: val("a"), 6: val("b"), 7: noop, 8: val("d")}
	if len(accs) != len(wantVals)*len(voters) {
		t.Fatalf("re-proposed %d Accepts, want instances 5..8 to each voter", len(accs))
	}
	for _, m := range accs {
		if !reflect.DeepEqual(m.Value, wantVals[m.Instance]) || m.Ballot != b {
			t.Fatalf("instance %d re-proposed as %v at %d, want %v at %d", m.Instance, m.Value, m.Ballot, wantVals[m.Instance], b)
		}
	}
}

// A lost request for the next piece, or its lost answer, is asked again
// within the phase: here the first request for every piece is lost, and
// phase 1 over 30 pieces still ends at its first ballot. Before, a piece
// lost cost the ballot, and a phase that needs many pieces over a lossy
// link rarely ended at all.
func TestLostPieceAskedAgain(t *testing.T) {
	cfg := config()
	cfg.PhaseTimeout = 20
	p := newProposer(cfg)
	b := p.StartPrepare(0, 0)[0].Ballot
	if out, _ := p.OnPromise(0, promise(3, b)); out != proposer.PromiseCounted {
		t.Fatalf("node 3's whole promise: %v", out)
	}
	const pieces = 30
	piece := func(after uint64) core.Message {
		m := promise(2, b, core.InstanceValue{Instance: after, Ballot: 3, Value: val("v")})
		m.After, m.End = after, after+1
		if after == pieces-1 {
			m.End = 0 // the last piece
		}
		return m
	}
	_, reqs := p.OnPromise(0, piece(0))
	asked := map[uint64]int{} // After -> requests seen
	for now := uint64(1); now < 30*cfg.PhaseTimeout; now++ {
		more, abandoned := p.Tick(now)
		if abandoned {
			t.Fatalf("phase 1 abandoned at tick %d, pieces asked %v", now, asked)
		}
		for _, m := range append(reqs, more...) {
			if m.Type != core.MsgPrepare || m.To != 2 {
				t.Fatalf("tick %d: unexpected %v", now, m)
			}
			if asked[m.After]++; asked[m.After] == 1 {
				continue // lost
			}
			out, next := p.OnPromise(now, piece(m.After))
			if out == proposer.PromiseLeading {
				return
			}
			more = append(more, next...)
		}
		reqs = nil
		for _, m := range more {
			if m.Type == core.MsgPrepare && asked[m.After] == 0 {
				reqs = append(reqs, m) // a new piece asked for by the answer above: goes out now
			}
		}
	}
	t.Fatalf("phase 1 never ended: pieces asked %v", asked)
}
