//go:build !go1.21

package main

// clearAll before Go 1.21 has no clear builtin: the delete-all idiom compiles to runtime.mapclear.
//
//go:noinline
func clearAll(m map[uint64]int) int {
	for k := range m {
		delete(m, k)
	}
	return len(m)
}
