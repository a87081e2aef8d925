//go:build !unix

package testports

import (
	"os"
	"sync"
)

// Without flock, ports are kept apart within this process only.
var taken sync.Map

func lock(port int) (*os.File, bool) {
	if _, loaded := taken.LoadOrStore(port, true); loaded {
		return nil, false
	}
	f, err := os.CreateTemp("", "paxosd-test-port-*")
	if err != nil {
		taken.Delete(port)
		return nil, false
	}
	files.Store(f, port)
	return f, true
}

var files sync.Map

func unlock(f *os.File) {
	if p, ok := files.LoadAndDelete(f); ok {
		taken.Delete(p)
	}
	f.Close()
	os.Remove(f.Name())
}
