//go:build go1.21

package main

//go:noinline
func clearPtrMap(m map[*T]int) { clear(m) }

//go:noinline
func clearU64Map(m map[uint64]int) { clear(m) }
