package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

func membersCommand() *cli.Command {
	flags := clientFlags[:len(clientFlags):len(clientFlags)]
	return &cli.Command{
		Name:  "members",
		Usage: "list and change the cluster's members: add, promote, remove, replace",
		Description: `The membership is replicated state: every change goes through the master and the log,
one change at a time, and each command returns once its change is in effect.
A member is a voter (votes, may become master) or a follower (mirrors the log,
serves local reads). A new node joins as a follower and becomes a voter once
promoted:

  paxosd server --id 4 --listen 10.0.0.4:7001 --data-dir /var/lib/paxosd --join 10.0.0.1:7001
  paxosd members promote 4        # once it has caught up (refused while it lags)

Grow 3 -> 5: join two nodes, promote each. Shrink: remove voters one at a time
(removing the master makes it hand its lease over first). Replace a machine
whose data directory is lost: paxosd members replace ID (see its --help).
Examples:
  paxosd members list -w table
  paxosd members promote 4
  paxosd members remove 5
  paxosd members replace 2`,
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "show the configuration and each member's progress as one node knows it",
				Description: `Columns: the member's ID, address and role; whether it is alive in the
answering node's gossip (memberlist's failure detector; an opinion for operators that
safety never depends on; without gossip, the same as live); the instances it has applied
(chosen_instance), as it last reported to the answering node or gossiped, whichever is
higher; how far behind that node it is; whether that node heard from it recently (live);
its data directory's incarnation as the configuration records it (0: a member the
cluster was created with).
Examples:
  paxosd members list -w table
  paxosd members list -w json`,
				Flags:  flags,
				Action: membersList,
			},
			{
				Name:      "add",
				Usage:     "add a follower (a node started with --join adds itself; this is for adding one ahead)",
				ArgsUsage: "ID HOST:PORT",
				Description: `Adds node ID, serving at HOST:PORT, as a non-voting follower. A node started
with paxosd server --join adds itself with its data directory's incarnation, and
that is the usual way. Added here without --incarnation, the member records none;
a node that then starts with --join at HOST:PORT takes its place, with its own.
Example:
  paxosd members add 4 10.0.0.4:7001`,
				Flags: append(flags, &cli.Uint64Flag{Name: "incarnation", Usage: "the incarnation of the new member's data directory (paxosd status shows it), if known"}),
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return usageErr(errors.New("members add takes ID and HOST:PORT (flags before them), e.g. paxosd members add --incarnation 5f0c... 4 10.0.0.4:7001"))
					}
					id, err := memberID(c.Args().Get(0))
					if err != nil {
						return err
					}
					return changeMembers(c, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_ADD_FOLLOWER, Id: id, Address: c.Args().Get(1), Incarnation: c.Uint64("incarnation")})
				},
			},
			{
				Name:      "promote",
				Usage:     "make a follower that has caught up a voter",
				ArgsUsage: "ID",
				Description: `Refused while the follower lags behind the master (by more than 128 instances),
or when the master has not heard from it recently; the command tries again until
--timeout, printing why it waits.
Example:
  paxosd members promote 4`,
				Flags:  flags,
				Action: changeByID(paxosdpb.ChangeKind_PROMOTE),
			},
			{
				Name:      "remove",
				Usage:     "remove a member (a voter or a follower)",
				ArgsUsage: "ID",
				Description: `Removes one member. Removing a voter is refused when the voters left that the
master heard from recently would not make a majority. Removing the master makes it
hand its lease to another voter first. The removed node stops by itself once the
removal is in effect and most voters left have applied past it (at most 30 s later;
"removed from the cluster by a membership change"); its data directory can then be
deleted.
Example:
  paxosd members remove 3`,
				Flags:  flags,
				Action: changeByID(paxosdpb.ChangeKind_REMOVE),
			},
			{
				Name:      "replace",
				Usage:     "put a new data directory (a new machine, or a lost disk) in place of member ID",
				ArgsUsage: "ID",
				Description: `Replaces member ID by a node with the same ID on a new, empty data directory:
  1. removes ID, if it still is a member (wait for this before you start the new node);
  2. waits, printing progress, until a node with ID has joined as a follower: start it on
     an empty data directory with
       paxosd server --id ID --listen HOST:PORT --data-dir DIR --join ENDPOINTS
  3. waits until it has caught up, then promotes it to voter.
Nothing the cluster acknowledged is lost: the new directory votes only once it holds
the log. With 3 voters, the other two must be up for the removal.
Example:
  paxosd members replace 2 --wait 30m`,
				Flags:  append(flags, &cli.DurationFlag{Name: "wait", Value: 30 * time.Minute, Usage: "give up if the new node has not joined and caught up within this long"}),
				Action: membersReplace,
			},
		},
	}
}

