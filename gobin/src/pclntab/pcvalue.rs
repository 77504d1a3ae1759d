//! Pc-value tables, the varint-delta tables that map each PC of a function to a value (its
//! source file, its line, its inlining index), and the inline trees those indexes point into.

use super::image::Image;
use super::{Format, Pclntab};
use crate::bytes::{Backing, Bytes};

/// `runtime/symtab.go` `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree`, unchanged since Go 1.12.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u8 = 3;

/// Inlining deeper than this is treated as a corrupt (cyclic) inline tree.
const MAX_INLINE_DEPTH: usize = 1024;

/// A NUL-terminated string starting at `off`.
fn c_str(data: &[u8], off: usize) -> Option<String> {
    let tail = data.get(off..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(tail.get(..len)?).into_owned())
}

/// Go's `readvarint` for pc-value tables: at most 5 bytes for a `u32`.
pub(super) fn varint(data: &[u8], off: usize) -> Option<(u32, usize)> {
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
pub(super) struct Region {
    pub(super) addr: u64,
    pub(super) bytes: Bytes,
}

impl Region {
    fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.addr)?).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
}

impl Pclntab {
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
    pub(super) fn pcvalue(&self, i: usize, table: u32, pc: u64) -> Option<i32> {
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
    pub(super) fn attach_gofunc(&mut self, img: &Image<'_>, candidates: &[u64], backing: &Backing) {
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
    pub(super) fn attach_inline_trees_116(
        &mut self,
        img: &Image<'_>,
        pcln_addr: u64,
        backing: &Backing,
    ) {
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
