//! Resolve: turns the kernel's references in a finding (stack keys, the map type's address)
//! into frames (`symbolize`, from the binary's line tables) and a type name (gobin's
//! `gotypes`), per traced process.

pub mod memory;
pub mod symbolize;

use std::collections::HashMap;
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData};
use gobin::bytes::Backing;
use gobin::elf::ElfImage;
use gobin::gotypes::{TypeLayout, TypeNames};
use map_trace_common::stack::UserStack;
use memory::ProcMem;

use crate::plan::GoTarget;
use crate::resolve::symbolize::{Frame, Symbolizer};

/// Symbolized stacks kept; past this the cache starts over (stacks are re-read from the kernel).
const CACHE_LIMIT: usize = 65_536;

/// What findings of any process of one executable need: its line tables and type names.
/// Shared by every process of that binary.
pub struct BinaryInfo {
    symbols: Symbolizer,
    /// The binary's type names, or why they cannot be read.
    types: Result<TypeNames, String>,
    /// The tables above may be ranges of the file's mapping: the file, to check that it is
    /// still whole before they are read (a file truncated under a mapping faults: SIGBUS).
    mapped: Option<(std::fs::File, Backing)>,
    /// Where the file's loadable segments go, to read constants by address (`file_bytes`).
    segments: Option<gobin::elf::Segments>,
}

/// What one traced process needs for its findings.
pub struct ProcessInfo {
    binary: Arc<BinaryInfo>,
    /// Runtime minus link-time address of the executable (PIE); 0 otherwise.
    bias: u64,
    /// For type descriptors made at run time (reflect.MapOf), which the file does not hold.
    mem: ProcMem,
    /// Where it runs (cgroup, container, unit, pod), read when it was attached.
    location: Arc<crate::discover::location::Location>,
}

pub struct Resolver {
    stacks: BpfHashMap<MapData, u64, UserStack>,
    processes: HashMap<u32, ProcessInfo>,
    /// Binary id → its symbols and whether it is PIE.
    binaries: HashMap<u32, (Arc<BinaryInfo>, bool)>,
    cache: HashMap<(u32, u64), Vec<Frame>>,
    /// Stack keys a finding named that the kernel table no longer held (evicted).
    pub lost: u64,
}

impl Resolver {
    pub fn new(stacks: BpfHashMap<MapData, u64, UserStack>) -> Self {
        Resolver {
            stacks,
            processes: HashMap::new(),
            binaries: HashMap::new(),
            cache: HashMap::new(),
            lost: 0,
        }
    }

    pub fn add_process(&mut self, pid: u32, info: ProcessInfo) {
        self.processes.insert(pid, info);
    }

    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Drops what was kept for a process that exited, after its last findings were read. Its
    /// stacks in the kernel table go later, with other exited processes' (`forget_stacks`).
    pub fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.cache.retain(|&(p, _), _| p != pid);
    }

    /// Removes the kernel stacks of exited processes, in one pass over the table.
    pub fn forget_stacks(&mut self, dead: &std::collections::HashSet<u32>) {
        let keys: Vec<u64> = self
            .stacks
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, s)| dead.contains(&s.tgid))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let _ = self.stacks.remove(&k);
        }
    }

    /// The processes that have stacks in the kernel's table.
    pub fn stack_tgids(&self) -> std::collections::HashSet<u32> {
        self.stacks
            .iter()
            .filter_map(Result::ok)
            .map(|(_, s)| s.tgid)
            .collect()
    }

    /// Entries in the kernel's stack table.
    pub fn stack_entries(&self) -> usize {
        self.stacks.keys().filter(Result::is_ok).count()
    }

    /// Makes a binary's symbols available to findings of processes never registered (they
    /// exited before the daemon met them); `pie`: their load bias is unknown, so not then.
    pub fn add_binary(&mut self, id: u32, info: Arc<BinaryInfo>, pie: bool) {
        self.binaries.insert(id, (info, pie));
    }

    pub fn remove_binary(&mut self, id: u32) {
        self.binaries.remove(&id);
    }

    /// Runs `f` with what the addresses of one finding of process `pid` (of executable
    /// `binary`) resolve against: that process, or for a process never registered, its binary
    /// when it is not PIE (loaded where it was linked, whichever process it was).
    /// Where a traced process runs, if it was attached.
    pub fn location(&self, pid: u32) -> Option<Arc<crate::discover::location::Location>> {
        self.processes.get(&pid).map(|p| p.location.clone())
    }

    pub fn with_lookup<R>(
        &mut self,
        pid: u32,
        binary: u32,
        f: impl FnOnce(&mut Lookup<'_>) -> R,
    ) -> R {
        let fallback;
        let p = match self.processes.get(&pid) {
            Some(p) => Some(p),
            None => match self.binaries.get(&binary) {
                Some((info, false)) => {
                    fallback = ProcessInfo::new(pid, info.clone(), 0);
                    Some(&fallback)
                }
                _ => None,
            },
        };
        let mut lookup = Lookup {
            p: p.filter(|p| p.binary.intact()),
            pid,
            stacks: Stacks {
                table: &self.stacks,
                cache: &mut self.cache,
                lost: &mut self.lost,
            },
        };
        f(&mut lookup)
    }
}

/// One finding's view of the resolver (`Resolver::with_lookup`).
pub struct Lookup<'a> {
    p: Option<&'a ProcessInfo>,
    pid: u32,
    stacks: Stacks<'a>,
}

