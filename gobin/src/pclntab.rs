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

use std::collections::HashMap;

use object::{
    Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationFlags, RelocationKind,
    RelocationTarget, SectionFlags, SectionKind,
};

use crate::Function;
use crate::bytes::{Backing, Bytes};

const MAGIC_GO12: u32 = 0xffff_fffb;
const MAGIC_GO116: u32 = 0xffff_fffa;
const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;

/// `runtime/symtab.go` `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree`, unchanged since Go 1.12.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u8 = 3;

/// Word index of `moduledata.text` (after `pcHeader`, six slices, `findfunctab`, `minpc`,
/// `maxpc`): +176 on 64-bit, unchanged from Go 1.16 to 1.27.
const MODULEDATA_TEXT_WORD: u64 = 22;

/// Inlining deeper than this is treated as a corrupt (cyclic) inline tree.
const MAX_INLINE_DEPTH: usize = 1024;

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

/// A NUL-terminated string starting at `off`.
fn c_str(data: &[u8], off: usize) -> Option<String> {
    let tail = data.get(off..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(tail.get(..len)?).into_owned())
}

/// Go's `readvarint` for pc-value tables: at most 5 bytes for a `u32`.
fn varint(data: &[u8], off: usize) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let b = *data.get(off.checked_add(i)?)?;
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// funcnametab with the positions of its NUL terminators, so that looking up a name costs a
/// binary search instead of a scan (a crafted table could otherwise make reading quadratic).
#[derive(Clone, Debug)]
struct Names {
    start: usize,
    end: usize,
    nuls: Vec<usize>,
}

impl Names {
    fn new(data: &[u8], h: &Header) -> Self {
        // The table ends where the next one starts; the header does not store its length.
        let end = [h.cutab, h.filetab, h.pctab, h.functab]
            .into_iter()
            .filter(|&o| o > h.funcnametab)
            .min()
            .unwrap_or(data.len())
            .min(data.len());
        let start = h.funcnametab.min(end);
        let nuls = data
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == 0)
            .map(|(i, _)| start + i)
            .collect();
        Names { start, end, nuls }
    }

    fn get(&self, data: &[u8], name_off: u32) -> Option<String> {
        let at = self.start.checked_add(name_off as usize)?;
        if at >= self.end {
            return None;
        }
        let nul = *self.nuls.get(self.nuls.partition_point(|&p| p < at))?;
        Some(String::from_utf8_lossy(data.get(at..nul)?).into_owned())
    }

    /// Whether `name_off` starts a non-empty name (not the middle of one).
    fn is_start(&self, data: &[u8], name_off: u32) -> bool {
        let Some(at) = self.start.checked_add(name_off as usize) else {
            return false;
        };
        at < self.end
            && data.get(at).is_some_and(|&b| b != 0)
            && (at == self.start || data.get(at - 1) == Some(&0))
    }
}

/// The parsed pcHeader. Offsets are relative to the header start.
#[derive(Clone, Debug)]
struct Header {
    format: Format,
    quantum: u8,
    rd: Rd,
    nfunc: usize,
    /// Offset of the textStart word (Go 1.18+ only).
    text_start_off: Option<usize>,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

fn parse_header(data: &[u8], big: bool) -> Result<Header, PclntabError> {
    let rd = Rd { big, ptr_size: 8 };
    let magic = rd
        .u32(data, 0)
        .ok_or_else(|| malformed(format!("{} bytes is too short for a header", data.len())))?;
    let format = match magic {
        MAGIC_GO116 => Format::Go116,
        MAGIC_GO118 => Format::Go118,
        MAGIC_GO120 => Format::Go120,
        MAGIC_GO12 => {
            return Err(PclntabError::Unsupported {
                magic,
                what: "Go 1.2 to 1.15 table, not supported",
            });
        }
        _ => {
            return Err(PclntabError::Unsupported {
                magic,
                what: "unknown magic (not a Go 1.2+ table)",
            });
        }
    };
    let (pad, quantum, ptr_size) = match data.get(4..8) {
        Some(&[a, b, q, p]) => ((a, b), q, p),
        _ => {
            return Err(malformed(format!(
                "{} bytes is too short for a header",
                data.len()
            )));
        }
    };
    if pad != (0, 0) {
        return Err(malformed(format!("header padding is {pad:?}, want zeros")));
    }
    if !matches!(quantum, 1 | 2 | 4) {
        return Err(malformed(format!("pc quantum {quantum}")));
    }
    if !matches!(ptr_size, 4 | 8) {
        return Err(malformed(format!("pointer size {ptr_size}")));
    }
    let rd = Rd {
        big,
        ptr_size: usize::from(ptr_size),
    };
    // Go 1.18 inserted textStart as the third word; the 1.16 header has 7 words, later ones 8.
    let nwords = if format == Format::Go116 { 7 } else { 8 };
    let need = 8 + nwords * rd.ptr_size;
    if data.len() < need {
        return Err(malformed(format!(
            "{} bytes is too short for a {need}-byte header",
            data.len()
        )));
    }
    let word = |i: usize| rd.word(data, 8 + i * rd.ptr_size).unwrap_or(0);
    let offset = |i: usize, what: &str| -> Result<usize, PclntabError> {
        let v = word(i);
        usize::try_from(v)
            .ok()
            .filter(|&v| v >= need && v <= data.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{what} offset {v:#x} outside the {:#x}-byte table",
                    data.len()
                ))
            })
    };
    let nfunc = word(0);
    let first = if format == Format::Go116 { 2 } else { 3 };
    let header = Header {
        format,
        quantum,
        rd,
        nfunc: usize::try_from(nfunc)
            .map_err(|_| malformed(format!("function count {nfunc:#x}")))?,
        text_start_off: (format != Format::Go116).then_some(8 + 2 * rd.ptr_size),
        funcnametab: offset(first, "funcnametab")?,
        cutab: offset(first + 1, "cutab")?,
        filetab: offset(first + 2, "filetab")?,
        pctab: offset(first + 3, "pctab")?,
        functab: offset(first + 4, "functab")?,
    };
    let field = if format == Format::Go116 {
        rd.ptr_size
    } else {
        4
    };
    // The function table holds nfunc (entry, funcoff) pairs and one end PC.
    let functab_len = header
        .nfunc
        .checked_mul(2)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| n.checked_mul(field));
    match functab_len.and_then(|l| l.checked_add(header.functab)) {
        Some(end) if end <= data.len() => Ok(header),
        _ => Err(malformed(format!(
            "{} functions do not fit: function table at {:#x} in {:#x} bytes",
            header.nfunc,
            header.functab,
            data.len()
        ))),
    }
}

/// What the function table yields, independent of where runtime.text comes from in the file.
#[derive(Debug)]
struct Table {
    names: Names,
    funcs: Vec<Func>,
    /// Offset of each function's `_func` in the table data, parallel to `funcs`.
    func_offs: Vec<usize>,
}

