//! Go's function table (`.gopclntab`): function names and addresses, source lines and inlined
//! frames, read without `.symtab` or DWARF so that stripped binaries work too.
//!
//! The layouts follow `cmd/link/internal/ld/pcln.go`, `runtime/symtab.go` and
//! `runtime/runtime2.go` of Go 1.16 to 1.27. Three table formats exist:
//!
//! | magic        | Go          | function entries                  | `_func` fixed part      |
//! |--------------|-------------|-----------------------------------|-------------------------|
//! | `0xfffffffa` | 1.16, 1.17  | absolute pointer-sized PCs        | pointer + 36 bytes      |
//! | `0xfffffff0` | 1.18, 1.19  | `u32` offsets from `runtime.text` | 40 bytes                |
//! | `0xfffffff1` | 1.20 – 1.27 | `u32` offsets from `runtime.text` | 44 bytes (+`startLine`) |
//!
//! Go 1.18+ funcdata are `u32` offsets from `moduledata.gofunc`, so inline trees need the
//! moduledata too: `.go.module` in Go 1.26+, otherwise found by its pointers into the table.
//!
//! Everything read from the binary is untrusted: every read is bounds-checked and every count is
//! checked against the data that has to hold it, so a damaged file gives an error, never a panic.
//!
//! The reading is split by job: `header` (the pcHeader and the function table), `image` (the
//! ELF image as loaded: finding the table, the moduledata and `runtime.text`) and `pcvalue`
//! (pc-value tables: source lines, and the inline trees).

mod header;
mod image;
mod pcvalue;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::Function;
use crate::bytes::{Backing, Bytes};
use header::{Header, Names, Table, parse_functab, parse_header};
use image::{Image, find_moduledata, gofunc_candidates, locate, resolve_text_start};
use pcvalue::Region;

pub use image::moduledata_fields;

const MAGIC_GO12: u32 = 0xffff_fffb;
const MAGIC_GO116: u32 = 0xffff_fffa;
const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;

#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    #[error("no .gopclntab section")]
    Missing,
    #[error("malformed .gopclntab: {0}")]
    Malformed(String),
    #[error("unsupported .gopclntab format (magic {magic:#010x}): {what}")]
    Unsupported { magic: u32, what: &'static str },
    #[error("cannot find runtime.text: {0}")]
    NoTextStart(String),
}

fn malformed(msg: impl Into<String>) -> PclntabError {
    PclntabError::Malformed(msg.into())
}

/// Which layout the table uses; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl Format {
    /// Size of the fixed part of `_func`, before its pcdata and funcdata arrays.
    fn func_size(self, ptr_size: usize) -> usize {
        match self {
            Format::Go116 => ptr_size + 36,
            Format::Go118 => 40,
            Format::Go120 => 44,
        }
    }

    /// Offset of the `nameoff` field in `_func`; the fields after it keep their relative order in
    /// every format, so the others are derived from this one.
    fn nameoff_at(self, ptr_size: usize) -> usize {
        match self {
            Format::Go116 => ptr_size,
            Format::Go118 | Format::Go120 => 4,
        }
    }

    /// Size of `runtime.inlinedCall` and the offsets of its name and parentPc fields.
    fn inlined_call(self) -> (usize, usize, usize) {
        match self {
            // parent i16, funcID u8, pad, file i32, line i32, func_ i32, parentPc i32.
            Format::Go116 | Format::Go118 => (20, 12, 16),
            // funcID u8, pad [3], nameOff i32, parentPc i32, startLine i32.
            Format::Go120 => (16, 4, 8),
        }
    }
}

/// Little/big endian and pointer size reads on untrusted bytes.
#[derive(Clone, Copy, Debug)]
struct Rd {
    big: bool,
    ptr_size: usize,
}

