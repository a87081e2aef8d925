package main

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
)

// The exit codes of paxosd (root --help and docs/operations.md list them).
const (
	exitOK          = 0 // success
	exitRefused     = 1 // refused: bad input, conflict, trimmed, too large, no space, unauthenticated, permission denied (nothing changed, or as the message says)
	exitUsage       = 2 // bad flags or arguments
	exitUnknown     = 3 // outcome unknown: an append may or may not have been applied
	exitUnavailable = 4 // no endpoint answered, or no master within the timeout; nothing applied
)

// exitHelp is the exit-code table of the root --help.
const exitHelp = `Exit codes:
  0  success
  1  refused: bad input, a conflict, a trimmed index, an entry too large, no space,
     no or unknown credentials, a role that does not allow the command
     (nothing changed; a streamed append says how many earlier entries were appended)
  2  usage: a bad flag or argument
  3  outcome unknown: an append may or may not have been applied (the message says how to repeat it safely)
  4  unavailable: no endpoint answered, or no master was known within --timeout; nothing was applied`

// codedError is an error with the exit code it must end the command with.
// (Not named ExitCode: urfave/cli would exit on its own for an ExitCoder.)
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// usageErr marks err as a usage error (exit 2).
func usageErr(err error) error { return &codedError{exitUsage, err} }

// unavailableErr marks err as "nobody could serve it" (exit 4).
func unavailableErr(err error) error { return &codedError{exitUnavailable, err} }

// exitCode is the one mapping from a command's error to its exit code.
func exitCode(err error) int {
	var ce *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, client.ErrUnknownOutcome):
		return exitUnknown
	case strings.HasPrefix(err.Error(), "Required flag"):
		// urfave/cli reports a missing required flag with an unexported
		// type; its message is the only mark.
		return exitUsage
	case unavailable(err):
		return exitUnavailable
	}
	return exitRefused
}

// unavailable says whether err means that no node could serve the request:
// none answered, or none knew a master, within the time allowed. The client
// returns an append that may have been applied as ErrUnknownOutcome, which
// exitCode checks first.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if _, _, ok := api.AsNotMaster(err); ok && status.Code(err) == codes.Unavailable {
		return true // no master known
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
