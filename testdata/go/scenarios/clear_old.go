//go:build !go1.21

package main

// Before Go 1.21 the delete-all idiom is how a map is cleared; it compiles to runtime.mapclear.

//go:noinline
func clearPtrMap(m map[*T]int) {
	for k := range m { // want:write main.clearPtrMap
		delete(m, k)
	}
}

//go:noinline
func clearU64Map(m map[uint64]int) {
	for k := range m { // want:write main.clearU64Map
		delete(m, k)
	}
}