/// Reads the function table. `word` reads a relocated pointer-sized word at a table offset: the
/// 1.16 format stores absolute PCs, which PIE binaries relocate.
fn parse_functab(
    data: &[u8],
    h: &Header,
    text_start: u64,
    word: &dyn Fn(usize) -> Option<u64>,
) -> Result<Table, PclntabError> {
    let rd = h.rd;
    let field = if h.format == Format::Go116 {
        rd.ptr_size
    } else {
        4
    };
    let func_size = h.format.func_size(rd.ptr_size);
    let nameoff_at = h.format.nameoff_at(rd.ptr_size);
    let names = Names::new(data, h);
    let entry_at = |i: usize| -> Result<u64, PclntabError> {
        let off = h.functab + i * 2 * field;
        let v = if h.format == Format::Go116 {
            word(off)
        } else {
            rd.u32(data, off)
                .and_then(|o| text_start.checked_add(u64::from(o)))
        };
        v.ok_or_else(|| malformed(format!("function table entry {i} unreadable")))
    };
    let mut funcs: Vec<Func> = Vec::with_capacity(h.nfunc);
    let mut func_offs = Vec::with_capacity(h.nfunc);
    for i in 0..h.nfunc {
        let entry = entry_at(i)?;
        let funcoff = if h.format == Format::Go116 {
            rd.word(data, h.functab + (i * 2 + 1) * field)
        } else {
            rd.u32(data, h.functab + (i * 2 + 1) * field).map(u64::from)
        }
        .ok_or_else(|| malformed(format!("function table entry {i} unreadable")))?;
        let pos = usize::try_from(funcoff)
            .ok()
            .and_then(|o| o.checked_add(h.functab))
            .filter(|&p| p.checked_add(func_size).is_some_and(|e| e <= data.len()))
            .ok_or_else(|| {
                malformed(format!(
                    "function {i}: _func offset {funcoff:#x} outside the table"
                ))
            })?;
        let own_entry = if h.format == Format::Go116 {
            word(pos)
        } else {
            rd.u32(data, pos)
                .and_then(|o| text_start.checked_add(u64::from(o)))
        };
        if own_entry != Some(entry) {
            return Err(malformed(format!(
                "function {i}: _func entry {own_entry:#x?} differs from the function table's {entry:#x}"
            )));
        }
        if let Some(prev) = funcs.last()
            && prev.entry > entry
        {
            return Err(malformed(format!(
                "function table not sorted: entry {i} at {entry:#x} follows {:#x}",
                prev.entry
            )));
        }
        let nameoff = rd
            .u32(data, pos + nameoff_at)
            .ok_or_else(|| malformed(format!("function {i}: name offset unreadable")))?;
        if names.get(data, nameoff).is_none() {
            return Err(malformed(format!(
                "function {i} at {entry:#x}: name offset {nameoff:#x} outside funcnametab"
            )));
        }
        funcs.push(Func {
            entry,
            end: entry,
            nameoff,
        });
        func_offs.push(pos);
    }
    let end = entry_at(h.nfunc)?;
    if let Some(last) = funcs.last()
        && last.entry > end
    {
        return Err(malformed(format!(
            "function table end {end:#x} before the last entry {:#x}",
            last.entry
        )));
    }
    let ends: Vec<u64> = funcs
        .iter()
        .skip(1)
        .map(|f| f.entry)
        .chain(std::iter::once(end))
        .collect();
    for (f, e) in funcs.iter_mut().zip(ends) {
        f.end = e;
    }
    Ok(Table {
        names,
        funcs,
        func_offs,
    })
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

/// An allocated section of the file, by virtual address.
#[derive(Clone, Debug)]
struct Sect<'a> {
    addr: u64,
    data: &'a [u8],
    exec: bool,
    writable: bool,
}

/// The loaded image as the linker laid it out (load bias 0), with dynamic relocations applied on
/// read, so pointers in PIE data read as their link-time addresses.
#[derive(Debug)]
struct Image<'a> {
    sections: Vec<Sect<'a>>,
    /// Address of a relocated word -> its link-time value.
    relocs: HashMap<u64, u64>,
    big: bool,
    ptr_size: usize,
}

impl<'a> Image<'a> {
    fn from_file(file: &object::File<'a>) -> Self {
        let mut sections = Vec::new();
        for s in file.sections() {
            if s.address() == 0 || matches!(s.kind(), SectionKind::UninitializedData) {
                continue;
            }
            let Ok(data) = s.data() else { continue };
            if data.is_empty() {
                continue;
            }
            let writable = match s.flags() {
                SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_WRITE) != 0,
                _ => false,
            };
            sections.push(Sect {
                addr: s.address(),
                data,
                exec: s.kind() == SectionKind::Text,
                writable,
            });
        }
        let mut img = Image {
            sections,
            relocs: HashMap::new(),
            big: !file.is_little_endian(),
            ptr_size: if file.is_64() { 8 } else { 4 },
        };
        img.relocs = collect_relocs(file, &img);
        img
    }

    fn rd(&self) -> Rd {
        Rd {
            big: self.big,
            ptr_size: self.ptr_size,
        }
    }

    fn section(&self, addr: u64) -> Option<&Sect<'a>> {
        self.sections
            .iter()
            .find(|s| addr >= s.addr && addr - s.addr < s.data.len() as u64)
    }

    /// The bytes from `addr` to the end of its section.
    fn tail(&self, addr: u64) -> Option<&'a [u8]> {
        let s = self.section(addr)?;
        s.data.get(usize::try_from(addr - s.addr).ok()?..)
    }

    fn stored_word(&self, addr: u64) -> Option<u64> {
        self.rd().word(self.tail(addr)?, 0)
    }

    /// The pointer-sized word at `addr` as the dynamic loader would leave it at load bias 0.
    fn word(&self, addr: u64) -> Option<u64> {
        match self.relocs.get(&addr) {
            Some(&v) => Some(v),
            None => self.stored_word(addr),
        }
    }

    fn is_exec(&self, addr: u64) -> bool {
        self.section(addr).is_some_and(|s| s.exec)
    }

    fn has_exec(&self) -> bool {
        self.sections.iter().any(|s| s.exec)
    }
}

/// Link-time values of the words that the dynamic loader patches: `R_*_RELATIVE` (the addend) and
/// absolute relocations against defined dynamic symbols (symbol + addend).
fn collect_relocs(file: &object::File<'_>, img: &Image<'_>) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    let Some(relocs) = file.dynamic_relocations() else {
        return out;
    };
    let relative = match file.architecture() {
        object::Architecture::X86_64 => object::elf::R_X86_64_RELATIVE,
        object::Architecture::Aarch64 => object::elf::R_AARCH64_RELATIVE,
        object::Architecture::I386 => object::elf::R_386_RELATIVE,
        object::Architecture::Arm => object::elf::R_ARM_RELATIVE,
        _ => u32::MAX,
    };
    let dynsyms = file.dynamic_symbol_table();
    for (addr, r) in relocs {
        let RelocationFlags::Elf { r_type } = r.flags() else {
            continue;
        };
        // Without an explicit addend (REL), the stored word already is the link-time value.
        let addend = if r.has_implicit_addend() {
            match img.stored_word(addr) {
                Some(w) => w as i64,
                None => continue,
            }
        } else {
            r.addend()
        };
        let value = if r_type == relative {
            addend as u64
        } else if r.kind() == RelocationKind::Absolute
            && usize::from(r.size()) == img.ptr_size * 8
            && let RelocationTarget::Symbol(idx) = r.target()
            && let Some(sym) = dynsyms.as_ref().and_then(|t| t.symbol_by_index(idx).ok())
            && !sym.is_undefined()
        {
            sym.address().wrapping_add_signed(addend)
        } else {
            continue;
        };
        out.insert(addr, value);
    }
    out
}

/// Where `runtime.firstmoduledata` is, and the fields the table needs from it.
#[derive(Clone, Copy, Debug)]
struct Moduledata {
    addr: u64,
}

impl Moduledata {
    /// Address of the pointer-sized field with this word index.
    fn field(self, word: u64, ptr_size: usize) -> Option<u64> {
        self.addr.checked_add(word.checked_mul(ptr_size as u64)?)
    }
}

/// Checks that `addr` holds a moduledata whose pcHeader and table slices point into this table.
fn is_moduledata(img: &Image<'_>, addr: u64, pcln_addr: u64, h: &Header) -> bool {
    let p = img.ptr_size as u64;
    let at = |word: u64| img.word(addr.wrapping_add(word.wrapping_mul(p)));
    let expect = |off: usize| pcln_addr.checked_add(off as u64);
    // pcHeader, then the data pointers of funcnametab, cutab, filetab, pctab, pclntable, ftab.
    at(0) == Some(pcln_addr)
        && at(1) == expect(h.funcnametab)
        && at(4) == expect(h.cutab)
        && at(7) == expect(h.filetab)
        && at(10) == expect(h.pctab)
        && at(13) == expect(h.functab)
        && at(16) == expect(h.functab)
}

