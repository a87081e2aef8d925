package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/paxosd/paxosd/event"
)

// LinkLogEvery bounds how often one peer's link is logged up or down
// (event.PeerLinkUp, PeerLinkDown): a link that flaps makes one line per
// peer per interval, which names the state it is in and how many changes
// were not logged.
const LinkLogEvery = 10 * time.Second

// linkLog logs the transport's link changes (rpc.TransportConfig.OnLink)
// through a per-peer event.Limiter. A link's first up is logged at once: a
// peer that was down when this node started and came up since is not
// flapping.
type linkLog struct {
	log   *slog.Logger
	limit *event.Limiter[uint64]
	now   func() time.Time // time.Now; tests step their own clock
	mu    sync.Mutex
	wasUp map[uint64]bool // peers whose link has been up
}

func newLinkLog(log *slog.Logger, now func() time.Time) *linkLog {
	return &linkLog{log: log, limit: event.NewLimiter[uint64](LinkLogEvery), now: now, wasUp: map[uint64]bool{}}
}

// note is the transport's OnLink.
func (l *linkLog) note(peer uint64, addr string, up bool, err error) {
	l.mu.Lock()
	first := up && !l.wasUp[peer]
	l.wasUp[peer] = l.wasUp[peer] || up
	l.mu.Unlock()
	offer := l.limit.Note
	if first {
		offer = l.limit.Pass
	}
	offer(peer, l.now(), func(suppressed int) {
		if up {
			l.log.Info(event.PeerLinkUp, event.KeyPeer, peer, event.KeyAddr, addr, event.KeySuppress, suppressed)
			return
		}
		var why string
		if err != nil {
			why = err.Error()
		}
		l.log.Warn(event.PeerLinkDown, event.KeyPeer, peer, event.KeyAddr, addr, event.KeyErr, why, event.KeySuppress, suppressed)
	})
}

// run logs, every second until ctx ends, the link changes held back whose
// interval has passed, and at the end all of them, so that the log always
// ends on each link's state.
func (l *linkLog) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Stopping: log the changes still held back, whatever their
			// interval, so that the log ends on each link's state.
			l.limit.Flush(l.now().Add(LinkLogEvery))
			return
		case <-t.C:
			l.limit.Flush(l.now())
		}
	}
}
