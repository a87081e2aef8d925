package main

import (
	"context"
	"testing"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// TestAlreadyDoneAsksALaggingListingAgain: the master refuses a second
// "members remove 9" because 9 is no member; the node that answers the
// listing may not have heard of the removal yet (it lags the master by up
// to a tick). The change is done as soon as a listing agrees, and not done
// when none does within the second.
func TestAlreadyDoneAsksALaggingListingAgain(t *testing.T) {
	withNine := &paxosdpb.ListMembersResponse{Members: []*paxosdpb.MemberInfo{{Id: 1, Role: "voter"}, {Id: 9, Role: "voter"}}}
	withoutNine := &paxosdpb.ListMembersResponse{Members: []*paxosdpb.MemberInfo{{Id: 1, Role: "voter"}}}
	remove9 := &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_REMOVE, Id: 9}
	listings := func(rs ...*paxosdpb.ListMembersResponse) (func(context.Context) (*paxosdpb.ListMembersResponse, error), *int) {
		calls := new(int)
		return func(context.Context) (*paxosdpb.ListMembersResponse, error) {
			r := rs[min(*calls, len(rs)-1)]
			*calls++
			return r, nil
		}, calls
	}
	ctx := context.Background()

	list, calls := listings(withNine, withNine, withoutNine)
	if !alreadyDone(ctx, list, remove9, api.ReasonUnknownMember) {
		t.Fatalf("a listing that caught up on the third ask: not done (%d asks)", *calls)
	}
	if *calls != 3 {
		t.Fatalf("asked %d times, want 3", *calls)
	}

	list, calls = listings(withNine)
	if alreadyDone(ctx, list, remove9, api.ReasonUnknownMember) {
		t.Fatal("a listing that never shows the removal: done")
	}
	if *calls < 2 {
		t.Fatalf("a disagreeing listing was asked %d times, want it asked again", *calls)
	}

	list, calls = listings(withoutNine)
	if alreadyDone(ctx, list, remove9, api.ReasonChangePending) || *calls != 0 {
		t.Fatalf("a refusal that says nothing of the change: listed %d times", *calls)
	}
}
