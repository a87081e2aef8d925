//go:build race

package chaos

// raceEnabled builds the servers with the race detector when the tests run
// with it, so that `go test -race ./e2e/...` checks the servers too.
const raceEnabled = true
