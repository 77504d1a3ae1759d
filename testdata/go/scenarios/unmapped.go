package main

import (
	"fmt"
	"os"
	"reflect"
	"syscall"
	"unsafe"
)

// The messages of Go's map fatal errors that fatalRace can die of. A Go binary holds one
// symbol per string literal's content, so these are the very bytes the runtime passes to its
// fatal-error function.
var mapMessages = []string{
	"concurrent map writes",
	"concurrent map read and map write",
	"concurrent map iteration and map write",
}

// fatalRaceUnmappedMessage is fatalRace after the pages holding the map messages have been
// dropped from the process's page tables (MADV_DONTNEED on the read-only file mapping: the
// next access faults them back in from the file). The kernel's reads of user memory never
// fault a page in, so map-trace's probe cannot read the message it dies with, as happens to a
// process that never touched that page before it crashed.
//
//go:noinline
func fatalRaceUnmappedMessage() {
	// Said first: printing may touch the pages about to be dropped.
	fmt.Println("dropping the message pages")
	page := uintptr(os.Getpagesize())
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pagemap:", err)
		os.Exit(1)
	}
	for i := range mapMessages {
		// reflect.StringHeader, not unsafe.StringData: the fixtures build with Go 1.19.
		data := (*reflect.StringHeader)(unsafe.Pointer(&mapMessages[i])).Data
		start := data &^ (page - 1)
		end := (data + uintptr(len(mapMessages[i])) + page - 1) &^ (page - 1)
		b := unsafe.Slice((*byte)(unsafe.Pointer(start)), end-start)
		if err := syscall.Madvise(b, syscall.MADV_DONTNEED); err != nil {
			fmt.Fprintln(os.Stderr, "madvise:", err)
			os.Exit(1)
		}
		// Bit 63 of a page's pagemap entry: present in the page tables.
		for p := start; p < end; p += page {
			var entry [8]byte
			if _, err := pagemap.ReadAt(entry[:], int64(p/page)*8); err != nil {
				fmt.Fprintln(os.Stderr, "pagemap:", err)
				os.Exit(1)
			}
			if entry[7]&0x80 != 0 {
				fmt.Fprintf(os.Stderr, "message page %#x still present\n", p)
				os.Exit(1)
			}
		}
	}
	fatalRace()
}
