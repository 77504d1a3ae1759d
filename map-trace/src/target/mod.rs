//! Discover the target: everything map-trace learns from a Go binary before attaching anything.
//!
//! The data path starts here: `process` finds the executable of a pid, `elf` opens it, `buildinfo`
//! reads the Go version, `symbols` finds the runtime functions (`.symtab` or `.gopclntab`),
//! `prologue` finds where to attach inside each one, and `offsets` says where the runtime keeps the
//! fields the probes read (`dwarf` when the binary has it, a built-in table otherwise).

pub mod analysis;
pub mod buildinfo;
pub mod bytes;
pub mod dwarf;
pub mod elf;
pub mod exe_match;
pub mod gotypes;
pub mod iter_end;
pub mod mapimpl;
pub mod offsets;
pub mod pclntab;
pub mod process;
pub mod prologue;
pub mod symbols;

use serde::Serialize;

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
