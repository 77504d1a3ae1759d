//go:build go1.21

package main

import "reflect"

func init() {
	scenarios["reflect_self_clear"] = reflectSelfClear
}

// reflectSelfClear clears the map through reflect.Value.Clear (Go 1.21+) during its own range.
//
//go:noinline
func reflectSelfClear() { // want:type map[uint64]int
	m := u64Map(16)
	v := reflect.ValueOf(m)
	it := v.MapRange()
	for i := 0; it.Next(); i++ { // want:range main.reflectSelfClear
		if i == 0 {
			v.Clear() // want:write main.reflectSelfClear
		}
	}
}

//go:noinline
func clearPtrMap(m map[*T]int) { clear(m) } // want:write main.clearPtrMap

//go:noinline
func clearU64Map(m map[uint64]int) { clear(m) } // want:write main.clearU64Map