func memberID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usageErr(fmt.Errorf("member ID %q: a positive integer", s))
	}
	return id, nil
}

func oneID(c *cli.Context) (uint64, error) {
	if c.NArg() > 1 && strings.HasPrefix(c.Args().Get(1), "-") {
		return 0, usageErr(fmt.Errorf("%q after the member ID: put flags before it, e.g. paxosd members %s --endpoints HOST:PORT 4", c.Args().Get(1), c.Command.Name))
	}
	if c.NArg() != 1 {
		return 0, usageErr(fmt.Errorf("members %s takes one member ID, e.g. paxosd members %s 4", c.Command.Name, c.Command.Name))
	}
	return memberID(c.Args().First())
}

// changeMembers makes one change and prints what it did.
func changeMembers(c *cli.Context, req *paxosdpb.ChangeMembersRequest) error {
	return withClient(c, func(ctx context.Context, cl *client.Client) error {
		resp, err := cl.ChangeMembers(ctx, req)
		// A follower catching up, or the change before this one taking
		// effect, is a matter of moments: try again until --timeout.
		var noted time.Time
		for reason, ok := api.AsChangeRefused(err); ok && (reason == api.ReasonMemberBehind || reason == api.ReasonChangePending); reason, ok = api.AsChangeRefused(err) {
			if time.Since(noted) >= 2*time.Second {
				noted = time.Now()
				fmt.Fprintf(os.Stderr, "waiting: %s\n", statusMessage(err))
			}
			if pause(ctx, 200*time.Millisecond) != nil {
				break
			}
			resp, err = cl.ChangeMembers(ctx, req)
		}
		if reason, ok := api.AsChangeRefused(err); ok && alreadyDone(ctx, cl.ListMembers, req, reason) {
			// A retry after a lost answer, or a change made before: the
			// configuration is as asked.
			fmt.Fprintf(os.Stderr, "nothing to do: %s\n", statusMessage(err))
			if c.String("write-out") == "json" {
				fmt.Printf(`{"change":%q,"already":true}`+"\n", changeText(req))
			} else {
				fmt.Printf("%s already\n", doneText(req))
			}
			return nil
		}
		if err != nil {
			return changeError(req, err)
		}
		if c.String("write-out") == "json" {
			b, _ := json.Marshal(map[string]any{"change": changeText(req), "first_instance": resp.FirstInstance, "master": resp.MasterId, "members": jsonMembers(resp.Members)})
			fmt.Println(string(b))
			return nil
		}
		fmt.Printf("%s: in effect from instance %d (master: node %d)\n", doneText(req), resp.FirstInstance, resp.MasterId)
		fmt.Printf("members: %s\n", summary(resp.Members))
		return nil
	})
}

// alreadyDone reports whether a change refused for reason is in effect
// already: promote of a voter, remove of a non-member, add of a member at
// that address with that incarnation. The refusal is the master's; the
// listing is the view of whichever node answers, which lags the master by
// up to a tick (its commit notices ride the master's next Accept,
// docs/protocol.md §6), so a listing that disagrees is asked again for a
// second before the change counts as not done.
func alreadyDone(ctx context.Context, list func(context.Context) (*paxosdpb.ListMembersResponse, error), req *paxosdpb.ChangeMembersRequest, reason string) bool {
	if reason != api.ReasonNotFollower && reason != api.ReasonUnknownMember && reason != api.ReasonMemberExists {
		return false
	}
	for deadline := time.Now().Add(time.Second); ; {
		if r, err := list(ctx); err == nil && r.Pending == "" && listedAsAsked(r, req) {
			return true
		}
		if time.Now().After(deadline) || pause(ctx, 50*time.Millisecond) != nil {
			return false
		}
	}
}

