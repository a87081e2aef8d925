//go:build race

package e2e

// raceEnabled builds the server with the race detector when the tests run
// with it, so `go test -race ./e2e` checks the server's goroutines too.
const raceEnabled = true
