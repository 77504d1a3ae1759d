package main

import (
	"os"
	"strconv"
	"time"
)

// hot_self_insert is a bug in a hot loop: a goroutine inserts into the map it is ranging over,
// tens of thousands of times a second, for HOT_SECONDS (default 3). One finding group, a great
// many occurrences: what map-trace's output, ring buffer and shutdown must survive. Not part of
// the scenario suite's marker checks (it has no want: markers); tests/…/hot_findings.rs runs it.
func init() {
	scenarios["hot_self_insert"] = hotSelfInsert
}

//go:noinline
func hotSelfInsert() {
	secs, err := strconv.Atoi(os.Getenv("HOT_SECONDS"))
	if err != nil || secs <= 0 {
		secs = 3
	}
	end := time.Now().Add(time.Duration(secs) * time.Second)
	m := u64Map(8)
	for i := uint64(0); time.Now().Before(end); i++ {
		hotRange(m, i)
	}
}

//go:noinline
func hotRange(m map[uint64]int, i uint64) {
	first := true
	for k := range m {
		if first {
			first = false
			m[1000+i%64] = int(k) // a key that may be new: insert during the range
		}
	}
	if len(m) > 64 {
		for k := range m {
			if k >= 1000 {
				delete(m, k)
			}
		}
	}
}

// hot_cross_insert is a data race that keeps happening: every 20 ms a goroutine inserts into a
// map while another ranges over it (parked in its loop body, so Go's own check never fires), for
// HOT_SECONDS. The sentinel sees the first occurrence from the map's header alone; the
// occurrences after its escalation must name this writer. Run by tests/…/sentinel.rs.
func init() {
	scenarios["hot_cross_insert"] = hotCrossInsert
}

//go:noinline
func hotCrossInsert() {
	secs, err := strconv.Atoi(os.Getenv("HOT_SECONDS"))
	if err != nil || secs <= 0 {
		secs = 3
	}
	end := time.Now().Add(time.Duration(secs) * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		hotCrossRange(strMap(16), i)
		time.Sleep(20 * time.Millisecond)
	}
}

//go:noinline
func hotCrossRange(m map[string]int, i int) {
	h := writer(func() { m["new-"+strconv.Itoa(i)] = i })
	first := true
	for range m {
		if first {
			first = false
			h.wait()
		}
	}
}
