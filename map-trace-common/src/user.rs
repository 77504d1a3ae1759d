//! Userspace half: lets aya copy the shared types in and out of eBPF maps.

use crate::{config::ProcConfig, event::Finding, stack::UserStack, state};

// SAFETY: all are #[repr(C)], Copy, made of integers with explicit padding fields, so every
// bit pattern is valid and there are no uninitialised bytes.
unsafe impl aya::Pod for ProcConfig {}
unsafe impl aya::Pod for Finding {}
unsafe impl aya::Pod for crate::fatal::Fatal {}
unsafe impl aya::Pod for state::MapKey {}
unsafe impl aya::Pod for state::MapState {}
unsafe impl aya::Pod for state::IterKey {}
unsafe impl aya::Pod for state::IterState {}
unsafe impl aya::Pod for state::GoKey {}
unsafe impl aya::Pod for state::PendingAssign {}
unsafe impl aya::Pod for UserStack {}
