package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/core"
)

// paxosdLimits: --inflight is at most the dedup window (the cluster
// remembers a client's last core.DedupWindow appends, so more in flight
// could not all be retried safely).
var paxosdLimits = Limits{MaxBatch: MaxBatch, MaxInflight: core.DedupWindow}

// paxosdSystem drives paxosd through the Go client: one client.Client (its
// own gRPC connections) per connection, and a separate one for Status and
// the read-back. Each bench client has its own client ID, so that clients
// sharing a connection keep their own dedup windows.
type paxosdSystem struct {
	endpoints []string
	opt       client.Options // TLS, token, cluster pin: every client's
	admin     *client.Client
	start     uint64 // the log's end before the run: the read-back starts here
	firstID   uint64 // bench client c appends as client ID firstID+c
	timeout   time.Duration
}

func newPaxosd(endpoints []string, opt client.Options, timeout time.Duration) (*paxosdSystem, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("paxosd: no endpoints")
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("paxosd: timeout %v: must be positive", timeout)
	}
	admin, err := client.New(endpoints, opt)
	if err != nil {
		return nil, err
	}
	return &paxosdSystem{endpoints: endpoints, opt: opt, admin: admin, timeout: timeout}, nil
}

// NewPaxosd opens paxosd with client options (TLS, a token, a cluster pin)
// for every connection; ClientID is ignored (each bench client has its
// own). timeout is as Driver.Open's.
func NewPaxosd(endpoints []string, opt client.Options, timeout time.Duration) (System, error) {
	opt.ClientID = 0
	return newPaxosd(endpoints, opt, timeout)
}

// Begin asks every endpoint for its status: the members give the node
// count, and the highest end index any node has applied is a point at or
// before the first entry of the run (no node applies past the log's end).
func (p *paxosdSystem) Begin(ctx context.Context, _ string, _ int) (Info, error) {
	info := Info{System: "paxosd", Fsync: true}
	p.firstID = rand.Uint64N(1<<63) + 1
	var errs []error
	answered := false
	for _, ep := range p.endpoints {
		sctx, cancel := context.WithTimeout(ctx, p.timeout)
		st, err := p.admin.Status(sctx, ep)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		answered = true
		voters := 0
		for _, m := range st.Members {
			if m.Voter {
				voters++
			}
		}
		info.Nodes = max(info.Nodes, voters)
		p.start = max(p.start, st.EndIndex, st.FirstIndex)
	}
	if !answered {
		return info, fmt.Errorf("paxosd status: no endpoint answered: %w", errors.Join(errs...))
	}
	return info, nil
}

func (p *paxosdSystem) Dial(_ context.Context, _ int) (Target, error) {
	cl, err := client.New(p.endpoints, p.opt)
	if err != nil {
		return nil, err
	}
	return paxosdTarget{cl: cl, firstID: p.firstID}, nil
}

// Verify reads the log from where it ended before the run to where it ends
// now, linearizably, a page at a time.
func (p *paxosdSystem) Verify(ctx context.Context, w *Written) (Check, error) {
	t := w.NewTally()
	next := p.start
	for {
		rctx, cancel := context.WithTimeout(ctx, p.timeout)
		page, err := p.admin.Read(rctx, next, readPage, false)
		cancel()
		if err != nil {
			return Check{}, fmt.Errorf("paxosd read-back at index %d: %w", next, err)
		}
		for _, e := range page.Entries {
			if id, ok := ParseValue(e.Value); ok {
				t.See(id)
			}
		}
		if len(page.Entries) == 0 {
			return t.Result(fmt.Sprintf("log [%d, %d)", p.start, next)), nil
		}
		next = page.Next
	}
}

func (p *paxosdSystem) Close() error { return p.admin.Close() }

type paxosdTarget struct {
	cl      *client.Client
	firstID uint64
}

// Put appends op's values in one append tagged (client ID, seq): exactly
// once, since the client retries under the same pair.
func (t paxosdTarget) Put(ctx context.Context, op Op) error {
	_, err := t.cl.AppendSeq(ctx, t.firstID+uint64(op.Client), op.Seq, op.Values...)
	return err
}

func (t paxosdTarget) Close() error { return t.cl.Close() }

func (p *paxosdSystem) Name() string   { return "paxosd" }
func (p *paxosdSystem) Limits() Limits { return paxosdLimits }