/// Finds `runtime.firstmoduledata`: the `.go.module` section (Go 1.26+), the symbol, or a word in
/// writable data that points at the table and passes [`is_moduledata`].
fn find_moduledata(
    file: &object::File<'_>,
    img: &Image<'_>,
    pcln_addr: u64,
    h: &Header,
) -> Option<Moduledata> {
    let check = |addr: u64| is_moduledata(img, addr, pcln_addr, h).then_some(Moduledata { addr });
    if let Some(md) = file
        .section_by_name(".go.module")
        .and_then(|s| check(s.address()))
    {
        return Some(md);
    }
    if let Some(md) = symbol_address(file, "runtime.firstmoduledata").and_then(check) {
        return Some(md);
    }
    // PIE: the pcHeader field is a relocation whose value is the table's address.
    let mut relocated: Vec<u64> = img
        .relocs
        .iter()
        .filter(|&(_, &v)| v == pcln_addr)
        .map(|(&a, _)| a)
        .collect();
    relocated.sort_unstable();
    if let Some(md) = relocated.into_iter().find_map(check) {
        return Some(md);
    }
    let p = img.ptr_size;
    for s in img.sections.iter().filter(|s| s.writable) {
        let mut off = 0;
        while off + p <= s.data.len() {
            if img.rd().word(s.data, off) == Some(pcln_addr)
                && let Some(md) = s.addr.checked_add(off as u64).and_then(check)
            {
                return Some(md);
            }
            off += p;
        }
    }
    None
}

/// `runtime.firstmoduledata`'s address and the link-time values (PIE relocations applied) of its
/// pointer-sized fields at the byte offsets `fields`, for readers of fields this module does not
/// use (the type data range). `None` when the table or the moduledata cannot be found.
pub fn moduledata_fields(
    file: &object::File<'_>,
    fields: &[u64],
) -> Option<(u64, Vec<Option<u64>>)> {
    let img = Image::from_file(file);
    let (pcln_addr, data) = locate(file, &img)?;
    let header = parse_header(&data, img.big).ok()?;
    let md = find_moduledata(file, &img, pcln_addr, &header)?;
    let values = fields
        .iter()
        .map(|&off| img.word(md.addr.checked_add(off)?))
        .collect();
    Some((md.addr, values))
}

fn symbol_address(file: &object::File<'_>, name: &str) -> Option<u64> {
    let table = file.symbol_table()?;
    table
        .symbols()
        .find(|s| s.name() == Ok(name) && !s.is_undefined())
        .map(|s| s.address())
}

/// Finds the table: by section name, through `.go.module`'s pcHeader pointer, by symbol, or by
/// scanning (an external linker may merge `.data.rel.ro.gopclntab` into `.data.rel.ro`).
/// The table's address and bytes: borrowed from the file, unless the section was compressed.
fn locate<'a>(
    file: &object::File<'a>,
    img: &Image<'a>,
) -> Option<(u64, std::borrow::Cow<'a, [u8]>)> {
    use std::borrow::Cow;
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = file.section_by_name(name)
            && let Ok(data) = s.uncompressed_data()
        {
            return Some((s.address(), data));
        }
    }
    let from_addr = |addr: u64| img.tail(addr).map(|d| (addr, Cow::Borrowed(d)));
    if let Some(found) = file
        .section_by_name(".go.module")
        .and_then(|s| img.word(s.address()))
        .and_then(from_addr)
    {
        return Some(found);
    }
    if let Some(found) = symbol_address(file, "runtime.pcheader").and_then(from_addr) {
        return Some(found);
    }
    let big = !file.is_little_endian();
    for s in img.sections.iter().filter(|s| !s.exec) {
        let mut off = 0;
        while off + 8 <= s.data.len() {
            if let Some(tail) = s.data.get(off..)
                && looks_like_header(tail, big)
            {
                return Some((s.addr.wrapping_add(off as u64), Cow::Borrowed(tail)));
            }
            off += img.ptr_size;
        }
    }
    None
}

/// A cheap pre-check, then a full header parse and a look at the first function's `_func`, so
/// that a stray magic number in data is not mistaken for the table.
fn looks_like_header(tail: &[u8], big: bool) -> bool {
    let rd = Rd { big, ptr_size: 8 };
    if !matches!(
        rd.u32(tail, 0),
        Some(MAGIC_GO116 | MAGIC_GO118 | MAGIC_GO120)
    ) || tail.get(4..6) != Some(&[0, 0])
    {
        return false;
    }
    let Ok(h) = parse_header(tail, big) else {
        return false;
    };
    if h.nfunc == 0 || h.format == Format::Go116 {
        // A 1.16 entry is a relocated absolute PC, which this check cannot compare cheaply.
        return h.nfunc > 0 && h.format == Format::Go116;
    }
    let (Some(entry), Some(funcoff)) = (h.rd.u32(tail, h.functab), h.rd.u32(tail, h.functab + 4))
    else {
        return false;
    };
    h.functab
        .checked_add(funcoff as usize)
        .and_then(|p| h.rd.u32(tail, p))
        == Some(entry)
}

/// Iterator over a pc-value table; see [`Pclntab::pc_values`].
struct PcValues<'a> {
    data: &'a [u8],
    p: usize,
    pc: u64,
    val: i32,
    first: bool,
    quantum: u64,
    done: bool,
}

impl Iterator for PcValues<'_> {
    type Item = Result<(i32, u64), ()>;

    // Every step consumes at least two bytes, so the walk ends within the data length.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = (|| {
            let (uv, n) = varint(self.data, self.p)?;
            if uv == 0 && !self.first {
                return Some(None);
            }
            self.first = false;
            self.p += n;
            // Zig-zag decoding, as in the runtime's `-(uvdelta & 1) ^ (uvdelta >> 1)`.
            let delta = ((uv >> 1) as i32) ^ -((uv & 1) as i32);
            self.val = self.val.wrapping_add(delta);
            let (pcd, n) = varint(self.data, self.p)?;
            self.p += n;
            self.pc = self.pc.checked_add(u64::from(pcd) * self.quantum)?;
            Some(Some((self.val, self.pc)))
        })();
        match step {
            Some(Some(item)) => Some(Ok(item)),
            Some(None) => {
                self.done = true;
                None
            }
            None => {
                self.done = true;
                Some(Err(()))
            }
        }
    }
}

/// Where the inline trees are: a copy of the bytes from `addr` to the end of their section.
#[derive(Clone, Debug)]
struct Region {
    addr: u64,
    bytes: Bytes,
}

