//go:build unix

package testports

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lock takes port's lock file without waiting. flock's lock belongs to the
// open file, so it also keeps this process's other Reserve calls off the
// port, and the kernel drops it when the process exits.
func lock(port int) (*os.File, bool) {
	d, err := lockDir()
	if err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(d, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

func unlock(f *os.File) { f.Close() }
