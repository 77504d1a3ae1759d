// Package racy has a test with a real data race on a map: another goroutine inserts while the
// test ranges over the map (parked in its loop body, so Go's own check never fires). Under
// `map-trace run -- go test ./racy` the race is reported and the run exits 66.
package racy

import "testing"

func TestInsertDuringRange(t *testing.T) {
	m := map[string]int{"a": 1, "b": 2, "c": 3, "d": 4}
	start, done := make(chan struct{}), make(chan struct{})
	go func() {
		<-start
		m["inserted"] = 5 // the other side: a write from another goroutine
		close(done)
	}()
	first := true
	for range m { // the range it overlaps
		if first {
			first = false
			close(start)
			<-done
		}
	}
}
