//! What the start-up line says about a binary, and the memory its analysis leaves behind.

use super::Binary;
use crate::plan::{GoTarget, IterationMode};

pub(super) fn describe(t: &GoTarget, mode: IterationMode) -> String {
    let how = match t.effective_mode(mode) {
        IterationMode::Steps | IterationMode::Escalation => "",
        IterationMode::Ends => ", low overhead: each range seen at its start and end",
        IterationMode::Sentinel => {
            ", sentinel: each range's start and end compared, full probes for a while after a change"
        }
    };
    format!(
        "{} {} {} maps{how}",
        t.version,
        t.elf.arch,
        t.map_impl.name()
    )
}

pub(super) fn warnings(b: &Binary) -> Vec<String> {
    b.target
        .warnings
        .iter()
        .cloned()
        .chain(b.info.types_warning())
        .collect()
}

/// The analysis of a large binary makes and frees hundreds of thousands of small allocations
/// (its symbol table); glibc keeps the freed heap unless asked, which would leave a 95 MB
/// binary's daemon at twice the memory it uses.
pub(super) fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
