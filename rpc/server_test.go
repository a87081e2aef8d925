package rpc

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
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
