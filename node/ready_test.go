package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/storage"
)

// A single node chooses an append in the Ready that holds its accept: the
// answer must wait for that Ready's synced write. Only the answers of a
// Ready that need not sync go before its write (handleReady).
func TestNoAnswerBeforeItsAcceptIsDurable(t *testing.T) {
	dir := t.TempDir()
	net := &memNet{nodes: map[uint64]*Node{}}
	rec := event.NewRecorder()
	cfg := Config{ID: 1, ClusterID: 7, Members: map[uint64]string{1: "a:1"}, DataDir: filepath.Join(dir, "1"), Logger: slog.New(rec)}
	st, err := storage.Open(cfg.DataDir, storage.Meta{ClusterID: 7, NodeID: 1, K: idgen.DefaultK}, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := Open(cfg, st, memLink{net, 1})
	if err != nil {
		t.Fatal(err)
	}
	net.mu.Lock()
	net.nodes[1] = n
	net.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { n.Stop(); <-done }()

	for {
		if _, err := n.Append(ctx, [][]byte{[]byte("first")}, 0, 0, nil); err == nil {
			break // the master, and its writes work
		}
		if ctx.Err() != nil {
			t.Fatal("no append succeeded within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st.Close() // every write fails from now on
	if r, err := n.Append(ctx, [][]byte{[]byte("second")}, 0, 0, nil); err == nil {
		t.Fatalf("an append was answered (%+v) though its accept was never written", r)
	}
}
