package sim

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// client is one simulated client: one operation at a time. Clients with a
// client ID (cid) append exactly-once: they retry an append with the same
// (cid, seq) until it is acknowledged, on any node. The others give up on a
// timeout (outcome unknown) and move on. With Options.Resends, an
// exactly-once client also sends acknowledged appends again.
type client struct {
	n          int
	cid        uint64
	seq        uint64 // the highest seq sent
	target     uint64
	cur        *op
	values     int
	ackedIndex int64 // the probe's acknowledged index; -1 until then
	acked      []ackedAppend
}

// ackedAppend is an exactly-once append and the index it was acknowledged
// at: a client keeps its last resendWindow, to send one again.
type ackedAppend struct {
	seq   uint64
	value string
	index uint64
}

const resendWindow = 8

type op struct {
	hist    int // the op's place in w.hist; none for a re-send, which the checker does not see
	invoke  int64
	kind    checker.Kind
	linear  bool
	value   string
	seq     uint64       // an append's seq (exactly-once clients)
	resend  *ackedAppend // the acknowledged append sent again; nil for a new op
	attempt uint64
	node    uint64
}

func (w *world) handleClient(e *event) {
	c := w.clients[e.cl]
	switch e.kind {
	case evClientNext:
		if w.chaosOver && c != w.probe {
			return
		}
		w.startOp(c)
	case evClientArrive:
		w.arrive(c, e)
	case evClientReply:
		if c.cur == nil || c.cur.attempt != e.req {
			return // a reply to an attempt given up on
		}
		w.onReply(c, e.res)
	case evClientRetry:
		if c.cur != nil && c.cur.attempt == e.req {
			w.attempt(c)
		}
	case evClientTimeout:
		if c.cur == nil || c.cur.attempt != e.req {
			return
		}
		w.tracef("client %d timeout req %d", c.n, e.req)
		if c.cid != 0 && c.cur.kind == checker.Append && w.now-c.cur.invoke < w.giveUpAfter(c) {
			c.target = w.randomVoter()
			w.attempt(c)
			return
		}
		w.complete(c, checker.Unknown)
	}
}

func (w *world) randomVoter() uint64 { return uint64(1 + w.rng.IntN(w.voters)) }

func (w *world) startOp(c *client) {
	if a, ok := w.pickResend(c); ok {
		w.tracef("client %d re-sends seq %d, acknowledged at %d", c.n, a.seq, a.index)
		w.faults["resend"]++
		c.cur = &op{invoke: w.now, kind: checker.Append, value: a.value, seq: a.seq, resend: &a}
		w.attempt(c)
		return
	}
	o := &op{kind: checker.Append, invoke: w.now}
	if c == w.probe {
		c.ackedIndex = -1
	} else if w.rng.IntN(5) == 0 {
		o.kind, o.linear = checker.Read, w.rng.IntN(3) > 0
	}
	if o.kind == checker.Append {
		c.values++
		o.value = fmt.Sprintf("c%d-%d", c.n, c.values)
		if c.cid != 0 {
			c.seq++
			o.seq = c.seq
		}
		if w.opt.LargeValues && c != w.probe && w.rng.IntN(4) > 0 {
			o.value = w.largeValue(c, o.value)
		}
	}
	w.hist = append(w.hist, checker.Op{Client: c.n, Kind: o.kind, Invoke: w.now, Value: o.value, Linearizable: o.linear})
	o.hist = len(w.hist) - 1
	c.cur = o
	w.attempt(c)
}

// pickResend draws, one append in six, an acknowledged append for an
// exactly-once client to send again: one still in its dedup window, which
// keeps the DedupWindow highest seqs of a client, so that the answer must be
// a Duplicate. It draws nothing without Options.Resends, so that seeds
// without them keep their schedules.
func (w *world) pickResend(c *client) (ackedAppend, bool) {
	if !w.opt.Resends || c.cid == 0 || c == w.probe || len(c.acked) == 0 || w.rng.IntN(6) != 0 {
		return ackedAppend{}, false
	}
	a := c.acked[w.rng.IntN(len(c.acked))]
	if a.seq+core.DedupWindow <= c.seq {
		return ackedAppend{}, false
	}
	return a, true
}

