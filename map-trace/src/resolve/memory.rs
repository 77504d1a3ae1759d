//! A live process's memory, for the type descriptors the runtime allocated (not in the file).

use std::fs::File;
use std::os::unix::fs::FileExt as _;

use gobin::gotypes::Memory;

/// A live process's memory through `/proc/PID/mem`.
pub struct ProcMem {
    mem: Option<File>,
    bias: u64,
}

impl ProcMem {
    /// Opens `/proc/PID/mem` now; if that fails (no such process, no ptrace access) every read
    /// returns false, which callers report as an unreadable descriptor.
    pub fn new(pid: u32) -> Self {
        ProcMem {
            mem: File::open(format!("/proc/{pid}/mem")).ok(),
            bias: 0,
        }
    }

    /// The executable's load bias (runtime minus link-time address), needed for PIE targets.
    pub fn with_load_bias(mut self, bias: u64) -> Self {
        self.bias = bias;
        self
    }
}

impl Memory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.mem
            .as_ref()
            .is_some_and(|f| f.read_exact_at(buf, addr).is_ok())
    }

    fn load_bias(&self) -> u64 {
        self.bias
    }
}
