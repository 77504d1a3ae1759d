//! Turns the kernel's references in a finding (stack keys, the map type's address) into frames
//! and a type name, per traced process.

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};
use map_trace_common::stack::UserStack;

use crate::report::Report;
use crate::symbolize::{Frame, Symbolizer};
use crate::target::analysis::GoTarget;
use crate::target::elf::ElfImage;
use crate::target::gotypes::{ProcMem, TypeLayout, TypeNames};

/// Symbolized stacks kept; past this the cache starts over (stacks are re-read from the kernel).
const CACHE_LIMIT: usize = 65_536;

/// What one traced process needs for its findings.
pub struct ProcessInfo {
    symbols: Symbolizer,
    /// The binary's type names, or why they cannot be read.
    types: Result<TypeNames, String>,
    /// For type descriptors made at run time (reflect.MapOf), which the file does not hold.
    mem: ProcMem,
}

pub struct Resolver {
    stacks: BpfHashMap<MapData, u64, UserStack>,
    processes: HashMap<u32, ProcessInfo>,
    cache: HashMap<(u32, u64), Vec<Frame>>,
    /// Stack keys a finding named that the kernel table no longer held (evicted).
    pub lost: u64,
}

impl Resolver {
    pub fn new(stacks: BpfHashMap<MapData, u64, UserStack>) -> Self {
        Resolver {
            stacks,
            processes: HashMap::new(),
            cache: HashMap::new(),
            lost: 0,
        }
    }

    pub fn add_process(&mut self, pid: u32, info: ProcessInfo) {
        self.processes.insert(pid, info);
    }

    /// Fills the report's stacks and map type.
    pub fn resolve(&mut self, r: &mut Report) {
        r.writer_stack = self.stack(r.pid, r.writer_stack_key);
        r.iterator_stack = self.stack(r.pid, r.iterator_stack_key);
        r.map_type = match self.processes.get(&r.pid) {
            Some(p) => p.map_type(r.map_type_addr),
            None => "map[?]? (unknown process)".into(),
        };
    }

    fn stack(&mut self, pid: u32, key: u64) -> Vec<Frame> {
        if key == 0 {
            return Vec::new();
        }
        if let Some(frames) = self.cache.get(&(pid, key)) {
            return frames.clone();
        }
        let Ok(raw) = self.stacks.get(&key, 0) else {
            self.lost += 1;
            return Vec::new();
        };
        let Some(p) = self.processes.get(&pid) else {
            return Vec::new();
        };
        let frames = p.symbols.stack(raw.frames());
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert((pid, key), frames.clone());
        frames
    }
}

impl ProcessInfo {
    /// Reads what symbolizing `pid`'s findings needs; `bias` is its executable's load bias.
    pub fn new(
        pid: u32,
        image: &ElfImage,
        target: &GoTarget,
        bias: u64,
    ) -> Result<Self, crate::error::TargetError> {
        let layout = TypeLayout::from(&target.offsets);
        let types = image
            .object()
            .map_err(|e| e.to_string())
            .and_then(|file| TypeNames::read(&file, target.version.minor, layout));
        Ok(ProcessInfo {
            symbols: Symbolizer::new(image, bias)?,
            types,
            mem: ProcMem::new(pid).with_load_bias(bias),
        })
    }

    /// A warning for the user when map types cannot be named for this process.
    pub fn types_warning(&self) -> Option<String> {
        self.types
            .as_ref()
            .err()
            .map(|e| format!("map types will be shown by size only: {e}"))
    }

    fn map_type(&self, addr: u64) -> String {
        if addr == 0 {
            return "map[?]? (type not captured)".into();
        }
        match &self.types {
            Ok(t) => t
                .map_type(addr.wrapping_sub(self.symbols.bias()), Some(&self.mem))
                .display(),
            Err(_) => "map[?]? (the binary's type data is unreadable)".into(),
        }
    }
}
