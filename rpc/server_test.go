package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// The core's refusals map to statuses a client can branch on, by code and
// reason, and no parser takes one for another.
func TestStatusOfCoreRefusals(t *testing.T) {
	s := &LogServer{}
	tooMany := s.status(fmt.Errorf("apply: %w", &core.TooManyClientsError{Max: 3}))
	reused := s.status(core.ErrSeqReused)
	pastEnd := s.status(&core.TrimPastEndError{Before: 100, End: 42})

	if c := status.Code(tooMany); c != codes.ResourceExhausted || !api.AsTooManyClients(tooMany) || api.Reason(tooMany) != api.ReasonTooManyClients {
		t.Errorf("too many clients: %v (code %v, reason %q), want ResourceExhausted, TOO_MANY_CLIENTS", tooMany, c, api.Reason(tooMany))
	}
	if !strings.Contains(tooMany.Error(), "cap of 3") {
		t.Errorf("too many clients: %v does not name the cap", tooMany)
	}
	if _, ok := api.AsOverloaded(tooMany); ok {
		t.Errorf("too many clients taken for load shedding (a client would retry it): %v", tooMany)
	}
	if c := status.Code(reused); c != codes.AlreadyExists || !api.AsSeqReused(reused) || api.Reason(reused) != api.ReasonSeqReused {
		t.Errorf("seq reused: %v (code %v), want AlreadyExists, SEQ_REUSED", reused, c)
	}
	if _, _, ok := api.AsNotMaster(reused); ok {
		t.Errorf("seq reused taken for not-the-master: %v", reused)
	}
	field, desc, ok := api.AsInvalidArgument(pastEnd)
	if end, isPastEnd := api.AsTrimPastEnd(pastEnd); !ok || field != "before" || !isPastEnd || end != 42 || !strings.Contains(desc, "42") {
		t.Errorf("trim past the end: %v (field %q, end %d, %v), want api.InvalidArgument on before naming the end 42", pastEnd, field, end, isPastEnd)
	}

	all := []error{tooMany, reused, pastEnd, api.Overloaded("test", 0), api.InvalidArgumentReason("seq", "old", api.ReasonStaleSeq),
		status.Error(codes.ResourceExhausted, "bare"), nil, errors.New("not a status")}
	for i, err := range all {
		if api.AsTooManyClients(err) != (i == 0) || api.AsSeqReused(err) != (i == 1) {
			t.Errorf("error %d (%v): api.AsTooManyClients %v, api.AsSeqReused %v", i, err, api.AsTooManyClients(err), api.AsSeqReused(err))
		}
		if _, ok := api.AsTrimPastEnd(err); ok != (i == 2) {
			t.Errorf("error %d (%v): api.AsTrimPastEnd %v", i, err, ok)
		}
		if _, ok := api.AsOverloaded(err); ok != (i == 3) {
			t.Errorf("error %d (%v): api.AsOverloaded %v", i, err, ok)
		}
	}
}