// giveUpAfter is how long an exactly-once client retries an append. The
// probe retries for the whole progress bound, so that the bound, not the
// client, decides when a run has made no progress.
func (w *world) giveUpAfter(c *client) int64 {
	if c == w.probe {
		return w.opt.Settle.Microseconds()
	}
	return giveUpAfter
}

// largeValue pads value ("c1-7") to "c1-7:" and dots, so that its encoded
// command is up to 32 bytes short of a limit, whatever node, epoch and
// request it is proposed with: MaxCommandBytes (the largest append the
// runtime lets through) three times in four, else MaxBatchBytes or
// CatchupBytes (a value alone in its batch, or in its catch-up response).
// Still unique and recognisable.
func (w *world) largeValue(c *client, value string) string {
	value += ":"
	cfg := w.nodes[0].cfg
	limit := cfg.MaxCommandBytes
	switch w.rng.IntN(8) {
	case 0:
		limit = cfg.MaxBatchBytes
	case 1:
		limit = cfg.CatchupBytes
	}
	// The command's fields at their largest: only the entry's length moves.
	cmd := core.Command{Kind: core.CmdUser, Entries: [][]byte{nil}, ClientID: c.cid, Seq: c.seq, Origin: uint64(len(w.nodes)),
		Epoch: math.MaxUint64, Req: math.MaxUint64}
	// An entry of 128 bytes to 16 KiB has a length prefix one byte longer
	// than an empty one's.
	room := min(limit, cfg.MaxCommandBytes) - w.rng.IntN(32) - cmd.Size() - 1
	return value + strings.Repeat(".", max(0, room-len(value)))
}

// attempt sends the current operation to the client's target node.
func (w *world) attempt(c *client) {
	o := c.cur
	w.nextReq++
	o.attempt = w.nextReq
	if o.kind == checker.Read && !o.linear {
		o.node = uint64(1 + w.rng.IntN(len(w.nodes))) // followers serve local reads too
	} else {
		o.node = c.target
	}
	w.tracef("client %d attempt req %d to %d", c.n, o.attempt, o.node)
	if !w.node(o.node).up {
		// Connection refused: nothing was sent.
		w.schedule(&event{at: w.now + w.clientDelay(), kind: evClientReply, cl: c.n, req: o.attempt, res: reply{err: errRefused}})
		return
	}
	w.schedule(&event{at: w.now + w.clientDelay(), kind: evClientArrive, cl: c.n, req: o.attempt, node: o.node})
	w.schedule(&event{at: w.now + clientTO, kind: evClientTimeout, cl: c.n, req: o.attempt})
}

var errRefused = errors.New("connection refused")

// arrive is the request reaching its node.
func (w *world) arrive(c *client, e *event) {
	n := w.node(e.node)
	if !n.up || c.cur == nil || c.cur.attempt != e.req {
		return
	}
	o := c.cur
	res := reply{}
	switch {
	case o.kind == checker.Append:
		err := n.core.Propose(instance.Proposal{Req: e.req, Entries: [][]byte{[]byte(o.value)}, ClientID: c.cid, Seq: o.seq})
		if err == nil {
			n.reqs[e.req] = c.n
			w.pump(n)
			return
		}
		res.err = err
		var nm *core.NotMasterError
		if errors.As(err, &nm) {
			res.hint = nm.Master
		}
	case o.linear:
		next, err := n.core.ReadIndex()
		if err != nil {
			res.err = err
			var nm *core.NotMasterError
			if errors.As(err, &nm) {
				res.hint = nm.Master
			}
			break
		}
		if n.disk.state.NextIndex < next {
			// The master has applied entries it has not persisted yet: wait
			// for the disk, as node.Read does (WaitApplied), and confirm
			// mastership again then.
			w.schedule(&event{at: w.now + 200*us, kind: evClientArrive, cl: c.n, req: e.req, node: e.node})
			return
		}
		res = w.serveRead(n)
	default:
		res = w.serveRead(n)
	}
	w.schedule(&event{at: w.now + w.clientDelay(), kind: evClientReply, cl: c.n, req: e.req, res: res})
}

