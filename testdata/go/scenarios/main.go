// scenarios runs one map-usage pattern, named on the command line, once the tracer is ready
// (a line on stdin), then exits 0. The patterns are the ones map-trace must classify: writes
// that overlap a range from another goroutine or from the ranging goroutine itself, and correct
// code that must produce no finding at all.
//
// Cross-goroutine overlaps are made deterministic by parking the ranging goroutine inside its
// loop body while the writer runs, so the Go runtime (which checks only at each step) never
// crashes: the write lands between two steps of the iteration, which is what map-trace reports.
//
// Marker comments state what the findings must point at, for map-trace's tests:
// `want:write F` on a line a reported write must name (F: its function), `want:range F` on the
// range statement a finding's iteration must name, `want:type T` for the reported map type, and
// `want:calls G` when the scenario's write is in function G. Markers belong to the function they
// are in; every marker of a scenario must be matched by one of its findings.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"time"
)

type pair struct{ a, b int }

type T struct{ n int }

var scenarios = map[string]func(){
	"cross_delete_u64":         crossDeleteU64,
	"cross_insert_str":         crossInsertStr,
	"cross_update_struct":      crossUpdateStruct,
	"cross_clear_ptr":          crossClearPtr,
	"json_marshal_race":        jsonMarshalRace,
	"self_insert":              selfInsert,
	"self_delete_other":        selfDeleteOther,
	"self_delete_current":      selfDeleteCurrent,
	"self_update_existing":     selfUpdateExisting,
	"self_clear":               selfClear,
	"break_then_write":         breakThenWrite,
	"loop_finished_then_write": loopFinishedThenWrite,
	"rwmutex":                  rwmutexProtected,
	"channel_handoff":          channelHandoff,
	"grow_during_iteration":    growDuringIteration,
	"nested_two_maps":          nestedTwoMaps,
	"reflect_cross_write":      reflectCrossWrite,
	"reflect_self_delete":      reflectSelfDelete,
	"fatal_race":               fatalRace,
	"fatal_race_unmapped":      fatalRaceUnmappedMessage,
}

func main() {
	if len(os.Args) != 2 {
		names := make([]string, 0, len(scenarios))
		for n := range scenarios {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: scenarios NAME (one of %v)\n", names)
		os.Exit(2)
	}
	run, ok := scenarios[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown scenario %q\n", os.Args[1])
		os.Exit(2)
	}
	// Wait until the tracer is attached.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "stdin:", err)
		os.Exit(1)
	}
	run()
	fmt.Println("ok")
}