// listedAsAsked reports whether the listing r shows req's change made.
func listedAsAsked(r *paxosdpb.ListMembersResponse, req *paxosdpb.ChangeMembersRequest) bool {
	var m *paxosdpb.MemberInfo
	for _, x := range r.Members {
		if x.Id == req.Id {
			m = x
		}
	}
	switch req.Kind {
	case paxosdpb.ChangeKind_PROMOTE:
		return m != nil && m.Role == "voter"
	case paxosdpb.ChangeKind_REMOVE:
		return m == nil
	}
	return m != nil && m.Address == req.Address && m.Incarnation == req.Incarnation
}

func changeText(req *paxosdpb.ChangeMembersRequest) string {
	switch req.Kind {
	case paxosdpb.ChangeKind_ADD_FOLLOWER:
		return fmt.Sprintf("add-follower %d %s", req.Id, req.Address)
	case paxosdpb.ChangeKind_PROMOTE:
		return fmt.Sprintf("promote %d", req.Id)
	}
	return fmt.Sprintf("remove %d", req.Id)
}

func doneText(req *paxosdpb.ChangeMembersRequest) string {
	switch req.Kind {
	case paxosdpb.ChangeKind_ADD_FOLLOWER:
		return fmt.Sprintf("added node %d at %s as a follower", req.Id, req.Address)
	case paxosdpb.ChangeKind_PROMOTE:
		return fmt.Sprintf("promoted node %d to voter", req.Id)
	}
	return fmt.Sprintf("removed node %d", req.Id)
}

// changeError says what a refusal means for the command run.
func changeError(req *paxosdpb.ChangeMembersRequest, err error) error {
	if _, ok := api.AsChangeRefused(err); ok {
		return fmt.Errorf("%s refused, nothing changed: %s", changeText(req), statusMessage(err))
	}
	if _, desc, ok := api.AsInvalidArgument(err); ok {
		return fmt.Errorf("%s: %s", changeText(req), desc)
	}
	return &codedError{exitUnknown, fmt.Errorf("%s: %w (the change may or may not have been made: paxosd members list shows the configuration)", changeText(req), err)}
}

// statusMessage is a gRPC error's message without the "rpc error: code =" prefix.
func statusMessage(err error) string {
	s := err.Error()
	if i := strings.Index(s, "desc = "); i >= 0 {
		return s[i+len("desc = "):]
	}
	return s
}

// summary is a configuration on one line: "1=voter 2=voter 4=follower".
func summary(ms []*paxosdpb.MemberInfo) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%d=%s", m.Id, m.Role))
	}
	return strings.Join(parts, " ")
}

func jsonMembers(ms []*paxosdpb.MemberInfo) []map[string]any {
	out := []map[string]any{}
	for _, m := range ms {
		out = append(out, map[string]any{"id": m.Id, "address": m.Address, "role": m.Role, "alive": m.Alive, "applied": m.Applied, "known": m.Known,
			"lag": m.Lag, "live": m.Live, "incarnation": fmt.Sprintf("%016x", m.Incarnation), "gossip_address": m.GossipAddress})
	}
	return out
}