impl Rd {
    fn u32(self, data: &[u8], off: usize) -> Option<u32> {
        let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(self, data: &[u8], off: usize) -> Option<u64> {
        let b: [u8; 8] = data.get(off..off.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    fn word(self, data: &[u8], off: usize) -> Option<u64> {
        if self.ptr_size == 4 {
            self.u32(data, off).map(u64::from)
        } else {
            self.u64(data, off)
        }
    }
}

/// A function as the table keeps it: its name stays in the table's bytes (a 150,000-function
/// binary would otherwise hold as many strings); [`Function`]s are made on demand.
#[derive(Clone, Copy, Debug)]
struct Func {
    entry: u64,
    /// The next function's entry (for the last one, the table's end PC).
    end: u64,
    nameoff: u32,
}

/// The function table of one Go binary.
pub struct Pclntab {
    funcs: Vec<Func>,
    names: Names,
    /// Built on the first lookup by name (analysis); symbolizing never needs it.
    by_name: std::sync::OnceLock<HashMap<String, usize>>,
    text_start: u64,
    header: Header,
    /// The table, from the pcHeader on: a range of the mapped file where it can be.
    data: Bytes,
    func_offs: Vec<usize>,
    /// `moduledata.gofunc` (Go 1.18+): the base of funcdata offsets.
    gofunc: Option<u64>,
    /// Go 1.16: each function's inline tree address (0: none), relocated at read time.
    inl_trees_116: Vec<u64>,
    inl_region: Option<Region>,
}

impl std::fmt::Debug for Pclntab {
    // The table copies are megabytes; show what identifies the table instead.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pclntab")
            .field("format", &self.header.format)
            .field("functions", &self.funcs.len())
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .field("gofunc", &self.gofunc.map(|g| format!("{g:#x}")))
            .finish_non_exhaustive()
    }
}

impl Pclntab {
    /// Reads the function table of `file`, resolving `runtime.text` the way the binary's Go
    /// version stores it.
    pub fn read(file: &object::File<'_>) -> Result<Self, PclntabError> {
        Self::read_in(file, &Backing::default())
    }

    /// Like [`Pclntab::read`], keeping what it holds on to as ranges of `backing` (the file's
    /// mapping) rather than copies: the table of a 95 MB binary is 28 MB.
    pub fn read_in(file: &object::File<'_>, backing: &Backing) -> Result<Self, PclntabError> {
        let img = Image::from_file(file);
        let (pcln_addr, data) = locate(file, &img).ok_or(PclntabError::Missing)?;
        let data = match data {
            std::borrow::Cow::Borrowed(s) => backing.keep(s),
            std::borrow::Cow::Owned(v) => Bytes::Owned(v),
        };
        let header = parse_header(&data, img.big)?;
        if header.rd.ptr_size != img.ptr_size {
            return Err(malformed(format!(
                "pointer size {} in a {}-bit file",
                header.rd.ptr_size,
                img.ptr_size * 8
            )));
        }
        let md = find_moduledata(file, &img, pcln_addr, &header);
        let text_start = resolve_text_start(file, &img, pcln_addr, &header, md)?;
        let word = |off: usize| img.word(pcln_addr.checked_add(off as u64)?);
        let table = parse_functab(&data, &header, text_start, &word)?;
        let mut t = Pclntab::from_parts(header, data, table, text_start);
        if t.header.format == Format::Go116 {
            t.attach_inline_trees_116(&img, pcln_addr, backing);
        } else {
            let candidates = gofunc_candidates(file, &img, &t.header, md);
            t.attach_gofunc(&img, &candidates, backing);
        }
        Ok(t)
    }

    fn from_parts(header: Header, data: Bytes, table: Table, text_start: u64) -> Self {
        Pclntab {
            funcs: table.funcs,
            names: table.names,
            by_name: std::sync::OnceLock::new(),
            text_start,
            header,
            data,
            func_offs: table.func_offs,
            gofunc: None,
            inl_trees_116: Vec::new(),
            inl_region: None,
        }
    }

    /// All functions, sorted by entry address. `end` is the next function's entry (for the last
    /// one, the table's end PC), so it includes the alignment padding after the code.
    pub fn functions(&self) -> Vec<Function> {
        (0..self.funcs.len())
            .filter_map(|i| self.function_of(i))
            .collect()
    }

    fn function_of(&self, i: usize) -> Option<Function> {
        let f = self.funcs.get(i)?;
        Some(Function {
            name: self.name_of(f)?,
            entry: f.entry,
            end: f.end,
        })
    }

    fn name_of(&self, f: &Func) -> Option<String> {
        self.names.get(&self.data, f.nameoff)
    }

    /// The function with this exact Go symbol name, e.g. `internal/runtime/maps.(*Iter).Next`.
    ///
    /// The linker stores names with everything between the first `[` and the last `]` replaced
    /// by `...` (generic instantiations, array-type helpers such as `type:.eq.[...]T`), so such
    /// functions are found under that form; when several share it, this returns the lowest.
    pub fn function(&self, name: &str) -> Option<Function> {
        let by_name = self.by_name.get_or_init(|| {
            let mut m = HashMap::with_capacity(self.funcs.len());
            for (i, f) in self.funcs.iter().enumerate() {
                // Keep the lowest address when a name repeats.
                if let Some(n) = self.name_of(f) {
                    m.entry(n).or_insert(i);
                }
            }
            m
        });
        by_name.get(name).and_then(|&i| self.function_of(i))
    }

    /// The `runtime.text` that function entries were computed from. For the Go 1.16/1.17 format,
    /// whose entries are absolute, this is the first function's entry.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// The table format, which tells the Go version range.
    pub fn format(&self) -> Format {
        self.header.format
    }

    /// `moduledata.gofunc`, the base of funcdata offsets, when it was found (Go 1.18+).
    pub fn gofunc(&self) -> Option<u64> {
        self.gofunc
    }

    /// The function whose `[entry, end)` contains `pc`.
    pub fn function_at(&self, pc: u64) -> Option<Function> {
        self.index_at(pc).and_then(|i| self.function_of(i))
    }

    fn index_at(&self, pc: u64) -> Option<usize> {
        let i = self
            .funcs
            .partition_point(|f| f.entry <= pc)
            .checked_sub(1)?;
        (pc < self.funcs.get(i)?.end).then_some(i)
    }
}
