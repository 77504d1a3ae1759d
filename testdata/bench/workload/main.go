// Command bench is the workload of `cargo xtask bench`: tight loops of one map operation (to
// price a single probe hit) and a service-like request loop (to price map-trace for a real
// program). It times only its own work and prints one JSON line:
//
//	{"mode":"assign","ops":1000000,"ns":12345678}
//
// For the service mode, ops counts the runtime map calls the requests make, by construction:
// see serve.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"
)

var sink int

//go:noinline
func assignLoop(m map[uint64]int, n int) {
	for i := 0; i < n; i++ {
		m[uint64(i&1023)] = i
	}
}

// deleteLoop deletes n keys of a small map, putting each back right away, so the map stays
// cache-resident and the figure is not dominated by cache misses. Each op is a delete and an
// assign: the benchmark prices both traps together.
//
//go:noinline
func deleteLoop(m map[uint64]int, n int) {
	for i := 0; i < n; i++ {
		k := uint64(i & 1023)
		delete(m, k)
		m[k] = i
	}
}

//go:noinline
func rangeLoop(m map[uint64]int, n int) {
	for i := 0; i < n; {
		for _, v := range m {
			sink += v
			i++
		}
	}
}

// updateInRange updates every key of m during its own range (defined behaviour, never
// reported): each op is one iteration step and one assign to a map with an iteration in
// progress, the path on which map-trace records the write and its stack.
//
//go:noinline
func updateInRange(m map[uint64]int, n int) {
	for i := 0; i < n; {
		for k := range m {
			m[k] = i
			i++
		}
	}
}

// hotInsert is a bug in a hot loop: n ranges over a small map, each inserting a key that may be
// new during its own range (an insert_during_iteration occurrence each time it is new).
func hotInsert(m map[uint64]int, n int) {
	for i := 0; i < n; i++ {
		first := true
		for k := range m {
			if first {
				first = false
				m[1000+uint64(i%64)] = int(k)
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
}

// request is what one call of the service does with maps, as a typical JSON API handler.
type service struct {
	routes   map[string]string
	mu       sync.Mutex
	counters map[string]int
}

func (s *service) handle(body []byte, headers map[string]string) ([]byte, error) {
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	path, _ := req["path"].(string)
	backend := s.routes[path]
	s.mu.Lock()
	s.counters[backend]++
	s.mu.Unlock()
	size := 0
	for k, v := range headers {
		size += len(k) + len(v)
	}
	resp := map[string]any{"backend": backend, "size": size, "user": req["user"], "ok": true}
	return json.Marshal(resp)
}

func serve(requests, workers int) {
	s := &service{
		routes:   map[string]string{"/a": "alpha", "/b": "beta", "/c": "gamma", "/d": "delta"},
		counters: map[string]int{},
	}
	paths := []string{"/a", "/b", "/c", "/d"}
	var wg sync.WaitGroup
	per := requests / workers
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			headers := map[string]string{"accept": "application/json", "user-agent": "bench", "x-request-id": "42", "host": "svc"}
			for i := 0; i < per; i++ {
				body := fmt.Sprintf(`{"path":%q,"user":"u%d","n":%d,"tags":["a","b"]}`, paths[(i+w)%len(paths)], i, i)
				if _, err := s.handle([]byte(body), headers); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
		}(w)
	}
	wg.Wait()
}

func main() {
	mode := flag.String("mode", "assign", "assign | delete | range | update_in_range | service | hot")
	n := flag.Int("n", 1_000_000, "map operations (assign, delete, range steps) or requests (service)")
	workers := flag.Int("workers", 4, "service: goroutines serving requests")
	wait := flag.Bool("wait", false, "read a line on stdin before working (lets a tracer attach first)")
	flag.Parse()
	if *wait {
		var line string
		fmt.Scanln(&line)
	}
	m := make(map[uint64]int)
	switch *mode {
	case "assign", "delete":
		// Ranged over once, to the end: map-trace has seen the map, but no iteration of it is in
		// progress, as for most writes of a real program.
		assignLoop(m, 1024)
		rangeLoop(m, 1)
	case "range", "update_in_range":
		assignLoop(m, 1024)
	case "hot":
		assignLoop(m, 8)
	case "service":
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", *mode)
		os.Exit(2)
	}
	start := time.Now()
	switch *mode {
	case "assign":
		assignLoop(m, *n)
	case "delete":
		deleteLoop(m, *n)
	case "range":
		rangeLoop(m, *n)
	case "update_in_range":
		updateInRange(m, *n)
	case "service":
		serve(*n, *workers)
	case "hot":
		hotInsert(m, *n)
	}
	ns := time.Since(start).Nanoseconds()
	fmt.Printf("{\"mode\":%q,\"ops\":%d,\"ns\":%d}\n", *mode, *n, ns)
}
