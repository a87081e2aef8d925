package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// atClkTck is the auxiliary vector's entry for the kernel's clock tick
// rate (AT_CLKTCK): what sysconf(_SC_CLK_TCK) and `getconf CLK_TCK` return,
// the unit of /proc/PID/stat's times.
const atClkTck = 17

// ClockTicks returns the clock ticks per second of /proc/PID/stat's CPU
// times, read from this process's auxiliary vector (/proc/self/auxv, the
// source of sysconf(_SC_CLK_TCK)); it is 100 on Linux's usual builds.
func ClockTicks() (int64, error) {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 0, fmt.Errorf("clock ticks: %w", err)
	}
	return clockTicks(b)
}

// clockTicks finds AT_CLKTCK in an auxiliary vector of 64-bit words.
func clockTicks(auxv []byte) (int64, error) {
	for i := 0; i+16 <= len(auxv); i += 16 {
		k, v := binary.NativeEndian.Uint64(auxv[i:]), binary.NativeEndian.Uint64(auxv[i+8:])
		if k == 0 {
			break
		}
		if k == atClkTck && v > 0 {
			return int64(v), nil
		}
	}
	return 0, errors.New("clock ticks: no AT_CLKTCK in /proc/self/auxv")
}

// statTicks returns utime+stime, in clock ticks, from the text of a
// /proc/PID/stat file. The command name (field 2) is in parentheses and
// may hold spaces and parentheses itself, so the fields are counted from
// the last ')'.
func statTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	// After ')': state is field 3, utime field 14, stime field 15.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// ProcessCPU returns the user and system CPU time the processes pids have
// used so far, summed (/proc/PID/stat's utime and stime; threads included,
// waited-for children not).
func ProcessCPU(pids []int) (time.Duration, error) {
	hz, err := ClockTicks()
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("CPU of process %d: %w", pid, err)
		}
		t, err := statTicks(b)
		if err != nil {
			return 0, fmt.Errorf("CPU of process %d: /proc/%d/stat: %w", pid, pid, err)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / time.Duration(hz), nil
}