impl Region {
    fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.addr)?).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
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

    /// Source file and line of the instruction at `pc`; for inlined code, the innermost
    /// (inlined) function's position, as `go tool objdump` prints it.
    pub fn source_line(&self, pc: u64) -> Option<(String, u32)> {
        let i = self.index_at(pc)?;
        self.file_line(i, pc)
    }

    /// The logical frames at `pc`, innermost first: `(function, file, line)`. One frame when
    /// `pc` is not in inlined code. Empty when `pc` is in no function or the information needed
    /// is missing (no line table at `pc`, or an inline tree that could not be located).
    pub fn inlined_frames(&self, pc: u64) -> Vec<(String, String, u32)> {
        self.try_inlined_frames(pc).unwrap_or_default()
    }

    fn try_inlined_frames(&self, pc: u64) -> Option<Vec<(String, String, u32)>> {
        let i = self.index_at(pc)?;
        let f = self.funcs.get(i)?;
        let table = self.pcdata_table(i, PCDATA_INL_TREE_INDEX).unwrap_or(0);
        let tree = self.inl_tree(i);
        let (size, name_at, parent_at) = self.header.format.inlined_call();
        let rd = self.header.rd;
        let mut frames = Vec::new();
        let mut cur = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self.file_line(i, cur)?;
            // The runtime treats a missing or exhausted index table as "not inlined".
            let ix = if table == 0 {
                -1
            } else {
                self.pcvalue(i, table, cur).unwrap_or(-1)
            };
            let Ok(ix) = usize::try_from(ix) else {
                frames.push((self.name_of(f)?, file, line));
                return Some(frames);
            };
            let entry_addr = tree?.checked_add(u64::try_from(ix.checked_mul(size)?).ok()?)?;
            let call = self.inl_region.as_ref()?.get(entry_addr, size)?;
            let name_off = rd.u32(call, name_at)?;
            let parent_pc = rd.u32(call, parent_at)?;
            frames.push((self.func_name(name_off)?, file, line));
            cur = f.entry.checked_add(u64::from(parent_pc))?;
            if cur >= f.end {
                return None;
            }
        }
        None
    }

    fn func_name(&self, name_off: u32) -> Option<String> {
        self.names.get(&self.data, name_off)
    }

    /// The `u32` field of function `i`'s `_func` that is `field` bytes past `nameoff`.
    fn func_u32(&self, i: usize, field: usize) -> Option<u32> {
        let base = *self.func_offs.get(i)?;
        let at = base + self.header.format.nameoff_at(self.header.rd.ptr_size) + field;
        self.header.rd.u32(&self.data, at)
    }

    fn npcdata(&self, i: usize) -> Option<u32> {
        // nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata
        self.func_u32(i, 24)
    }

    fn nfuncdata(&self, i: usize) -> Option<u8> {
        let base = *self.func_offs.get(i)?;
        let size = self.header.format.func_size(self.header.rd.ptr_size);
        self.data.get(base + size - 1).copied()
    }

    /// Offset of the byte after `_func`'s fixed part; pcdata offsets follow it.
    fn pcdata_start(&self, i: usize) -> Option<usize> {
        Some(*self.func_offs.get(i)? + self.header.format.func_size(self.header.rd.ptr_size))
    }

    fn pcdata_table(&self, i: usize, table: u32) -> Option<u32> {
        if table >= self.npcdata(i)? {
            return None;
        }
        let at = self.pcdata_start(i)? + table as usize * 4;
        self.header.rd.u32(&self.data, at)
    }

    /// Offset in `data` of funcdata slot `slot` (Go 1.18+: `u32` offsets from gofunc).
    fn funcdata_off(&self, i: usize, slot: u8) -> Option<u32> {
        if slot >= self.nfuncdata(i)? {
            return None;
        }
        let at = (self.npcdata(i)? as usize)
            .checked_add(usize::from(slot))?
            .checked_mul(4)?
            .checked_add(self.pcdata_start(i)?)?;
        self.header
            .rd
            .u32(&self.data, at)
            .filter(|&o| o != u32::MAX)
    }

    fn inl_tree(&self, i: usize) -> Option<u64> {
        if self.header.format == Format::Go116 {
            return self.inl_trees_116.get(i).copied().filter(|&a| a != 0);
        }
        let off = self.funcdata_off(i, FUNCDATA_INL_TREE)?;
        self.gofunc?.checked_add(u64::from(off))
    }

    /// Runtime `pcvalue`: the value the table at `table` (an offset into pctab) gives `pc`;
    /// `None` when `pc` is past the table's end or the table is damaged.
    fn pcvalue(&self, i: usize, table: u32, pc: u64) -> Option<i32> {
        self.pc_values(i, table)?
            .find(|r| r.as_ref().map_or(true, |&(_, end)| pc < end))?
            .ok()
            .map(|(v, _)| v)
    }

    /// Walks a varint-delta pc-value table from the function entry, yielding each value with
    /// the PC where it stops applying; an `Err` item ends a damaged table.
    fn pc_values(&self, i: usize, table: u32) -> Option<PcValues<'_>> {
        if table == 0 {
            return None;
        }
        Some(PcValues {
            data: &self.data,
            p: self.header.pctab.checked_add(table as usize)?,
            pc: self.funcs.get(i)?.entry,
            val: -1,
            first: true,
            quantum: u64::from(self.header.quantum),
            done: false,
        })
    }

    /// Where the code of the function at `entry` ends as its line table covers it: the size
    /// `.symtab` records, without the alignment padding that [`Function::end`] includes.
    pub fn code_end(&self, entry: u64) -> Option<u64> {
        let i = self.index_at(entry)?;
        let f = self.funcs.get(i)?;
        if f.entry != entry {
            return None;
        }
        let table = self.func_u32(i, 20)?;
        let mut last = None;
        for step in self.pc_values(i, table)? {
            last = Some(step.ok()?.1);
        }
        last.map(|end| end.min(f.end))
    }

    fn file_line(&self, i: usize, pc: u64) -> Option<(String, u32)> {
        // nameoff, args, deferreturn, pcsp, pcfile (+16), pcln (+20), npcdata, cuOffset (+28).
        let pcfile = self.func_u32(i, 16)?;
        let pcln = self.func_u32(i, 20)?;
        let cu = self.func_u32(i, 28)?;
        let fileno = u32::try_from(self.pcvalue(i, pcfile, pc)?).ok()?;
        let line = u32::try_from(self.pcvalue(i, pcln, pc)?).ok()?;
        if cu == u32::MAX {
            return None;
        }
        let idx = usize::try_from(u64::from(cu) + u64::from(fileno)).ok()?;
        let at = self.header.cutab.checked_add(idx.checked_mul(4)?)?;
        let fileoff = self.header.rd.u32(&self.data, at)?;
        if fileoff == u32::MAX {
            return None;
        }
        let file = c_str(
            &self.data,
            self.header.filetab.checked_add(fileoff as usize)?,
        )?;
        Some((file, line))
    }

    /// Go 1.18+: picks the first gofunc candidate under which every inline tree is readable and
    /// starts with a valid function name, and keeps a copy of the bytes the trees are in.
    fn attach_gofunc(&mut self, img: &Image<'_>, candidates: &[u64], backing: &Backing) {
        let with_trees: Vec<(usize, u32)> = (0..self.funcs.len())
            .filter_map(|i| Some((i, self.funcdata_off(i, FUNCDATA_INL_TREE)?)))
            .collect();
        if with_trees.is_empty() {
            self.gofunc = candidates.first().copied();
            return;
        }
        let (size, name_at, _) = self.header.format.inlined_call();
        for &g in candidates {
            let Some(tail) = img.tail(g) else { continue };
            let ok = with_trees.iter().all(|&(_, off)| {
                let first = (off as usize)
                    .checked_add(name_at)
                    .and_then(|at| self.header.rd.u32(tail, at));
                (off as usize)
                    .checked_add(size)
                    .is_some_and(|e| e <= tail.len())
                    && first.is_some_and(|n| self.names.is_start(&self.data, n))
            });
            if ok {
                self.gofunc = Some(g);
                self.inl_region = Some(Region {
                    addr: g,
                    bytes: backing.keep(tail),
                });
                return;
            }
        }
    }

    /// Go 1.16/1.17: funcdata are absolute, pointer-aligned pointers after the pcdata offsets.
    fn attach_inline_trees_116(&mut self, img: &Image<'_>, pcln_addr: u64, backing: &Backing) {
        let p = self.header.rd.ptr_size;
        let mut trees = vec![0u64; self.funcs.len()];
        for (i, tree) in trees.iter_mut().enumerate() {
            if self.nfuncdata(i).unwrap_or(0) <= FUNCDATA_INL_TREE {
                continue;
            }
            let (Some(start), Some(n)) = (self.pcdata_start(i), self.npcdata(i)) else {
                continue;
            };
            // Go 1.16 aligns the funcdata pointers after the pcdata offsets.
            let slot = (n as usize)
                .checked_mul(4)
                .and_then(|o| o.checked_add(start))
                .and_then(|o| o.checked_next_multiple_of(p))
                .and_then(|o| o.checked_add(usize::from(FUNCDATA_INL_TREE) * p))
                .and_then(|o| pcln_addr.checked_add(o as u64));
            *tree = slot.and_then(|a| img.word(a)).unwrap_or(0);
        }
        if let Some(&lo) = trees.iter().filter(|&&a| a != 0).min()
            && let Some(tail) = img.tail(lo)
        {
            self.inl_region = Some(Region {
                addr: lo,
                bytes: backing.keep(tail),
            });
        }
        self.inl_trees_116 = trees;
    }
}

