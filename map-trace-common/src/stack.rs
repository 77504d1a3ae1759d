//! User stacks captured by the probes: return addresses walked along Go's frame pointers,
//! stored once per distinct stack and referred to by a hash.

/// Frames kept per stack. Deeper stacks keep their innermost frames and are counted as
/// truncated (`counter::STACKS_TRUNCATED`).
pub const MAX_STACK_DEPTH: usize = 32;

/// Stacks kept at once (an LRU table: the oldest unused ones are evicted, and a finding whose
/// stack was evicted before the daemon read it is counted as lost).
pub const STACK_TABLE_ENTRIES: u32 = 8192;

/// `UserStack::flags`: the walk stopped at `MAX_STACK_DEPTH` with frames left.
pub const STACK_TRUNCATED: u32 = 1 << 0;

/// Return addresses, innermost first. The first is the call site of the probed runtime
/// function: read from the stack (amd64) or the link register (arm64), because at a function's
/// entry the caller's own frame record does not yet name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserStack {
    pub len: u32,
    pub flags: u32,
    /// The process the stack belongs to, so its entries can be removed when it exits.
    pub tgid: u32,
    pub _pad: u32,
    pub pcs: [u64; MAX_STACK_DEPTH],
}

impl Default for UserStack {
    fn default() -> Self {
        UserStack {
            len: 0,
            flags: 0,
            tgid: 0,
            _pad: 0,
            pcs: [0; MAX_STACK_DEPTH],
        }
    }
}

impl UserStack {
    /// The frames that were captured (never more than `MAX_STACK_DEPTH`).
    pub fn frames(&self) -> &[u64] {
        let n = (self.len as usize).min(MAX_STACK_DEPTH);
        &self.pcs[..n]
    }
}

/// FNV-1a step over a 64-bit word: the stack table's key is this over the tgid and every pc,
/// so equal stacks of one process share an entry.
pub const fn hash_step(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(0x0000_0100_0000_01b3)
}

pub const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
