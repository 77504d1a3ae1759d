// mapops calls every Go map operation that map-trace probes, so that every runtime map function
// is linked into the binary: the fixture for `map-trace inspect` tests on each Go version.
// With -sleep it then waits, so tests can inspect it by pid.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"time"
)

type pair struct{ a, b int }

type T struct{ n int }

//go:noinline
func fast64(m map[uint64]int, n int) int {
	for i := 0; i < n; i++ {
		m[uint64(i)] = i
	}
	delete(m, 1)
	s := 0
	for k, v := range m {
		s += int(k) + v
	}
	return s
}

//go:noinline
func fast32(m map[uint32]int) int {
	m[1] = 1
	m[2] = 2
	delete(m, 1)
	s := 0
	for k := range m {
		s += int(k)
	}
	return s
}

//go:noinline
func faststr(m map[string]int) int {
	m["a"] = 1
	m["b"] = 2
	delete(m, "a")
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

//go:noinline
func generic(m map[pair]int) int {
	m[pair{1, 2}] = 3
	m[pair{3, 4}] = 5
	delete(m, pair{1, 2})
	s := 0
	for k := range m {
		s += k.a
	}
	return s
}

//go:noinline
func ptrkeys(m map[*T]int, t *T) int {
	m[t] = 1
	delete(m, t)
	return len(m)
}

//go:noinline
func bigelem(m map[uint64][200]byte) int {
	m[1] = [200]byte{1}
	return len(m)
}

//go:noinline
func viaReflect(m map[string]int) int {
	v := reflect.ValueOf(m)
	v.SetMapIndex(reflect.ValueOf("r"), reflect.ValueOf(7))
	v.SetMapIndex(reflect.ValueOf("r"), reflect.Value{})
	s := 0
	for it := v.MapRange(); it.Next(); {
		s += int(it.Value().Int())
	}
	return s + len(v.MapKeys())
}

//go:noinline
func clearIdiom(m map[uint64]int) {
	for k := range m {
		delete(m, k)
	}
}

func main() {
	sleep := flag.Duration("sleep", 0, "wait this long before exiting")
	n := flag.Int("n", 100, "number of map[uint64]int assignments (each one runtime.mapassign_fast64 call)")
	flag.Parse()

	total := fast64(make(map[uint64]int), *n)
	total += fast32(map[uint32]int{})
	total += faststr(map[string]int{})
	total += generic(map[pair]int{})
	total += ptrkeys(map[*T]int{}, &T{1})
	total += bigelem(map[uint64][200]byte{})
	total += viaReflect(map[string]int{"x": 1})
	m := map[uint64]int{1: 1, 2: 2}
	clearIdiom(m)
	total += len(m) + clearAll(map[uint64]int{1: 1})
	out, err := json.Marshal(map[string]int{"k": total})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
	if *sleep > 0 {
		time.Sleep(*sleep)
	}
}