/// runtime.text: the pcHeader word (Go 1.18 – 1.25, relocated in PIE), else
/// `moduledata.text` (Go 1.26+ leave the header word 0), else the `runtime.text` symbol. A
/// candidate outside executable code is skipped: a wrong base would shift every function.
fn resolve_text_start(
    file: &object::File<'_>,
    img: &Image<'_>,
    pcln_addr: u64,
    h: &Header,
    md: Option<Moduledata>,
) -> Result<u64, PclntabError> {
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    match h.text_start_off {
        Some(off) => candidates.push((
            "pcHeader textStart",
            img.word(pcln_addr.saturating_add(off as u64)),
        )),
        None => {
            // Go 1.16 entries are absolute; report the first one as the base.
            let first = img.word(pcln_addr.saturating_add(h.functab as u64));
            candidates.push(("first function entry", first));
        }
    }
    candidates.push((
        "moduledata.text",
        md.and_then(|m| img.word(m.field(MODULEDATA_TEXT_WORD, img.ptr_size)?)),
    ));
    candidates.push(("symbol runtime.text", symbol_address(file, "runtime.text")));
    let check_exec = img.has_exec();
    for (what, v) in candidates {
        match v {
            Some(0) | None => tried.push(format!("{what}: absent")),
            Some(v) if check_exec && !img.is_exec(v) => {
                tried.push(format!("{what}: {v:#x} is not in executable code"))
            }
            Some(v) => return Ok(v),
        }
    }
    Err(PclntabError::NoTextStart(tried.join("; ")))
}

