package rpc

import (
	"google.golang.org/grpc"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Bounds of one SnapshotResponse.
const (
	snapshotChunkEntries = 10000
	snapshotChunkBytes   = 1 << 20
	snapshotChunkRows    = 1000
)

// Snapshot implements LogService.Snapshot: it streams this node's live
// state from one consistent view of its store (storage.Backup), so appends
// and trims that apply meanwhile change nothing in the copy.
func (s *LogServer) Snapshot(_ *paxosdpb.SnapshotRequest, stream grpc.ServerStreamingServer[paxosdpb.SnapshotResponse]) error {
	b, err := s.node.Store().Backup()
	if err != nil {
		return s.status(err)
	}
	defer b.Release()
	st := b.State
	resp := &paxosdpb.SnapshotResponse{Header: &paxosdpb.SnapshotHeader{
		Cluster: s.Cluster, ClusterId: s.clusterID, NodeId: s.id,
		Applied: st.Applied, FirstIndex: st.FirstIndex, NextIndex: st.NextIndex,
		LeaseHolder: st.LeaseHolder, LeaseVersion: st.LeaseVersion, LogTime: st.LogTime,
		DedupRows: uint64(b.Rows),
	}}
	for next := st.FirstIndex; next < st.NextIndex; {
		ents, err := b.Entries(next, snapshotChunkEntries, snapshotChunkBytes)
		if err != nil {
			return s.status(err)
		}
		for _, e := range ents {
			resp.Entries = append(resp.Entries, e.Data)
		}
		next += uint64(len(ents))
		if err := stream.Send(resp); err != nil {
			return err
		}
		resp = &paxosdpb.SnapshotResponse{}
	}
	for after, more := uint64(0), true; more; {
		var rows []core.DedupEntry
		if rows, more, err = b.Dedup(after, snapshotChunkRows); err != nil {
			return s.status(err)
		}
		for _, d := range rows {
			resp.Dedup = append(resp.Dedup, DedupToPB(d))
			after = d.ClientID
		}
		if len(rows) > 0 || resp.Header != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		resp = &paxosdpb.SnapshotResponse{}
	}
	return nil
}

// DedupToPB converts a dedup row to its wire form.
func DedupToPB(d core.DedupEntry) *paxosdpb.DedupRow {
	r := &paxosdpb.DedupRow{ClientId: d.ClientID, LastUsed: d.LastUsed}
	for _, q := range d.Recent {
		r.Recent = append(r.Recent, &paxosdpb.AppliedSeq{Seq: q.Seq, FirstIndex: q.First, LastIndex: q.Last, EntriesSum: q.Sum})
	}
	return r
}

// DedupFromPB converts a dedup row from its wire form.
func DedupFromPB(r *paxosdpb.DedupRow) core.DedupEntry {
	d := core.DedupEntry{ClientID: r.ClientId, LastUsed: r.LastUsed}
	for _, q := range r.Recent {
		d.Recent = append(d.Recent, core.SeqIndexes{Seq: q.Seq, First: q.FirstIndex, Last: q.LastIndex, Sum: q.EntriesSum})
	}
	return d
}