// scale divides the loop counts of the correct patterns (rwmutex, mutex_writers,
// handoff_writers, cow_atomic, sync_map) and the size of the large maps the writes-in-progress
// races build (writers_clear_insert, read_during_write) by $SCENARIO_SCALE, default 1. The
// emulated test VMs set it: a probe hit there costs ~50× more (building a 131,072-entry map
// took 8 s an attempt), and the VMs check the kernel and the arch, not how long a correct
// program can run without a false positive; the host runs them full size.
var scale = func() int {
	n, err := strconv.Atoi(os.Getenv("SCENARIO_SCALE"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}()

// scaled is n divided by scale, at least 1.
func scaled(n int) int {
	if n/scale < 1 {
		return 1
	}
	return n / scale
}

func u64Map(n int) map[uint64]int {
	m := make(map[uint64]int, n)
	for i := 0; i < n; i++ {
		m[uint64(i)] = i
	}
	return m
}

func strMap(n int) map[string]int {
	m := make(map[string]int, n)
	for i := 0; i < n; i++ {
		m["key-"+strconv.Itoa(i)] = i
	}
	return m
}

// handshake lets a writer goroutine run while the ranging goroutine waits in its loop body.
type handshake struct{ start, done chan struct{} }

func writer(write func()) handshake {
	h := handshake{make(chan struct{}), make(chan struct{})}
	go func() {
		<-h.start
		write()
		close(h.done)
	}()
	return h
}

func (h handshake) wait() {
	close(h.start)
	<-h.done
}

//go:noinline
func crossDeleteU64() { // want:type map[uint64]int
	m := u64Map(64)
	h := writer(func() { delete(m, 63) }) // want:write main.crossDeleteU64.func1
	i := 0
	for range m { // want:range main.crossDeleteU64
		if i == 0 {
			h.wait()
		}
		i++
	}
}

//go:noinline
func crossInsertStr() { // want:type map[string]int
	m := strMap(64)
	h := writer(func() { m["new"] = 1 }) // want:write main.crossInsertStr.func1
	i := 0
	for range m { // want:range main.crossInsertStr
		if i == 0 {
			h.wait()
		}
		i++
	}
}

//go:noinline
func crossUpdateStruct() { // want:type map[main.pair]int
	m := map[pair]int{}
	for i := 0; i < 64; i++ {
		m[pair{i, i}] = i
	}
	h := writer(func() { m[pair{5, 5}] = 500 }) // want:write main.crossUpdateStruct.func1
	i := 0
	for range m { // want:range main.crossUpdateStruct
		if i == 0 {
			h.wait()
		}
		i++
	}
}

//go:noinline
func crossClearPtr() { // want:type map[*main.T]int want:calls clearPtrMap
	m := map[*T]int{}
	for i := 0; i < 64; i++ {
		m[&T{i}] = i
	}
	h := writer(func() { clearPtrMap(m) })
	i := 0
	for range m { // want:range main.crossClearPtr
		if i == 0 {
			h.wait()
		}
		i++
	}
}

// label marshals as a map key through MarshalText, which json.Marshal calls from inside its
// range over the map (string-kinded keys would be used directly). That lets the test park the
// hidden iteration while another goroutine writes.
type label struct{ s string }

var marshalHook func()

func (l label) MarshalText() ([]byte, error) {
	if marshalHook != nil {
		hook := marshalHook
		marshalHook = nil
		hook()
	}
	return []byte(l.s), nil
}

//go:noinline
func jsonMarshalRace() { // want:type map[main.label]int
	m := map[label]int{}
	for i := 0; i < 32; i++ {
		m[label{"k" + strconv.Itoa(i)}] = i
	}
	// An update, not an insert: json sizes its buffer by len(m) before ranging.
	h := writer(func() { m[label{"k5"}] = 500 }) // want:write main.jsonMarshalRace.func1
	marshalHook = h.wait
	if _, err := json.Marshal(m); err != nil { // want:range main.jsonMarshalRace
		panic(err)
	}
	if marshalHook != nil {
		panic("json.Marshal did not call MarshalText inside its range")
	}
}

//go:noinline
func selfInsert() { // want:type map[uint64]int
	m := u64Map(16)
	i := 0
	for k := range m { // want:range main.selfInsert
		if i == 0 {
			m[k+1000] = 1 // a new key; want:write main.selfInsert
		}
		i++
	}
}

//go:noinline
func selfDeleteOther() { // want:type map[uint64]int want:type map[uint32]int want:type map[string]int
	// One key type per runtime delete path: fast64, fast32, faststr.
	a := u64Map(16)
	first := true
	for k := range a { // want:range main.selfDeleteOther
		if first {
			first = false
			delete(a, (k+1)%16) // want:write main.selfDeleteOther
		}
	}
	u := map[uint32]int{}
	for i := uint32(0); i < 16; i++ {
		u[i] = int(i)
	}
	first = true
	for k := range u { // want:range main.selfDeleteOther
		if first {
			first = false
			delete(u, (k+1)%16) // want:write main.selfDeleteOther
		}
	}
	s := strMap(16)
	first = true
	for k := range s { // want:range main.selfDeleteOther
		if first {
			first = false
			other := "key-0"
			if k == other {
				other = "key-1"
			}
			delete(s, other) // want:write main.selfDeleteOther
		}
	}
}

//go:noinline
func selfDeleteCurrent() {
	// A bare `for k := range m { delete(m, k) }` compiles to mapclear with no iteration at
	// all, so each loop does something else too.
	a := u64Map(32)
	for k, v := range a {
		if v >= 0 {
			delete(a, k)
		}
	}
	u := map[uint32]int{}
	for i := uint32(0); i < 32; i++ {
		u[i] = int(i)
	}
	for k, v := range u {
		if v >= 0 {
			delete(u, k)
		}
	}
	s := strMap(32)
	for k := range s {
		// A copy of the key in fresh memory: equal by value, not by pointer.
		delete(s, string([]byte(k)))
	}
	p := map[pair]int{}
	for i := 0; i < 32; i++ {
		p[pair{i, -i}] = i
	}
	for k := range p {
		delete(p, pair{k.a, k.b})
	}
	ptrs := map[*T]int{}
	for i := 0; i < 32; i++ {
		ptrs[&T{i}] = i
	}
	for k, v := range ptrs {
		if v >= 0 {
			delete(ptrs, k)
		}
	}
	if len(a)+len(u)+len(s)+len(p)+len(ptrs) != 0 {
		panic("maps not emptied")
	}
}

//go:noinline
func selfUpdateExisting() {
	a := u64Map(64)
	for k, v := range a {
		a[k] = v + 1
	}
	s := strMap(64)
	for k := range s {
		s[k]++
	}
}

//go:noinline
func selfClear() { // want:type map[uint64]int want:calls clearU64Map
	m := u64Map(16)
	i := 0
	for range m { // want:range main.selfClear
		if i == 0 {
			clearU64Map(m)
		}
		i++
	}
}

//go:noinline
func breakThenWrite() {
	m := u64Map(64)
	for range m {
		break
	}
	// The iteration is over: neither this goroutine's writes nor another's overlap it.
	m[1000] = 1
	delete(m, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m[2000] = 2
		delete(m, 4)
	}()
	wg.Wait()
	for k := range m {
		if k == 5 {
			break
		}
	}
	m[3000] = 3
}

//go:noinline
func loopFinishedThenWrite() {
	m := strMap(64)
	n := 0
	for range m {
		n++
	}
	m["after"] = n
	delete(m, "key-1")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m["other"] = 1
		delete(m, "key-2")
	}()
	wg.Wait()
	for range m {
		n++
	}
}

//go:noinline
func rwmutexProtected() {
	var mu sync.RWMutex
	m := u64Map(256)
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < scaled(50); round++ {
				mu.RLock()
				s := 0
				for _, v := range m {
					s += v
				}
				mu.RUnlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < scaled(500); i++ {
			mu.Lock()
			m[uint64(i%300)] = i
			delete(m, uint64((i+7)%300))
			mu.Unlock()
		}
	}()
	wg.Wait()
}

//go:noinline
func channelHandoff() {
	m := strMap(64)
	toWriter, back := make(chan map[string]int), make(chan map[string]int)
	go func() {
		mm := <-toWriter
		mm["written-by-other"] = 1
		delete(mm, "key-3")
		back <- mm
	}()
	n := 0
	for range m {
		n++
	}
	toWriter <- m // the range is complete before the map changes hands
	m = <-back
	for range m {
		n++
	}
}

//go:noinline
func growDuringIteration() { // want:type map[uint64]int
	m := u64Map(8)
	i := 0
	for k := range m { // want:range main.growDuringIteration
		if i == 0 {
			// Enough inserts to grow the map (classic: start an evacuation; Swiss: grow tables).
			for j := uint64(0); j < 2000; j++ {
				m[k+10000+j] = 1 // want:write main.growDuringIteration
			}
		}
		i++
		if i > 16 {
			break
		}
	}
	// One more step follows the inserts (i > 0), so they overlap the iteration.
}

//go:noinline
func nestedTwoMaps() {
	a := u64Map(16)
	b := strMap(16)
	for k := range a {
		for kb := range b {
			_ = kb
		}
		// b's range above has finished; this write overlaps no iteration.
		b["from-"+strconv.FormatUint(k, 10)] = int(k)
	}
}

//go:noinline
func reflectCrossWrite() { // want:type map[string]int
	m := strMap(32)
	h := writer(func() {
		v := reflect.ValueOf(m)
		v.SetMapIndex(reflect.ValueOf("key-3"), reflect.ValueOf(300)) // reflect assign
		v.SetMapIndex(reflect.ValueOf("key-4"), reflect.Value{})      // want:write main.reflectCrossWrite.func1
	})
	it := reflect.ValueOf(m).MapRange()
	for i := 0; it.Next(); i++ { // want:range main.reflectCrossWrite
		if i == 0 {
			h.wait()
		}
	}
}

//go:noinline
func reflectSelfDelete() { // want:type map[main.pair]int
	m := map[pair]int{}
	for i := 0; i < 16; i++ {
		m[pair{i, i}] = i
	}
	v := reflect.ValueOf(m)
	it := v.MapRange()
	for i := 0; it.Next(); i++ { // want:range main.reflectSelfDelete
		k := it.Key().Interface().(pair)
		if i == 0 {
			other := pair{(k.a + 1) % 16, (k.b + 1) % 16}
			v.SetMapIndex(reflect.ValueOf(other), reflect.Value{}) // another key: a notice; want:write main.reflectSelfDelete
		}
		v.SetMapIndex(it.Key(), reflect.Value{}) // the visited key: fine
	}
}

// fatalRace is a real, unsynchronised race: the Go runtime usually kills the process with
// "concurrent map iteration and map write" within milliseconds. If it survives two seconds it
// exits 3, so the test can tell the two outcomes apart.
//
//go:noinline
func fatalRace() { // want:type map[uint64]int
	m := u64Map(64)
	go func() {
		for i := uint64(0); ; i++ {
			m[i%64] = int(i) // want:write main.fatalRace.func1
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for range m { // want:range main.fatalRace
		}
	}
	fmt.Println("survived")
	os.Exit(3)
}
