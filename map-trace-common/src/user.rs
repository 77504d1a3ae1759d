//! Userspace half: lets aya copy the shared types in and out of eBPF maps.

use crate::{config::ProcConfig, event::Finding, stack::UserStack, state};

/// All are #[repr(C)], Copy, made of integers with explicit padding fields, so every bit
/// pattern is valid and there are no uninitialised bytes.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: see above.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

pod!(
    ProcConfig,
    Finding,
    crate::event::Repeats,
    crate::fatal::Fatal,
    state::MapKey,
    state::MapState,
    state::IterKey,
    state::IterState,
    UserStack,
);
