//go:build go1.21

package main

import "reflect"

// clearAll uses the clear builtin and reflect.Value.Clear, both new in Go 1.21.
//
//go:noinline
func clearAll(m map[uint64]int) int {
	clear(m)
	reflect.ValueOf(m).Clear()
	return len(m)
}