func membersList(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	return withClient(c, func(ctx context.Context, cl *client.Client) error {
		r, err := cl.ListMembers(ctx)
		if err != nil {
			return err
		}
		switch c.String("write-out") {
		case "json":
			out := map[string]any{"node": r.NodeId, "applied": r.Applied, "master": r.MasterId, "gossip": r.Gossip, "members": jsonMembers(r.Members)}
			if r.Pending != "" {
				out["pending"] = map[string]any{"change": r.Pending, "from_instance": r.PendingFrom, "members": jsonMembers(r.PendingMembers)}
			}
			b, _ := json.Marshal(out)
			fmt.Println(string(b))
		case "table":
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tADDRESS\tROLE\tALIVE\tCHOSEN INSTANCE\tLAG\tLIVE\tINCARNATION")
			for _, m := range r.Members {
				applied, lag := "?", "?"
				if m.Known {
					applied, lag = fmt.Sprint(m.Applied), fmt.Sprint(m.Lag)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%s\t%s\t%v\t%016x\n", m.Id, m.Address, m.Role, m.Alive, applied, lag, m.Live, m.Incarnation)
			}
			tw.Flush()
		default:
			for _, m := range r.Members {
				fmt.Printf("id=%d address=%s role=%s alive=%v applied=%d lag=%d live=%v known=%v incarnation=%016x\n", m.Id, m.Address, m.Role, m.Alive, m.Applied, m.Lag, m.Live, m.Known, m.Incarnation)
			}
		}
		if c.String("write-out") != "json" {
			alive := "alive: as its gossip sees it"
			if !r.Gossip {
				alive = "alive: heard from recently (it runs no gossip)"
			}
			fmt.Fprintf(os.Stderr, "as node %d knows it (applied %d instances; master: node %d; %s)\n", r.NodeId, r.Applied, r.MasterId, alive)
			if r.Pending != "" {
				fmt.Printf("pending: %s, in effect from instance %d\n", r.Pending, r.PendingFrom)
			}
		}
		return nil
	})
}

// membersReplace removes a member (if it still is one), waits for a node
// with its ID to join, waits for it to catch up, and promotes it.
func membersReplace(c *cli.Context) error {
	id, err := oneID(c)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(context.Background(), c.Duration("wait"))
	defer cancel()
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(wctx, c.Duration("timeout")) }
	list := func() (*paxosdpb.ListMembersResponse, error) {
		ctx, cancel := call()
		defer cancel()
		return cl.ListMembers(ctx)
	}
	find := func(r *paxosdpb.ListMembersResponse) *paxosdpb.MemberInfo {
		for _, m := range r.Members {
			if m.Id == id {
				return m
			}
		}
		return nil
	}
	r, err := list()
	if err != nil {
		return err
	}
	old := find(r)
	if old != nil {
		fmt.Printf("removing node %d (a %s at %s, incarnation %016x)\n", id, old.Role, old.Address, old.Incarnation)
		req := &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_REMOVE, Id: id}
		ctx, cancel := call()
		resp, err := cl.ChangeMembers(ctx, req)
		cancel()
		if err != nil {
			return changeError(req, err)
		}
		fmt.Printf("removed node %d: in effect from instance %d; members: %s\n", id, resp.FirstInstance, summary(resp.Members))
	} else {
		fmt.Printf("node %d is not a member\n", id)
	}
	fmt.Printf("waiting for node %d to join: start it on an empty data directory with\n"+
		"  paxosd server --id %d --listen HOST:PORT --data-dir DIR --join %s\n", id, id, c.String("endpoints"))
	var joined *paxosdpb.MemberInfo
	for joined == nil {
		if r, err = list(); err == nil {
			joined = find(r)
		}
		if joined == nil {
			if err := pause(wctx, time.Second); err != nil {
				return fmt.Errorf("node %d has not joined: %w", id, err)
			}
		}
	}
	if joined.Role == "voter" {
		fmt.Printf("node %d is a voter already (incarnation %016x)\n", id, joined.Incarnation)
		return nil
	}
	fmt.Printf("node %d joined as a follower at %s (incarnation %016x)\n", id, joined.Address, joined.Incarnation)
	req := &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_PROMOTE, Id: id}
	var lastNote time.Time
	for {
		ctx, cancel := call()
		resp, err := cl.ChangeMembers(ctx, req)
		cancel()
		if err == nil {
			fmt.Printf("promoted node %d to voter: in effect from instance %d; members: %s\n", id, resp.FirstInstance, summary(resp.Members))
			return nil
		}
		reason, refused := api.AsChangeRefused(err)
		if !refused || reason != api.ReasonMemberBehind && reason != api.ReasonChangePending {
			return changeError(req, err)
		}
		if time.Since(lastNote) >= 2*time.Second {
			lastNote = time.Now()
			if r, lerr := list(); lerr == nil {
				if m := find(r); m != nil && m.Known {
					fmt.Printf("node %d is catching up: %d instances behind node %d\n", id, m.Lag, r.NodeId)
				} else {
					fmt.Printf("node %d is catching up\n", id)
				}
			}
		}
		if perr := pause(wctx, 200*time.Millisecond); perr != nil {
			return fmt.Errorf("node %d has not caught up (%s): %w", id, statusMessage(err), perr)
		}
	}
}

// pause waits d, or returns ctx's error.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// changeByID is the action of a change that takes one member ID (promote,
// remove).
func changeByID(kind paxosdpb.ChangeKind) cli.ActionFunc {
	return func(c *cli.Context) error {
		id, err := oneID(c)
		if err != nil {
			return err
		}
		return changeMembers(c, &paxosdpb.ChangeMembersRequest{Kind: kind, Id: id})
	}
}
