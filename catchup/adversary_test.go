package catchup_test

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/catchup"
	"github.com/paxosd/paxosd/core"
)

// Only the answer to the outstanding request ends it. Matched by peer and
// start instance alone (as on 50b776a), an answer that moved nothing (the
// peer's durable frontier lags the one it reported) left the next request
// with the same peer and instance, and a duplicate of the previous answer
// ended it. Here every answer is empty and arrives twice, a tick after its
// request: the requests in flight must stay at one.
func TestDuplicateOfEmptyAnswerReleasesNoRequest(t *testing.T) {
	c := catchup.New(config())
	c.Observe(0, 2, 100)
	type answer struct {
		at, peer, seq uint64
		copy          bool // the duplicate
	}
	var net []answer
	inflight := 0
	send := func(now uint64, msgs []core.Message) {
		for _, m := range msgs {
			if m.Type == core.MsgLearnReq {
				inflight++
				net = append(net, answer{now + 1, m.To, m.After, false}, answer{now + 1, m.To, m.After, true})
			}
		}
	}
	for now := uint64(1); now <= 30; now++ {
		due := net
		net = nil
		for _, a := range due {
			if a.at > now {
				net = append(net, a)
				continue
			}
			if !a.copy {
				inflight--
			}
			c.OnResponse(now, a.peer, a.seq, true)
			send(now, c.Maybe(now, 0))
		}
		send(now, c.Tick(now, 0))
		if inflight > 1 {
			t.Fatalf("tick %d: %d learn requests in flight (each answer, empty, arrives twice)", now, inflight)
		}
	}
}

// A request whose answer is lost is not waited for forever: the
// timeout ends it and the next goes to another peer; a late answer from the
// first peer then ends nothing.
func TestLostAnswerTimesOut(t *testing.T) {
	c := catchup.New(config())
	c.Observe(1, 2, 100)
	c.Observe(1, 3, 90)
	if got := unnumbered(c.Maybe(1, 0)); !reflect.DeepEqual(got, req(2, 0)) {
		t.Fatalf("first request %v", got)
	}
	var got []any
	for now := uint64(2); now <= 1+config().Timeout; now++ {
		for _, m := range c.Tick(now, 0) {
			if m.To == 3 && m.Type == req(3, 0)[0].Type {
				got = append(got, m)
			}
		}
	}
	if len(got) != 1 || !c.Outstanding() {
		t.Fatalf("after the timeout: requests to node 3 %v, outstanding %v", got, c.Outstanding())
	}
	c.OnResponse(2+config().Timeout, 2, 1, false) // the late answer
	if !c.Outstanding() {
		t.Error("a late answer from the peer that timed out ended the request to another peer")
	}
}
