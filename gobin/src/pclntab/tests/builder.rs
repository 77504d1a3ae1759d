//! A synthetic function table in every format, and a bare image to attach inline trees from.

use std::collections::HashMap;

use crate::pclntab::header::{parse_functab, parse_header};
use crate::pclntab::image::{Image, Sect};
use crate::pclntab::{Format, MAGIC_GO116, MAGIC_GO118, MAGIC_GO120, Pclntab, PclntabError};

/// Builds a synthetic table (64-bit little endian) with functions given as (name, entry
/// offset from text) and an end offset. With `inline`, `main.b` has inlined `runtime.c`
/// for its first 8 bytes: its tree is at `TREE_ADDR` (Go 1.16) or gofunc + `TREE_OFF`.
pub(super) struct Builder {
    pub(super) format: Format,
    pub(super) funcs: Vec<(&'static str, u32)>,
    pub(super) end: u32,
    pub(super) text_word: u64,
    pub(super) inline: bool,
}

pub(super) const TREE_OFF: u64 = 0x10;
pub(super) const TREE_ADDR: u64 = 0x700000 + TREE_OFF;

/// The inline tree: one call of `runtime.c` (name offset 14) whose call site is at +0x10.
pub(super) fn inline_tree(format: Format) -> Vec<u8> {
    let (size, name_at, parent_at) = format.inlined_call();
    let mut tree = vec![0u8; size];
    tree[name_at..name_at + 4].copy_from_slice(&14u32.to_le_bytes());
    tree[parent_at..parent_at + 4].copy_from_slice(&0x10u32.to_le_bytes());
    tree
}

impl Builder {
    pub(super) fn new(format: Format) -> Self {
        Builder {
            format,
            funcs: vec![("main.a", 0x0), ("main.b", 0x40), ("runtime.c", 0x100)],
            end: 0x180,
            text_word: 0x401000,
            inline: false,
        }
    }

    pub(super) fn build(&self) -> Vec<u8> {
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
    pub(super) fn parse(&self, data: &[u8]) -> Result<Pclntab, PclntabError> {
        parse_bytes(data, self.text_word)
    }
}

pub(super) fn parse_bytes(data: &[u8], text: u64) -> Result<Pclntab, PclntabError> {
    let h = parse_header(data, false)?;
    let rd = h.rd;
    let word = |off: usize| rd.word(data, off);
    let table = parse_functab(data, &h, text, &word)?;
    Ok(Pclntab::from_parts(h, data.to_vec().into(), table, text))
}

/// Where the tests place the table in an address space.
pub(super) const PCLN_ADDR: u64 = 0x500000;

/// An image of plain data sections at the given addresses, without relocations.
pub(super) fn image<'a>(sections: &[(u64, &'a [u8])]) -> Image<'a> {
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
