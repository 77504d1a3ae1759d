//! The ELF image as the loader would lay it out: where the table is, `runtime.firstmoduledata`
//! and what the table needs from it (`runtime.text`, `gofunc`), with PIE relocations applied.

use std::collections::HashMap;

use object::{
    Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationFlags, RelocationKind,
    RelocationTarget, SectionFlags, SectionKind,
};

use super::header::{Header, looks_like_header, parse_header};
use super::{Format, PclntabError, Rd};

/// Word index of `moduledata.text` (after `pcHeader`, six slices, `findfunctab`, `minpc`,
/// `maxpc`): +176 on 64-bit, unchanged from Go 1.16 to 1.27.
const MODULEDATA_TEXT_WORD: u64 = 22;

/// An allocated section of the file, by virtual address.
#[derive(Clone, Debug)]
pub(super) struct Sect<'a> {
    pub(super) addr: u64,
    pub(super) data: &'a [u8],
    pub(super) exec: bool,
    pub(super) writable: bool,
}

/// The loaded image as the linker laid it out (load bias 0), with dynamic relocations applied on
/// read, so pointers in PIE data read as their link-time addresses.
#[derive(Debug)]
pub(super) struct Image<'a> {
    pub(super) sections: Vec<Sect<'a>>,
    /// Address of a relocated word -> its link-time value.
    pub(super) relocs: HashMap<u64, u64>,
    pub(super) big: bool,
    pub(super) ptr_size: usize,
}

impl<'a> Image<'a> {
    pub(super) fn from_file(file: &object::File<'a>) -> Self {
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
    pub(super) fn tail(&self, addr: u64) -> Option<&'a [u8]> {
        let s = self.section(addr)?;
        s.data.get(usize::try_from(addr - s.addr).ok()?..)
    }

    fn stored_word(&self, addr: u64) -> Option<u64> {
        self.rd().word(self.tail(addr)?, 0)
    }

    /// The pointer-sized word at `addr` as the dynamic loader would leave it at load bias 0.
    pub(super) fn word(&self, addr: u64) -> Option<u64> {
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
pub(super) struct Moduledata {
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
pub(super) fn find_moduledata(
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
pub(super) fn locate<'a>(
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

/// runtime.text: the pcHeader word (Go 1.18 – 1.25, relocated in PIE), else
/// `moduledata.text` (Go 1.26+ leave the header word 0), else the `runtime.text` symbol. A
/// candidate outside executable code is skipped: a wrong base would shift every function.
pub(super) fn resolve_text_start(
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
pub(super) fn gofunc_candidates(
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