// serveRead returns the last few durable entries of n. For a linearizable
// read the caller made sure the durable log holds everything the master
// has applied (ReadIndex), which includes everything acknowledged.
func (w *world) serveRead(n *node) reply {
	st := n.disk.state
	from := max(st.FirstIndex, st.NextIndex-min(st.NextIndex, 8))
	r := reply{from: from, lastIndex: int64(st.NextIndex) - 1}
	for i := from; i < st.NextIndex; i++ {
		r.entries = append(r.entries, string(n.disk.entries[i]))
	}
	return r
}

func (w *world) onReply(c *client, r reply) {
	o := c.cur
	w.tracef("client %d reply req %d err=%v first=%d dup=%v", c.n, o.attempt, r.err, r.first, r.duplicate)
	if o.resend != nil {
		w.onResendReply(c, r)
		return
	}
	h := &w.hist[o.hist]
	if r.err == nil {
		if o.kind == checker.Append {
			h.Index = r.first
			w.inv.acked(r.first, o.value)
			if c == w.probe {
				c.ackedIndex = int64(r.first)
			} else if c.cid != 0 {
				if len(c.acked) == resendWindow {
					c.acked = c.acked[1:]
				}
				c.acked = append(c.acked, ackedAppend{seq: o.seq, value: o.value, index: r.first})
			}
		} else {
			h.From, h.Entries, h.LastIndex = r.from, r.entries, r.lastIndex
		}
		w.complete(c, checker.OK)
		return
	}
	w.retarget(c, r)
	// Every error here but ErrUnknownOutcome is definite for this attempt:
	// nothing of it was or will be applied. An exactly-once client retries,
	// since an earlier attempt of the same seq may still land; the others
	// fail the op, or leave it unknown.
	if c.cid != 0 && o.kind == checker.Append {
		if w.now-o.invoke >= w.giveUpAfter(c) {
			w.complete(c, checker.Unknown)
			return
		}
		w.retryLater(c)
		return
	}
	if errors.Is(r.err, core.ErrUnknownOutcome) {
		w.complete(c, checker.Unknown)
		return
	}
	w.complete(c, checker.Fail)
}

// onResendReply checks the answer to an acknowledged append sent again: a
// Duplicate at the index first acknowledged, or an error that says nothing
// was decided (the client retries as for any append). An answer from the
// dedup table other than the Duplicate, or a new index, lost the row.
func (w *world) onResendReply(c *client, r reply) {
	a := c.cur.resend
	switch {
	case r.err == nil && (!r.duplicate || r.first != a.index):
		w.fail("client %d seq %d, acknowledged at %d, sent again: answered at %d (duplicate %v), not as a duplicate at %d",
			c.cid, a.seq, a.index, r.first, r.duplicate, a.index)
	case errors.Is(r.err, core.ErrStaleSeq), errors.Is(r.err, core.ErrSeqReused):
		w.fail("client %d seq %d, acknowledged at %d, sent again: %v", c.cid, a.seq, a.index, r.err)
	case r.err != nil && w.now-c.cur.invoke < w.giveUpAfter(c):
		w.retarget(c, r)
		w.retryLater(c)
		return
	}
	w.complete(c, checker.OK)
}

// retarget points c at the master a refusal named, else at a random voter.
func (w *world) retarget(c *client, r reply) {
	if r.hint != 0 {
		c.target = r.hint
	} else {
		c.target = w.randomVoter()
	}
}

// retryLater re-sends the current op after a short backoff.
func (w *world) retryLater(c *client) {
	w.nextReq++
	c.cur.attempt = w.nextReq // replies and timeouts of the old attempt are stale now
	w.schedule(&event{at: w.now + 5*ms + w.rng.Int64N(20*ms), kind: evClientRetry, cl: c.n, req: c.cur.attempt})
}

func (w *world) complete(c *client, s checker.Status) {
	if c.cur.resend == nil {
		h := &w.hist[c.cur.hist]
		h.Status, h.Complete = s, w.now
	}
	c.cur = nil
	if c != w.probe {
		w.schedule(&event{at: w.now + w.rng.Int64N(20*ms), kind: evClientNext, cl: c.n})
	}
}
