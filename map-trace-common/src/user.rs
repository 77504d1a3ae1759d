//! Userspace half: lets aya copy the shared types in and out of eBPF maps.
