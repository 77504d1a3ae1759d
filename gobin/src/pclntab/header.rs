//! The pcHeader and the function table: names, entries and `_func` offsets, every count
//! checked against the bytes that must hold it.

use super::{
    Format, Func, MAGIC_GO12, MAGIC_GO116, MAGIC_GO118, MAGIC_GO120, PclntabError, Rd, malformed,
};

/// funcnametab with the positions of its NUL terminators, so that looking up a name costs a
/// binary search instead of a scan (a crafted table could otherwise make reading quadratic).
#[derive(Clone, Debug)]
pub(super) struct Names {
    start: usize,
    end: usize,
    nuls: Vec<usize>,
}

impl Names {
    pub(super) fn new(data: &[u8], h: &Header) -> Self {
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

    pub(super) fn get(&self, data: &[u8], name_off: u32) -> Option<String> {
        let at = self.start.checked_add(name_off as usize)?;
        if at >= self.end {
            return None;
        }
        let nul = *self.nuls.get(self.nuls.partition_point(|&p| p < at))?;
        Some(String::from_utf8_lossy(data.get(at..nul)?).into_owned())
    }

    /// Whether `name_off` starts a non-empty name (not the middle of one).
    pub(super) fn is_start(&self, data: &[u8], name_off: u32) -> bool {
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
pub(super) struct Header {
    pub(super) format: Format,
    pub(super) quantum: u8,
    pub(super) rd: Rd,
    pub(super) nfunc: usize,
    /// Offset of the textStart word (Go 1.18+ only).
    pub(super) text_start_off: Option<usize>,
    pub(super) funcnametab: usize,
    pub(super) cutab: usize,
    pub(super) filetab: usize,
    pub(super) pctab: usize,
    pub(super) functab: usize,
}

pub(super) fn parse_header(data: &[u8], big: bool) -> Result<Header, PclntabError> {
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
pub(super) struct Table {
    pub(super) names: Names,
    pub(super) funcs: Vec<Func>,
    /// Offset of each function's `_func` in the table data, parallel to `funcs`.
    pub(super) func_offs: Vec<usize>,
}

/// Reads the function table. `word` reads a relocated pointer-sized word at a table offset: the
/// 1.16 format stores absolute PCs, which PIE binaries relocate.
pub(super) fn parse_functab(
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

/// A cheap pre-check, then a full header parse and a look at the first function's `_func`, so
/// that a stray magic number in data is not mistaken for the table.
pub(super) fn looks_like_header(tail: &[u8], big: bool) -> bool {
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
