//! gobin: everything map-trace learns from a Go executable file.
//!
//! Given the path of a Go binary (or its bytes), this crate reads, before anything is attached:
//! * the ELF container: architecture, PIE, linker, address ↔ file offset (`elf`, read through
//!   `input`, which refuses FIFOs, devices and oversized files);
//! * the Go build info: version and GOEXPERIMENTs (`buildinfo`), hence the map implementation,
//!   classic or Swiss (`mapimpl`);
//! * the functions: `.symtab`, or Go's own function table for stripped binaries (`symbols`,
//!   `pclntab`, which also gives source lines and inlined frames for symbolizing);
//! * where the runtime keeps the fields the probes read (`offsets`: DWARF when the binary has it,
//!   a built-in table otherwise) and the Go type names of map descriptors (`gotypes`, which can also
//!   read a descriptor from a running process, through `/proc/PID/mem`);
//! * the machine code (`disasm`): where to attach inside a function, past its stack check, and
//!   where the map iterator's step function reports "iteration finished" (`disasm::iter_end`);
//! * which runtime functions each probe role sits on, per map implementation (`runtime`, which
//!   also holds each implementation's own field layout).
//!
//! [`GoBinary::read`] gathers the facts of one binary in one pass; the daemon plans its probes
//! on them.
//!
//! It is a crate of its own because none of this needs a kernel: no aya, no tokio, no eBPF.
//! The parsers take untrusted input (any file a user names, any process's executable), so they
//! are tested and fuzzed on their own, and the daemon (planning, attaching, tracing) only
//! consumes their results.

pub mod binary;
pub mod buildid;
pub mod buildinfo;
pub mod buildversion;
pub mod bytes;
pub mod disasm;
pub mod dwarf;
pub mod elf;
pub mod error;
pub mod gotypes;
pub mod input;
pub mod mapimpl;
pub mod offsets;
pub mod pclntab;
pub mod runtime;
pub mod symbols;

use serde::Serialize;

pub use binary::{GoBinary, OffsetsSource};
pub use error::TargetError;
pub use mapimpl::MapImpl;

/// CPU architecture of a Go binary. Only the two with Go's register ABI and frame pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A function of the target binary: where its code starts and ends (virtual addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub entry: u64,
    /// One past the last byte of the function.
    pub end: u64,
}
