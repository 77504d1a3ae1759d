// mapops calls every Go map operation that map-trace probes, so that every runtime map function
// is linked into the binary: the fixture for `map-trace inspect` tests on each Go version.
// With -sleep it then waits, so tests can inspect it by pid. With -types it instead prints where
// the type descriptor of each of its map types is, for the type-name tests.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"
	"unsafe"
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

// descriptor is the runtime address of t's type descriptor: a reflect.Type made by TypeOf is an
// interface holding *rtype, which points at the descriptor itself.
func descriptor(t reflect.Type) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&t))[1]
}

// printTypes prints "<descriptor address> <%T>" for maps of many shapes, and
// "<address> func main.main" so that a reader can compute the load bias of a PIE binary. Then it
// waits for stdin to close, so that the reader can read the live process's memory.
func printTypes() {
	maps := []interface{}{
		map[uint64]int{},
		map[uint32]int{},
		map[string]int{},
		map[pair]int{},
		map[*T]int{},
		map[string]pair{},
		map[string][]string{},
		map[pair]map[string]*T{},
		map[interface{}]struct{}{},
		// Made at run time: no map[int8]uint16 exists in the binary, so its descriptor is on the
		// heap and its name is not in the binary's type data.
		reflect.MakeMap(reflect.MapOf(reflect.TypeOf(int8(0)), reflect.TypeOf(uint16(0)))).Interface(),
	}
	fmt.Printf("%#x func main.main\n", reflect.ValueOf(main).Pointer())
	for _, m := range maps {
		fmt.Printf("%p %T\n", descriptor(reflect.TypeOf(m)), m)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

func main() {
	sleep := flag.Duration("sleep", 0, "wait this long before exiting")
	n := flag.Int("n", 100, "number of map[uint64]int assignments (each one runtime.mapassign_fast64 call)")
	types := flag.Bool("types", false, "print the type descriptor address and type of each map kind, then wait for stdin to close")
	flag.Parse()
	if *types {
		printTypes()
		return
	}

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