// Every failure of an append that may have applied it reaches the client
// as OUTCOME_UNKNOWN (a retry with the same pair is safe), never as a
// plain failure; the answers that settle an append stay as they are.
func TestAppendOutcome(t *testing.T) {
	s := &LogServer{id: 1}
	unknown := map[string]error{
		"node stopped with it in flight": s.status(&node.StoppedError{Cause: errors.New("persist: storage: write: no space left on device")}),
		"node stopping":                  s.status(node.ErrStopped),
		"proposal dropped":               s.status(core.ErrDropped),
		"snapshot past it":               s.status(core.ErrUnknownOutcome),
		"deadline":                       s.status(context.DeadlineExceeded),
		"forward broke":                  status.Error(codes.Unavailable, "connection reset by peer"),
		"forward timed out":              status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
		"forward internal":               status.Error(codes.Internal, "stream terminated by RST_STREAM"),
		"bare resource exhausted":        status.Error(codes.ResourceExhausted, "received message larger than max"),
		"an error nobody listed":         s.status(errors.New("something new")),
	}
	for name, err := range unknown {
		got := appendOutcome(err)
		if !api.AsOutcomeUnknown(got) || status.Code(got) != codes.Unavailable || api.Reason(got) != api.ReasonOutcomeUnknown {
			t.Errorf("%s: %v, want Unavailable with reason OUTCOME_UNKNOWN", name, got)
		}
		if _, _, ok := api.AsNotMaster(got); ok {
			t.Errorf("%s: %v taken for not-the-master (nothing applied)", name, got)
		}
	}
	noSpace := s.status(&node.NoSpaceError{Dir: "/data", Free: 10, Min: 64})
	settled := map[string]error{
		"not the master":   api.NotMasterError(2, "127.0.0.1:7002"),
		"no master known":  api.NotMasterError(0, ""),
		"too many clients": s.status(&core.TooManyClientsError{Max: 3}),
		"seq reused":       s.status(core.ErrSeqReused),
		"stale seq":        s.status(core.ErrStaleSeq),
		"expected index":   api.ExpectedIndexError(3, 5),
		"overloaded":       api.Overloaded("test", 0),
		"no space":         noSpace,
		"too large":        s.status(&node.EntryError{Index: 0, Err: node.ErrTooLarge}),
		"canceled":         s.status(context.Canceled),
		"already unknown":  api.OutcomeUnknownError("x"),
	}
	for name, err := range settled {
		if got := appendOutcome(err); got != err {
			t.Errorf("%s: %v became %v", name, err, got)
		}
	}
	if appendOutcome(nil) != nil {
		t.Error("nil became an error")
	}
	free, min, ok := api.AsNoSpace(noSpace)
	if c := status.Code(noSpace); c != codes.ResourceExhausted || !ok || free != 10 || min != 64 {
		t.Errorf("no space: %v (code %v, %d free, min %d, %v), want ResourceExhausted, NO_SPACE, 10, 64", noSpace, c, free, min, ok)
	}
	for _, what := range []string{"/data", "trim", "--min-free-bytes", "add disk"} {
		if !strings.Contains(noSpace.Error(), what) {
			t.Errorf("no space: %q does not say %q", noSpace, what)
		}
	}
	if _, ok := api.AsOverloaded(noSpace); ok || api.AsTooManyClients(noSpace) {
		t.Errorf("no space taken for another ResourceExhausted: %v", noSpace)
	}
}

// A node that is not the master forwards a request to the one it knows,
// once: a request another node forwarded is refused with the master's
// address instead, so that two nodes that each believe the other is the
// master (while a new one is chosen) do not pass it back and forth.
func TestForwardedOnce(t *testing.T) {
	const masterAddr = "127.0.0.1:1" // never dialed: the connection is lazy, and remote is a fake
	s := NewLogServer(nil, 1, 7, map[uint64]string{1: "127.0.0.1:2", 2: masterAddr}, map[uint64]bool{1: true, 2: true})
	defer s.Close()
	local := func(context.Context) error { return &core.NotMasterError{Master: 2} }
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		forwarded bool
	}{
		{"from a client", context.Background(), true},
		{"from a node", metadata.NewIncomingContext(context.Background(), metadata.Pairs(forwardedKey, "3")), false},
	} {
		var remotes int
		err := s.toMaster(tc.ctx, local, func(ctx context.Context, _ paxosdpb.LogServiceClient) error {
			remotes++
			if md, _ := metadata.FromOutgoingContext(ctx); len(md.Get(forwardedKey)) == 0 {
				t.Errorf("%s: forwarded without the mark that stops a second forward", tc.name)
			}
			return nil
		})
		if tc.forwarded && (err != nil || remotes != 1) {
			t.Errorf("%s: err %v after %d forwards; want it forwarded once", tc.name, err, remotes)
		}
		if !tc.forwarded {
			id, addr, ok := api.AsNotMaster(err)
			if remotes != 0 || !ok || id != 2 || addr != masterAddr {
				t.Errorf("%s: %d forwards, err %v; want none and the master's address", tc.name, remotes, err)
			}
		}
	}
}
