//go:build race

package storage

// raceEnabled skips the tests that only measure disk use under the race
// detector: they run no goroutines of their own and take minutes there.
const raceEnabled = true