impl Lookup<'_> {
    /// The frames of a stack key, runtime frames trimmed; empty for 0 or an evicted stack.
    pub fn stack(&mut self, key: u64) -> Vec<Frame> {
        self.stacks.get(self.p, self.pid, key)
    }

    /// The frames of a stack key, runtime frames included.
    pub fn untrimmed(&self, key: u64) -> Vec<Frame> {
        self.stacks.untrimmed(self.p, key)
    }

    /// Fills `buf` with the executable's bytes at the process's address `addr`, read from the
    /// file (for a constant the process could not be read for).
    pub fn read_file(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.p
            .is_some_and(|p| p.binary.file_bytes(addr.wrapping_sub(p.bias), buf))
    }

    /// The Go type name of the map type descriptor at `addr`.
    pub fn map_type(&self, addr: u64) -> String {
        match self.p {
            Some(p) => p.map_type(addr),
            None => "map[?]? (unknown process)".into(),
        }
    }
}

/// The stack table and its symbolized cache, borrowed apart from the processes.
struct Stacks<'a> {
    table: &'a BpfHashMap<MapData, u64, UserStack>,
    cache: &'a mut HashMap<(u32, u64), Vec<Frame>>,
    lost: &'a mut u64,
}

impl Stacks<'_> {
    fn get(&mut self, p: Option<&ProcessInfo>, pid: u32, key: u64) -> Vec<Frame> {
        if key == 0 {
            return Vec::new();
        }
        if let Some(frames) = self.cache.get(&(pid, key)) {
            return frames.clone();
        }
        let Ok(raw) = self.table.get(&key, 0) else {
            *self.lost += 1;
            return Vec::new();
        };
        let Some(p) = p else {
            return Vec::new();
        };
        let frames = p.binary.symbols.stack(&p.link_pcs(&raw));
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert((pid, key), frames.clone());
        frames
    }

    /// A stack's frames with the runtime's own kept; not cached (a crash's, once). Empty when
    /// `get` found nothing (and counted it).
    fn untrimmed(&self, p: Option<&ProcessInfo>, key: u64) -> Vec<Frame> {
        match (p, self.table.get(&key, 0)) {
            (Some(p), Ok(raw)) if key != 0 => p.binary.symbols.stack_untrimmed(&p.link_pcs(&raw)),
            _ => Vec::new(),
        }
    }
}

impl BinaryInfo {
    /// Reads the line tables and type names of an executable.
    pub fn new(image: &ElfImage, target: &GoTarget) -> Result<Self, crate::error::TargetError> {
        let layout = TypeLayout::from(&target.offsets);
        let types = image.object().map_err(|e| e.to_string()).and_then(|file| {
            TypeNames::read_in(&file, target.version.minor, layout, image.backing())
        });
        Ok(BinaryInfo {
            symbols: Symbolizer::new(image, 0)?,
            types,
            mapped: None,
            segments: None,
        })
    }

    /// Ties the tables to the file they map, so `intact` can check it.
    pub fn mapped_from(mut self, file: &std::fs::File, image: &ElfImage) -> Self {
        if let Ok(f) = file.try_clone() {
            self.mapped = Some((f, image.backing().clone()));
            self.segments = Some(image.segments());
        }
        self
    }

    /// Fills `buf` with the file's bytes at link-time address `addr` (a constant such as a
    /// fatal error's message); false when the file is not mapped whole or does not hold them.
    fn file_bytes(&self, addr: u64, buf: &mut [u8]) -> bool {
        let (Some((_, backing)), Some(segments)) = (&self.mapped, &self.segments) else {
            return false;
        };
        let bytes = segments
            .file_offset(addr)
            .filter(|_| self.intact())
            .and_then(|offset| backing.at(offset, buf.len()));
        match bytes {
            Some(b) => {
                buf.copy_from_slice(b);
                true
            }
            None => false,
        }
    }

    /// Whether the tables can be read now: the file they map has not been truncated. A file
    /// rewritten in place is retired at its next exec; until then its findings are shown
    /// without frames rather than read from a half-written file.
    fn intact(&self) -> bool {
        self.mapped
            .as_ref()
            .is_none_or(|(f, backing)| f.metadata().is_ok_and(|m| backing.intact(m.len())))
    }

    /// A warning for the user when map types cannot be named for this process.
    pub fn types_warning(&self) -> Option<String> {
        self.types
            .as_ref()
            .err()
            .map(|e| format!("map types will be shown by size only: {e}"))
    }
}

impl ProcessInfo {
    /// `bias` is where `pid` loaded the executable (see `process::load_bias`).
    pub fn new(pid: u32, binary: Arc<BinaryInfo>, bias: u64) -> Self {
        ProcessInfo {
            binary,
            bias,
            mem: ProcMem::new(pid).with_load_bias(bias),
            location: Arc::default(),
        }
    }

    /// With where it runs, read from /proc now.
    pub fn located(mut self, pid: u32) -> Self {
        self.location = Arc::new(crate::discover::location::Location::of(
            std::path::Path::new("/proc"),
            pid,
        ));
        self
    }

    /// A captured stack's return addresses as link-time addresses of the executable.
    fn link_pcs(&self, raw: &UserStack) -> Vec<u64> {
        raw.frames()
            .iter()
            .map(|pc| pc.wrapping_sub(self.bias))
            .collect()
    }

    fn map_type(&self, addr: u64) -> String {
        if addr == 0 {
            return "map[?]? (type not captured)".into();
        }
        match &self.binary.types {
            Ok(t) => t
                .map_type(addr.wrapping_sub(self.bias), Some(&self.mem))
                .display(),
            Err(_) => "map[?]? (the binary's type data is unreadable)".into(),
        }
    }
}