/// Possible `moduledata.gofunc` values. Its word index moved: 38 in Go 1.18/1.19, 40 in 1.20 –
/// 1.26 (`covctrs` added), 43 in 1.27 (`typedesclen`, `itaboffset`, `itabsize` added). The
/// symbol `go:func.*` (`go.func.*` before 1.20) is the same address when `.symtab` exists.
fn gofunc_candidates(
    file: &object::File<'_>,
    img: &Image<'_>,
    h: &Header,
    md: Option<Moduledata>,
) -> Vec<u64> {
    let mut out = Vec::new();
    if let Some(m) = md {
        let words: &[u64] = match h.format {
            Format::Go118 => &[38],
            _ => &[40, 43],
        };
        for &w in words {
            if let Some(v) = m.field(w, img.ptr_size).and_then(|a| img.word(a))
                && v != 0
            {
                out.push(v);
            }
        }
    }
    for name in ["go:func.*", "go.func.*"] {
        if let Some(a) = symbol_address(file, name) {
            out.push(a);
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a synthetic table (64-bit little endian) with functions given as (name, entry
    /// offset from text) and an end offset. With `inline`, `main.b` has inlined `runtime.c`
    /// for its first 8 bytes: its tree is at `TREE_ADDR` (Go 1.16) or gofunc + `TREE_OFF`.
    struct Builder {
        format: Format,
        funcs: Vec<(&'static str, u32)>,
        end: u32,
        text_word: u64,
        inline: bool,
    }

    const TREE_OFF: u64 = 0x10;
    const TREE_ADDR: u64 = 0x700000 + TREE_OFF;

    /// The inline tree: one call of `runtime.c` (name offset 14) whose call site is at +0x10.
    fn inline_tree(format: Format) -> Vec<u8> {
        let (size, name_at, parent_at) = format.inlined_call();
        let mut tree = vec![0u8; size];
        tree[name_at..name_at + 4].copy_from_slice(&14u32.to_le_bytes());
        tree[parent_at..parent_at + 4].copy_from_slice(&0x10u32.to_le_bytes());
        tree
    }

    impl Builder {
        fn new(format: Format) -> Self {
            Builder {
                format,
                funcs: vec![("main.a", 0x0), ("main.b", 0x40), ("runtime.c", 0x100)],
                end: 0x180,
                text_word: 0x401000,
                inline: false,
            }
        }

        fn build(&self) -> Vec<u8> {
            let ps = 8usize;
            let nwords = if self.format == Format::Go116 { 7 } else { 8 };
            let hdr_len = 8 + nwords * ps;
            let mut names = Vec::new();
            let mut name_offs = Vec::new();
            for (n, _) in &self.funcs {
                name_offs.push(names.len() as u32);
                names.extend_from_slice(n.as_bytes());
                names.push(0);
            }
            let funcnametab = hdr_len;
            let cutab = funcnametab + names.len();
            let cutab_bytes: Vec<u8> = [1u32, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
            let filetab = cutab + cutab_bytes.len();
            let files = b"\0main.go\0x.go\0".to_vec();
            let pctab = filetab + files.len();
            // Table at pctab+1: file index 1 (varint 4 = +2 from -1... see below) for 0x20 bytes.
            // value delta from -1 to 1 is +2 -> zig-zag 4; pc delta 0x20 (quantum 1).
            // Line table at pctab+4: -1 -> 10 is +11 -> 22; pc delta 0x10, then +1 -> 2, 0x10.
            // Inline index table at pctab+9: 0 for 8 bytes, then -1.
            let pct = vec![0u8, 4, 0x20, 0, 22, 0x10, 2, 0x10, 0, 2, 0x08, 1, 0x40, 0];
            let functab = (pctab + pct.len()).next_multiple_of(8);
            let field = if self.format == Format::Go116 { ps } else { 4 };
            let n = self.funcs.len();
            let fsize = self.format.func_size(ps);
            let mut func_pos = Vec::new();
            let mut pos = (n * 2 + 1) * field;
            for _ in 0..n {
                pos = pos.next_multiple_of(ps);
                func_pos.push(pos);
                // npcdata = 3, then room for 4 aligned funcdata slots
                pos += fsize + 3 * 4 + 8 + 4 * ps;
            }
            let total = functab + pos;
            let mut d = vec![0u8; total];
            d[0..4].copy_from_slice(
                &match self.format {
                    Format::Go116 => MAGIC_GO116,
                    Format::Go118 => MAGIC_GO118,
                    Format::Go120 => MAGIC_GO120,
                }
                .to_le_bytes(),
            );
            d[6] = 1;
            d[7] = 8;
            let mut words = vec![n as u64, 2];
            if self.format != Format::Go116 {
                words.push(self.text_word);
            }
            words.extend([funcnametab, cutab, filetab, pctab, functab].map(|v| v as u64));
            for (i, w) in words.iter().enumerate() {
                d[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
            }
            d[funcnametab..cutab].copy_from_slice(&names);
            d[cutab..filetab].copy_from_slice(&cutab_bytes);
            d[filetab..pctab].copy_from_slice(&files);
            d[pctab..pctab + pct.len()].copy_from_slice(&pct);
            let put = |d: &mut Vec<u8>, at: usize, v: u64, size: usize| {
                d[at..at + size].copy_from_slice(&v.to_le_bytes()[..size]);
            };
            for (i, &(_, off)) in self.funcs.iter().enumerate() {
                let entry = if self.format == Format::Go116 {
                    self.text_word + u64::from(off)
                } else {
                    u64::from(off)
                };
                put(&mut d, functab + 2 * i * field, entry, field);
                put(
                    &mut d,
                    functab + (2 * i + 1) * field,
                    func_pos[i] as u64,
                    field,
                );
                let f = functab + func_pos[i];
                put(
                    &mut d,
                    f,
                    entry,
                    if self.format == Format::Go116 { 8 } else { 4 },
                );
                let nb = self.format.nameoff_at(ps);
                put(&mut d, f + nb, u64::from(name_offs[i]), 4);
                put(&mut d, f + nb + 16, 1, 4); // pcfile
                put(&mut d, f + nb + 20, 4, 4); // pcln
                put(&mut d, f + nb + 24, 3, 4); // npcdata
                put(&mut d, f + nb + 28, 0, 4); // cuOffset
                if self.inline && i == 1 {
                    let pcdata = f + fsize;
                    put(&mut d, pcdata + 8, 9, 4);
                    d[pcdata - 1] = 4; // nfuncdata
                    let fd = pcdata + 12;
                    if self.format == Format::Go116 {
                        let fd = fd.next_multiple_of(ps);
                        put(&mut d, fd + 3 * ps, TREE_ADDR, ps);
                    } else {
                        for slot in 0..3 {
                            put(&mut d, fd + slot * 4, u64::from(u32::MAX), 4);
                        }
                        put(&mut d, fd + 12, TREE_OFF, 4);
                    }
                }
            }
            let end = if self.format == Format::Go116 {
                self.text_word + u64::from(self.end)
            } else {
                u64::from(self.end)
            };
            put(&mut d, functab + 2 * n * field, end, field);
            d
        }

        /// Parses like `read` does, with the stored text word as runtime.text.
        fn parse(&self, data: &[u8]) -> Result<Pclntab, PclntabError> {
            parse_bytes(data, self.text_word)
        }
    }

    fn parse_bytes(data: &[u8], text: u64) -> Result<Pclntab, PclntabError> {
        let h = parse_header(data, false)?;
        let rd = h.rd;
        let word = |off: usize| rd.word(data, off);
        let table = parse_functab(data, &h, text, &word)?;
        Ok(Pclntab::from_parts(h, data.to_vec().into(), table, text))
    }

    #[test]
    fn happy_path_all_formats() {
        for format in [Format::Go116, Format::Go118, Format::Go120] {
            let b = Builder::new(format);
            let t = b.parse(&b.build()).unwrap();
            let f = t.functions();
            assert_eq!(f.len(), 3, "{format:?}");
            assert_eq!(
                f[0],
                Function {
                    name: "main.a".into(),
                    entry: 0x401000,
                    end: 0x401040
                }
            );
            assert_eq!(f[2].end, 0x401180);
            assert_eq!(t.function("main.b").unwrap().entry, 0x401040);
            assert_eq!(t.function_at(0x40103f).unwrap().name, "main.a");
            assert_eq!(t.function_at(0x401040).unwrap().name, "main.b");
            assert!(t.function_at(0x401180).is_none());
            assert!(t.function_at(0x400fff).is_none());
            assert_eq!(t.format(), format);
            // file index 1 -> cutab[1] = 9 -> "x.go"; lines 10 then 11.
            assert_eq!(t.source_line(0x401000), Some(("x.go".into(), 10)));
            assert_eq!(t.source_line(0x401010), Some(("x.go".into(), 11)));
            assert_eq!(t.source_line(0x40101f), Some(("x.go".into(), 11)));
            // pcfile covers 0x20 bytes only.
            assert_eq!(t.source_line(0x401020), None);
            assert_eq!(
                t.inlined_frames(0x401001),
                vec![("main.a".into(), "x.go".into(), 10)]
            );
        }
    }

    #[test]
    fn code_end_follows_the_line_table() {
        let b = Builder::new(Format::Go120);
        let t = b.parse(&b.build()).unwrap();
        // Every function shares the 0x20-byte line table.
        assert_eq!(t.code_end(0x401000), Some(0x401020));
        assert_eq!(t.code_end(0x401100), Some(0x401120));
        assert_eq!(t.code_end(0x401001), None);
        assert_eq!(t.code_end(0x400000), None);
    }

    #[test]
    fn empty_table() {
        let mut b = Builder::new(Format::Go120);
        b.funcs.clear();
        b.end = 0;
        let t = b.parse(&b.build()).unwrap();
        assert!(t.functions().is_empty());
        assert!(t.function_at(0x401000).is_none());
    }

    #[test]
    fn rejects_old_and_unknown_magics() {
        let mut d = Builder::new(Format::Go120).build();
        d[0..4].copy_from_slice(&MAGIC_GO12.to_le_bytes());
        assert!(matches!(
            parse_header(&d, false),
            Err(PclntabError::Unsupported {
                magic: MAGIC_GO12,
                ..
            })
        ));
        d[0..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        assert!(matches!(
            parse_header(&d, false),
            Err(PclntabError::Unsupported { .. })
        ));
    }

    fn err_of(data: &[u8], text: u64) -> String {
        match parse_bytes(data, text) {
            Err(PclntabError::Malformed(m)) => m,
            other => panic!("want Malformed, got {other:?}"),
        }
    }

    #[test]
    fn header_errors() {
        let good = Builder::new(Format::Go120).build();
        let mut d = good.clone();
        d[4] = 1;
        assert!(err_of(&d, 0).contains("padding"));
        let mut d = good.clone();
        d[6] = 3;
        assert!(err_of(&d, 0).contains("quantum"));
        let mut d = good.clone();
        d[7] = 2;
        assert!(err_of(&d, 0).contains("pointer size"));
        let mut d = good.clone();
        // funcnametab offset beyond the data
        d[8 + 3 * 8..8 + 4 * 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(err_of(&d, 0).contains("funcnametab offset"));
        let mut d = good.clone();
        d[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err_of(&d, 0).contains("do not fit"));
        let mut d = good.clone();
        d[8..16].copy_from_slice(&1000u64.to_le_bytes());
        assert!(err_of(&d, 0).contains("do not fit"));
    }

    fn functab_off(d: &[u8]) -> usize {
        u64::from_le_bytes(d[8 + 7 * 8..8 + 8 * 8].try_into().unwrap()) as usize
    }

    #[test]
    fn functab_errors() {
        let good = Builder::new(Format::Go120).build();
        let ft = functab_off(&good);
        // _func offset out of range
        let mut d = good.clone();
        d[ft + 4..ft + 8].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        assert!(err_of(&d, 0x401000).contains("_func offset"));
        // _func entry disagrees with the table
        let mut d = good.clone();
        d[ft..ft + 4].copy_from_slice(&8u32.to_le_bytes());
        assert!(err_of(&d, 0x401000).contains("differs"));
        // unsorted: make entry 2 lower than entry 1, in both places
        let mut d = good.clone();
        let f2 = ft + u32::from_le_bytes(d[ft + 20..ft + 24].try_into().unwrap()) as usize;
        d[ft + 16..ft + 20].copy_from_slice(&0x20u32.to_le_bytes());
        d[f2..f2 + 4].copy_from_slice(&0x20u32.to_le_bytes());
        assert!(err_of(&d, 0x401000).contains("not sorted"));
        // end before the last entry
        let mut d = good.clone();
        d[ft + 24..ft + 28].copy_from_slice(&0x10u32.to_le_bytes());
        assert!(err_of(&d, 0x401000).contains("end"));
        // name offset outside funcnametab (no NUL before the end)
        let mut d = good.clone();
        let f0 = ft + u32::from_le_bytes(d[ft + 4..ft + 8].try_into().unwrap()) as usize;
        d[f0 + 4..f0 + 8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        assert!(err_of(&d, 0x401000).contains("name offset"));
        // entry overflow past u64
        assert!(err_of(&good, u64::MAX - 0x10).contains("unreadable"));
    }

    #[test]
    fn truncation_and_corruption_never_panic() {
        for format in [Format::Go116, Format::Go118, Format::Go120] {
            let mut b = Builder::new(format);
            b.inline = true;
            let good = b.build();
            let mut rodata = vec![0u8; TREE_OFF as usize];
            rodata.extend(inline_tree(format));
            // Only what follows the last function's fixed part may be cut unnoticed.
            let parsed = parse_bytes(&good, 0x401000).unwrap();
            let must_fail = parsed.func_offs[2] + format.func_size(8);
            for len in 0..good.len() {
                match parse_bytes(&good[..len], 0x401000) {
                    Ok(t) => {
                        assert!(len >= must_fail, "{format:?} len {len} parsed");
                        for pc in (0x400ff0..0x401190).step_by(3) {
                            let _ = t.source_line(pc);
                            let _ = t.inlined_frames(pc);
                        }
                    }
                    Err(PclntabError::Malformed(_)) => {}
                    Err(e) => panic!("{format:?} len {len}: {e}"),
                }
            }
            // Flip every byte to a few values; whatever parses must answer queries safely.
            for at in 0..good.len() {
                for v in [0u8, 0x7f, 0x80, 0xff] {
                    let mut d = good.clone();
                    d[at] = v;
                    if let Ok(mut t) = parse_bytes(&d, 0x401000) {
                        let img = image(&[(PCLN_ADDR, &d), (0x700000, &rodata)]);
                        if format == Format::Go116 {
                            t.attach_inline_trees_116(&img, PCLN_ADDR, &Backing::default());
                        } else {
                            t.attach_gofunc(&img, &[0x700000], &Backing::default());
                        }
                        for pc in (0x400ff0..0x401190).step_by(7) {
                            let _ = t.source_line(pc);
                            let _ = t.inlined_frames(pc);
                            let _ = t.function_at(pc);
                            let _ = t.code_end(pc);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pcvalue_table_end_and_bad_varint() {
        let b = Builder::new(Format::Go120);
        let mut d = b.build();
        let t = b.parse(&d).unwrap();
        assert_eq!(t.pcvalue(0, 4, 0x401000), Some(10));
        assert_eq!(t.pcvalue(0, 4, 0x401020), None);
        assert_eq!(t.pcvalue(0, 0, 0x401000), None);
        // An unterminated 6-byte varint is rejected.
        let pctab = t.header.pctab;
        for i in 0..6 {
            d[pctab + 4 + i] = 0xff;
        }
        let t = b.parse(&d).unwrap();
        assert_eq!(t.pcvalue(0, 4, 0x401000), None);
        assert_eq!(varint(&[0x80, 0x01], 0), Some((128, 2)));
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0x0f], 0),
            Some((u32::MAX, 5))
        );
        assert_eq!(varint(&[0x80], 0), None);
    }

    /// (name, sh_type, sh_flags, address, contents, sh_link)
    type SectionSpec = (&'static str, u32, u64, u64, Vec<u8>, u32);

    /// A minimal ELF64 little-endian x86_64 file: sections given as (name, type, flags, addr,
    /// data, link), plus `.shstrtab`.
    fn elf(sections: &[SectionSpec], et_type: u16) -> Vec<u8> {
        let mut shstr = vec![0u8];
        let mut name_offs = Vec::new();
        for (n, ..) in sections {
            name_offs.push(shstr.len() as u32);
            shstr.extend_from_slice(n.as_bytes());
            shstr.push(0);
        }
        let shstr_name = shstr.len() as u32;
        shstr.extend_from_slice(b".shstrtab\0");
        let mut out = vec![0u8; 64];
        let mut offs = Vec::new();
        for (.., data, _) in sections {
            out.resize(out.len().next_multiple_of(8), 0);
            offs.push(out.len() as u64);
            out.extend_from_slice(data);
        }
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&shstr);
        out.resize(out.len().next_multiple_of(8), 0);
        let shoff = out.len() as u64;
        let shnum = sections.len() as u16 + 2;
        let mut sh = |name: u32,
                      ty: u32,
                      flags: u64,
                      addr: u64,
                      off: u64,
                      size: u64,
                      link: u32,
                      entsize: u64| {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&link.to_le_bytes());
            out.extend_from_slice(
                &(if ty == object::elf::SHT_DYNSYM || ty == object::elf::SHT_SYMTAB {
                    1u32
                } else {
                    0
                })
                .to_le_bytes(),
            );
            out.extend_from_slice(&8u64.to_le_bytes());
            out.extend_from_slice(&entsize.to_le_bytes());
        };
        sh(0, 0, 0, 0, 0, 0, 0, 0);
        for (i, (_, ty, flags, addr, data, link)) in sections.iter().enumerate() {
            let entsize = match *ty {
                object::elf::SHT_RELA => 24,
                object::elf::SHT_DYNSYM | object::elf::SHT_SYMTAB => 24,
                _ => 0,
            };
            sh(
                name_offs[i],
                *ty,
                *flags,
                *addr,
                offs[i],
                data.len() as u64,
                *link,
                entsize,
            );
        }
        sh(
            shstr_name,
            object::elf::SHT_STRTAB,
            0,
            0,
            shstr_off,
            shstr.len() as u64,
            0,
            0,
        );
        // ELF header
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&et_type.to_le_bytes());
        out[18..20].copy_from_slice(&object::elf::EM_X86_64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&shnum.to_le_bytes());
        out[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());
        out
    }

    const ALLOC: u64 = object::elf::SHF_ALLOC as u64;
    const EXEC: u64 = ALLOC | object::elf::SHF_EXECINSTR as u64;
    const WRITE: u64 = ALLOC | object::elf::SHF_WRITE as u64;
    const PCLN_ADDR: u64 = 0x500000;

    fn text_section() -> SectionSpec {
        (
            ".text",
            object::elf::SHT_PROGBITS,
            EXEC,
            0x401000,
            vec![0xcc; 0x200],
            0,
        )
    }

    /// A moduledata whose table pointers match `pcln` at PCLN_ADDR, with `text` at +176 and
    /// gofunc in word 40.
    fn moduledata(pcln: &[u8], text: u64) -> Vec<u8> {
        let h = parse_header(pcln, false).unwrap();
        let mut md = vec![0u8; 400];
        let mut put = |w: usize, v: u64| md[w * 8..w * 8 + 8].copy_from_slice(&v.to_le_bytes());
        put(0, PCLN_ADDR);
        put(1, PCLN_ADDR + h.funcnametab as u64);
        put(4, PCLN_ADDR + h.cutab as u64);
        put(7, PCLN_ADDR + h.filetab as u64);
        put(10, PCLN_ADDR + h.pctab as u64);
        put(13, PCLN_ADDR + h.functab as u64);
        put(16, PCLN_ADDR + h.functab as u64);
        put(22, text);
        md
    }

    fn read(bytes: &[u8]) -> Result<Pclntab, PclntabError> {
        let file = object::File::parse(bytes).unwrap();
        Pclntab::read(&file)
    }

    #[test]
    fn read_plain_exe() {
        let pcln = Builder::new(Format::Go120).build();
        let bytes = elf(
            &[
                text_section(),
                (
                    ".gopclntab",
                    object::elf::SHT_PROGBITS,
                    ALLOC,
                    PCLN_ADDR,
                    pcln,
                    0,
                ),
            ],
            object::elf::ET_EXEC,
        );
        let t = read(&bytes).unwrap();
        assert_eq!(t.text_start(), 0x401000);
        assert_eq!(t.function("runtime.c").unwrap().entry, 0x401100);
    }

    #[test]
    fn read_missing_section() {
        let bytes = elf(&[text_section()], object::elf::ET_EXEC);
        assert!(matches!(read(&bytes), Err(PclntabError::Missing)));
    }

    #[test]
    fn read_go126_uses_go_module() {
        let mut b = Builder::new(Format::Go120);
        b.text_word = 0;
        let pcln = b.build();
        let md = moduledata(&pcln, 0x401100);
        let bytes = elf(
            &[
                text_section(),
                (
                    ".gopclntab",
                    object::elf::SHT_PROGBITS,
                    ALLOC,
                    PCLN_ADDR,
                    pcln,
                    0,
                ),
                (
                    ".go.module",
                    object::elf::SHT_PROGBITS,
                    WRITE,
                    0x600000,
                    md,
                    0,
                ),
            ],
            object::elf::ET_EXEC,
        );
        let t = read(&bytes).unwrap();
        assert_eq!(t.text_start(), 0x401100);
        assert_eq!(t.functions()[0].entry, 0x401100);
    }

    #[test]
    fn read_stripped_finds_moduledata_by_scanning() {
        let mut b = Builder::new(Format::Go120);
        b.text_word = 0;
        let pcln = b.build();
        let mut noptr = vec![0u8; 64];
        // A lone pointer to the table that is not a moduledata must be skipped.
        noptr[8..16].copy_from_slice(&PCLN_ADDR.to_le_bytes());
        noptr.extend(moduledata(&pcln, 0x401080));
        let bytes = elf(
            &[
                text_section(),
                (
                    ".gopclntab",
                    object::elf::SHT_PROGBITS,
                    ALLOC,
                    PCLN_ADDR,
                    pcln,
                    0,
                ),
                (
                    ".noptrdata",
                    object::elf::SHT_PROGBITS,
                    WRITE,
                    0x600000,
                    noptr,
                    0,
                ),
            ],
            object::elf::ET_EXEC,
        );
        assert_eq!(read(&bytes).unwrap().text_start(), 0x401080);
    }

    #[test]
    fn read_text_start_outside_code_falls_back_then_fails() {
        let mut b = Builder::new(Format::Go120);
        b.text_word = 0x900000;
        let pcln = b.build();
        let bytes = elf(
            &[
                text_section(),
                (
                    ".gopclntab",
                    object::elf::SHT_PROGBITS,
                    ALLOC,
                    PCLN_ADDR,
                    pcln,
                    0,
                ),
            ],
            object::elf::ET_EXEC,
        );
        match read(&bytes) {
            Err(PclntabError::NoTextStart(m)) => {
                assert!(m.contains("0x900000 is not in executable code"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    fn rela(addr: u64, r_type: u32, sym: u32, addend: i64) -> Vec<u8> {
        let mut v = addr.to_le_bytes().to_vec();
        v.extend_from_slice(&((u64::from(sym) << 32) | u64::from(r_type)).to_le_bytes());
        v.extend_from_slice(&addend.to_le_bytes());
        v
    }

    #[test]
    fn read_pie_uses_relative_relocation() {
        let mut b = Builder::new(Format::Go120);
        b.text_word = 0;
        let pcln = b.build();
        // One null dynamic symbol; .rela.dyn links to .dynsym (section 2).
        let dynsym = vec![0u8; 24];
        let relocs = rela(PCLN_ADDR + 24, object::elf::R_X86_64_RELATIVE, 0, 0x401040);
        let bytes = elf(
            &[
                text_section(),
                (
                    ".dynsym",
                    object::elf::SHT_DYNSYM,
                    ALLOC,
                    0x300000,
                    dynsym,
                    3,
                ),
                (
                    ".dynstr",
                    object::elf::SHT_STRTAB,
                    ALLOC,
                    0x300100,
                    vec![0],
                    0,
                ),
                (
                    ".rela.dyn",
                    object::elf::SHT_RELA,
                    ALLOC,
                    0x300200,
                    relocs,
                    2,
                ),
                (
                    ".data.rel.ro.gopclntab",
                    object::elf::SHT_PROGBITS,
                    WRITE,
                    PCLN_ADDR,
                    pcln,
                    0,
                ),
            ],
            object::elf::ET_DYN,
        );
        let t = read(&bytes).unwrap();
        assert_eq!(t.text_start(), 0x401040);
        assert_eq!(t.functions()[1].entry, 0x401080);
    }

    #[test]
    fn read_symtab_runtime_text_fallback_and_header_scan() {
        let mut b = Builder::new(Format::Go120);
        b.text_word = 0;
        let pcln = b.build();
        // The table inside a bigger section (as an external linker merges it), found by scanning.
        let mut relro = vec![0u8; 16];
        relro.extend_from_slice(&pcln);
        let strtab = b"\0runtime.text\0".to_vec();
        let mut symtab = vec![0u8; 24];
        let mut s = vec![0u8; 24];
        s[0..4].copy_from_slice(&1u32.to_le_bytes());
        s[4] = 2; // STT_FUNC, STB_LOCAL
        s[6..8].copy_from_slice(&1u16.to_le_bytes()); // section .text
        s[8..16].copy_from_slice(&0x401020u64.to_le_bytes());
        symtab.extend(s);
        let bytes = elf(
            &[
                text_section(),
                (".symtab", object::elf::SHT_SYMTAB, 0, 0, symtab, 3),
                (".strtab", object::elf::SHT_STRTAB, 0, 0, strtab, 0),
                (
                    ".data.rel.ro",
                    object::elf::SHT_PROGBITS,
                    WRITE,
                    PCLN_ADDR - 16,
                    relro,
                    0,
                ),
            ],
            object::elf::ET_EXEC,
        );
        let t = read(&bytes).unwrap();
        assert_eq!(t.text_start(), 0x401020);
        assert_eq!(t.function("main.b").unwrap().entry, 0x401060);
    }

    fn image<'a>(sections: &[(u64, &'a [u8])]) -> Image<'a> {
        Image {
            sections: sections
                .iter()
                .map(|&(addr, data)| Sect {
                    addr,
                    data,
                    exec: false,
                    writable: false,
                })
                .collect(),
            relocs: HashMap::new(),
            big: false,
            ptr_size: 8,
        }
    }

    #[test]
    fn inline_frames_all_formats() {
        for format in [Format::Go116, Format::Go118, Format::Go120] {
            let mut b = Builder::new(format);
            b.inline = true;
            let d = b.build();
            let mut t = b.parse(&d).unwrap();
            let mut rodata = vec![0xeeu8; TREE_OFF as usize];
            rodata.extend(inline_tree(format));
            let img = image(&[(PCLN_ADDR, &d), (0x700000, &rodata)]);
            if format == Format::Go116 {
                t.attach_inline_trees_116(&img, PCLN_ADDR, &Backing::default());
            } else {
                // Unmapped, then misaligned (names land mid-string), then right.
                t.attach_gofunc(&img, &[0x123, 0x700004, 0x700000], &Backing::default());
                assert_eq!(t.gofunc(), Some(0x700000), "{format:?}");
            }
            assert_eq!(
                t.inlined_frames(0x401040),
                vec![
                    ("runtime.c".into(), "x.go".into(), 10),
                    ("main.b".into(), "x.go".into(), 11),
                ],
                "{format:?}"
            );
            assert_eq!(
                t.inlined_frames(0x401048),
                vec![("main.b".into(), "x.go".into(), 10)]
            );
            // Functions without a tree are unaffected.
            assert_eq!(
                t.inlined_frames(0x401000),
                vec![("main.a".into(), "x.go".into(), 10)]
            );
        }
    }

    #[test]
    fn inline_frames_without_gofunc_or_with_cycle() {
        let mut b = Builder::new(Format::Go120);
        b.inline = true;
        let d = b.build();
        let mut t = b.parse(&d).unwrap();
        // No candidate fits: inlined PCs give nothing rather than a wrong answer.
        let junk = vec![0xeeu8; 64];
        t.attach_gofunc(
            &image(&[(0x700000, &junk)]),
            &[0x700000],
            &Backing::default(),
        );
        assert_eq!(t.gofunc(), None);
        assert!(t.inlined_frames(0x401040).is_empty());
        assert_eq!(t.inlined_frames(0x401048).len(), 1);
        // A parentPc pointing back into the inlined range is a cycle: cut off, no hang.
        let mut rodata = vec![0u8; TREE_OFF as usize];
        let mut tree = inline_tree(Format::Go120);
        tree[8..12].copy_from_slice(&0u32.to_le_bytes());
        rodata.extend(tree);
        t.attach_gofunc(
            &image(&[(0x700000, &rodata)]),
            &[0x700000],
            &Backing::default(),
        );
        assert_eq!(t.gofunc(), Some(0x700000));
        assert!(t.inlined_frames(0x401040).is_empty());
    }
}
