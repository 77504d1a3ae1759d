// demo is a tiny cache service with one real bug and one correct pattern, for `cargo xtask demo`:
//
//   - BUG: the stats reporter ranges over the cache without the lock while the janitor deletes
//     expired entries from another goroutine (a data race that can kill the process with
//     "concurrent map iteration and map write").
//   - CORRECT: the janitor's own sweep deletes entries while it ranges over its expiry list —
//     deleting during your own range is defined by the Go spec.
//
// It waits for a line on stdin before starting, so the tracer can attach first.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

type entry struct {
	value   string
	expires time.Time
}

type Cache struct {
	mu    sync.Mutex
	items map[string]entry
}

// stats ranges over the cache without holding the lock: the bug.
func (c *Cache) stats() int {
	n := 0
	for _, e := range c.items {
		n += len(e.value)
		time.Sleep(200 * time.Microsecond) // formatting work per entry
	}
	return n
}

// sweep deletes expired entries. Deleting during its own range is fine; doing it while stats
// ranges on another goroutine is not.
func (c *Cache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.items {
		if e.expires.Before(now) {
			delete(c.items, k)
		}
	}
}

func main() {
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "stdin:", err)
		os.Exit(1)
	}
	c := &Cache{items: map[string]entry{}}
	now := time.Now()
	for i := 0; i < 200; i++ {
		// A few sessions expire while stats runs; the rest stay.
		ttl := time.Hour
		if i%20 == 0 {
			ttl = time.Duration(i) * time.Millisecond
		}
		c.items["user-"+strconv.Itoa(i)] = entry{value: "v" + strconv.Itoa(i), expires: now.Add(ttl)}
	}
	done := make(chan struct{})
	go func() {
		for t := range time.Tick(20 * time.Millisecond) {
			select {
			case <-done:
				return
			default:
			}
			c.sweep(t)
		}
	}()
	for round := 0; round < 5; round++ {
		fmt.Println("stats:", c.stats())
	}
	close(done)
}
