package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/paxosd/paxosd/event"
)

// servePprof serves Go's profiles (/debug/pprof/) on addr, for
// `go tool pprof http://ADDR/debug/pprof/profile`. It returns once the
// listener is open, so a bad address fails the start.
func servePprof(addr string, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	addPprof(mux)
	go func() {
		if err := http.Serve(l, mux); err != nil {
			log.Error(event.PprofStopped, event.KeyErr, err)
		}
	}()
	log.Info(event.PprofServing, "url", fmt.Sprintf("http://%s/debug/pprof/", l.Addr()))
	return nil
}

// addPprof adds Go's profile handlers (/debug/pprof/) to mux.
func addPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
