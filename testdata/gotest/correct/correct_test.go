// Package correct ranges and writes one map from several goroutines under a mutex, and deletes
// during its own range (defined by the Go spec): `map-trace run -- go test ./correct` must
// report nothing and exit 0.
package correct

import (
	"sync"
	"testing"
)

func TestLockedWritersAndOwnDeletes(t *testing.T) {
	var mu sync.Mutex
	m := map[int]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				mu.Lock()
				m[w*1000+i] = i
				sum := 0
				for _, v := range m {
					sum += v
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	for k := range m {
		if k%2 == 0 {
			delete(m, k)
		}
	}
	if len(m) != 400 {
		t.Fatalf("len %d", len(m))
	}
}
