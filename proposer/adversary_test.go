package proposer_test

import (
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/proposer"
)

// Requests for the next piece of a Promise are resent every
// PhaseTimeout/4 while unanswered. An acceptor that answers every request,
// late (just under the phase timeout) and twice (a duplicating link), must
// not make the requests grow: at most one request per acceptor per resend
// period, and duplicate or late answers to resent requests ask nothing more.
func TestPieceRequestsBounded(t *testing.T) {
	cfg := config()
	cfg.PhaseTimeout = 20
	p := newProposer(cfg)
	b := p.StartPrepare(0, 0)[0].Ballot
	p.OnPromise(0, promise(3, b))
	const pieces, latency = 10, 19 // answers arrive PhaseTimeout-1 after the request
	piece := func(after uint64) core.Message {
		m := promise(2, b, core.InstanceValue{Instance: after, Ballot: 3, Value: val("v")})
		m.After, m.End = after, after+1
		if after == pieces-1 {
			m.End = 0
		}
		return m
	}
	_, reqs := p.OnPromise(0, piece(0))
	type pending struct {
		at uint64
		m  core.Message
	}
	var inflight []pending
	for _, r := range reqs {
		inflight = append(inflight, pending{latency, r})
	}
	sent := len(reqs)
	for now := uint64(1); now < 100*cfg.PhaseTimeout; now++ {
		more, abandoned := p.Tick(now)
		if abandoned {
			t.Fatalf("phase 1 abandoned at %d after %d requests", now, sent)
		}
		var rest []pending
		for _, q := range inflight {
			if q.at > now {
				rest = append(rest, q)
				continue
			}
			for range 2 { // delivered twice
				out, next := p.OnPromise(now, piece(q.m.After))
				if out == proposer.PromiseLeading {
					if max := pieces * int(cfg.PhaseTimeout/(cfg.PhaseTimeout/4)); sent > max {
						t.Fatalf("%d requests for %d pieces, over %d", sent, pieces, max)
					}
					t.Logf("%d requests for %d pieces", sent, pieces)
					return
				}
				more = append(more, next...)
			}
		}
		inflight = rest
		for _, m := range more {
			if m.Type != core.MsgPrepare || m.To != 2 {
				t.Fatalf("unexpected %v", m)
			}
			sent++
			inflight = append(inflight, pending{now + latency, m})
		}
		if len(inflight) > 8 {
			t.Fatalf("%d piece requests in flight at %d", len(inflight), now)
		}
	}
	t.Fatalf("phase 1 never ended after %d requests", sent)
}
