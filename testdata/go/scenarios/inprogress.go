package main

// Writes in progress: a write or a range that begins while another goroutine's write to the
// same map is under way. These are real, unsynchronised races: Go's runtime kills the process
// ("concurrent map writes", "concurrent map iteration and map write") soon after, or, if it
// survives two seconds, it exits 3. Each makes the other side's write long (clearing a large
// map takes milliseconds) or announces it, so the overlap is certain, not a matter of luck.
// The correct patterns below them must report nothing.

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

func init() {
	scenarios["writers_clear_insert"] = writersClearInsert
	scenarios["range_during_write"] = rangeDuringWrite
	scenarios["writers_grow_delete"] = writersGrowDelete
	scenarios["read_during_write"] = readDuringWrite
	scenarios["mutex_writers"] = mutexWriters
	scenarios["handoff_writers"] = handoffWriters
	scenarios["cow_atomic"] = cowAtomic
	scenarios["sync_map"] = syncMap
}

// work is what a program does between two map writes (a few microseconds).
//
//go:noinline
func work(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += i * i
	}
	return s
}

// survive ends a racy scenario whose race Go's runtime did not catch.
func survive() {
	time.Sleep(2 * time.Second)
	fmt.Println("survived")
	os.Exit(3)
}

// writersClearInsert: a goroutine inserts in a tight loop while another clears a large map
// over and over.
//
//go:noinline
func writersClearInsert() { // want:type map[uint64]int want:calls clearU64Map
	m := u64Map(scaled(1 << 17))
	var started int32
	go func() {
		for i := uint64(0); ; i++ {
			m[i%1024] = int(i) // want:write main.writersClearInsert.func1
			if i == 1000 {
				atomic.StoreInt32(&started, 1)
			}
			work(20000)
		}
	}()
	for atomic.LoadInt32(&started) == 0 {
		runtime.Gosched()
	}
	// Not right after the inserter's store: a clear that begins while the inserter is between
	// its own check and setting the flag cancels it out (both toggle it), and Go dies at the
	// end of the insert, where no entry probe looks.
	time.Sleep(time.Millisecond)
	// Each clear of the (refilled) map takes 0.1 to a few ms: repeated for two seconds, so
	// an inserter descheduled for a while cannot miss them all.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		clearU64Map(m)
		runtime.Gosched()
	}
	fmt.Println("survived")
	os.Exit(3)
}

// bigKey makes each write long: an update compares a whole key with the stored one while the
// map's writing flag is set (the hash is computed before it is set).
type bigKey [1 << 18]byte

// rangeDuringWrite: ranges that begin, and take their only step, while another goroutine's
// update of a map with 256 KB keys is in progress.
//
//go:noinline
func rangeDuringWrite() { // want:type map[main.bigKey]int
	m := make(map[bigKey]int)
	var keys [4]bigKey
	for i := range keys {
		keys[i][0] = byte(i)
		m[keys[i]] = i
	}
	var writing int32
	go func() {
		atomic.StoreInt32(&writing, 1)
		for i := 0; ; i++ {
			m[keys[i%4]] = i // want:write main.rangeDuringWrite.func1
		}
	}()
	for atomic.LoadInt32(&writing) == 0 {
		runtime.Gosched()
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for range m { // want:range main.rangeDuringWrite
			break
		}
	}
	fmt.Println("survived")
	os.Exit(3)
}

// readDuringWrite: a goroutine reads while another updates the map in a tight loop, until Go
// dies of "concurrent map read and map write", which names the reader only.
//
//go:noinline
func readDuringWrite() { // want:type map[uint64]int
	n := uint64(scaled(1 << 16))
	m := u64Map(int(n))
	var writing int32
	go func() {
		atomic.StoreInt32(&writing, 1)
		for i := uint64(0); ; i++ {
			m[i%n] = int(i) // want:write main.readDuringWrite.func1
		}
	}()
	for atomic.LoadInt32(&writing) == 0 {
		runtime.Gosched()
	}
	deadline := time.Now().Add(2 * time.Second)
	s := 0
	for time.Now().Before(deadline) {
		s += m[12345] // want:read main.readDuringWrite
	}
	fmt.Println("survived", s)
	os.Exit(3)
}

// writersGrowDelete: a goroutine deletes while another keeps inserting new keys, from the
// moment the map has grown past 425,984 entries: a classic map then evacuates its 65,536 old
// buckets over the next writes (oldbuckets set), a Swiss map keeps splitting tables.
//
//go:noinline
func writersGrowDelete() { // want:type map[uint64]int
	m := make(map[uint64]int)
	var grown int32
	go func() {
		for atomic.LoadInt32(&grown) == 0 {
			runtime.Gosched()
		}
		for i := uint64(0); ; i++ {
			delete(m, i%1000) // want:write main.writersGrowDelete.func1
		}
	}()
	for i := uint64(0); ; i++ {
		m[i] = int(i) // want:write main.writersGrowDelete
		if i == 425984 {
			atomic.StoreInt32(&grown, 1)
		}
		if i > 4<<20 {
			survive()
		}
	}
}

// mutexWriters: many goroutines write and one ranges, all under one mutex.
//
//go:noinline
func mutexWriters() {
	var mu sync.Mutex
	m := u64Map(256)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < scaled(2000); i++ {
				mu.Lock()
				m[uint64(i*4+w)%512] = i
				delete(m, uint64(i*7+w)%512)
				mu.Unlock()
			}
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 0; round < scaled(100); round++ {
			mu.Lock()
			for k := range m {
				_ = k
			}
			mu.Unlock()
		}
	}()
	wg.Wait()
}

// handoffWriters: a map passed around a ring of goroutines through channels; each writes it
// only while it holds it.
//
//go:noinline
func handoffWriters() {
	type token struct {
		m      map[uint64]int
		rounds int
	}
	const n = 4
	chans := make([]chan token, n)
	for i := range chans {
		chans[i] = make(chan token)
	}
	done := make(chan token)
	for g := 0; g < n; g++ {
		go func(g int) {
			for t := range chans[g] {
				for i := 0; i < scaled(300); i++ {
					t.m[uint64(g*1000+i+t.rounds)] = i
					delete(t.m, uint64(i))
				}
				for k := range t.m {
					_ = k
				}
				t.rounds++
				if t.rounds == scaled(40) {
					done <- t
					continue
				}
				chans[(g+1)%n] <- t
			}
		}(g)
	}
	chans[0] <- token{m: u64Map(64)}
	<-done
}

// cowAtomic: copy-on-write. Writers build a new map and publish it; readers range over
// whichever map is published, which nobody writes any more.
//
//go:noinline
func cowAtomic() {
	var cur atomic.Value
	cur.Store(u64Map(64))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < scaled(300); i++ {
			old := cur.Load().(map[uint64]int)
			next := make(map[uint64]int, len(old)+1)
			for k, v := range old {
				next[k] = v
			}
			next[uint64(1000+i)] = i
			delete(next, uint64(i))
			cur.Store(next)
		}
	}()
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < scaled(300); round++ {
				s := 0
				for _, v := range cur.Load().(map[uint64]int) {
					s += v
				}
				_ = s
			}
		}()
	}
	wg.Wait()
}

// syncMap: sync.Map from several goroutines at once, as it is meant to be used.
//
//go:noinline
func syncMap() {
	var sm sync.Map
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < scaled(2000); i++ {
				sm.Store(i%300+w, i)
				sm.Delete((i + 7) % 300)
				if i%100 == 0 {
					sm.Range(func(k, v any) bool { return true })
				}
			}
		}(w)
	}
	wg.Wait()
}
