//! Synthetic ELF files for the tests that read a whole file: a minimal ELF64 little-endian
//! x86_64 file with `.text` at 0x401000, the sections a test adds, and `.shstrtab`. Each test
//! states only what its file has beyond that.

use object::elf::{
    ET_DYN, ET_EXEC, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_DYNSYM, SHT_PROGBITS, SHT_RELA,
    SHT_STRTAB, SHT_SYMTAB,
};

use super::builder::PCLN_ADDR;
use crate::pclntab::{Pclntab, PclntabError};

pub(super) const ALLOC: u64 = SHF_ALLOC as u64;
pub(super) const EXEC: u64 = ALLOC | SHF_EXECINSTR as u64;
pub(super) const WRITE: u64 = ALLOC | SHF_WRITE as u64;
/// Where `.text` starts; the synthetic tables' functions are in it.
pub(super) const TEXT_ADDR: u64 = 0x401000;

/// (name, sh_type, sh_flags, address, contents, sh_link)
type SectionSpec = (&'static str, u32, u64, u64, Vec<u8>, u32);

/// An ELF file being described. Section header indexes (for `sh_link`) are 1 for `.text`, then
/// 2, 3, … in the order the sections are added.
pub(super) struct TestElf {
    kind: u16,
    sections: Vec<SectionSpec>,
}

impl TestElf {
    /// An executable (ET_EXEC) with only `.text`.
    pub(super) fn exec() -> Self {
        Self::with_kind(ET_EXEC)
    }

    /// A position-independent executable (ET_DYN) with only `.text`.
    pub(super) fn pie() -> Self {
        Self::with_kind(ET_DYN)
    }

    fn with_kind(kind: u16) -> Self {
        TestElf {
            kind,
            sections: vec![(".text", SHT_PROGBITS, EXEC, TEXT_ADDR, vec![0xcc; 0x200], 0)],
        }
    }

    /// An executable whose `.gopclntab` at `PCLN_ADDR` holds `pcln`, as the Go linker makes it.
    pub(super) fn with_pclntab(pcln: Vec<u8>) -> Self {
        Self::exec().data(".gopclntab", ALLOC, PCLN_ADDR, pcln)
    }

    /// Adds a `SHT_PROGBITS` section.
    pub(super) fn data(self, name: &'static str, flags: u64, addr: u64, data: Vec<u8>) -> Self {
        self.section(name, SHT_PROGBITS, flags, addr, data, 0)
    }

    /// Adds a section of any type; `link` is a section header index (see [`TestElf`]).
    pub(super) fn section(
        mut self,
        name: &'static str,
        ty: u32,
        flags: u64,
        addr: u64,
        data: Vec<u8>,
        link: u32,
    ) -> Self {
        self.sections.push((name, ty, flags, addr, data, link));
        self
    }

    /// Parses the file and reads its table, as the daemon does.
    pub(super) fn read(&self) -> Result<Pclntab, PclntabError> {
        let bytes = self.bytes();
        let file = object::File::parse(&*bytes).unwrap();
        Pclntab::read(&file)
    }

    fn bytes(&self) -> Vec<u8> {
        let (sections, et_type) = (&self.sections, self.kind);
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
                &(if ty == SHT_DYNSYM || ty == SHT_SYMTAB {
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
                SHT_RELA => 24,
                SHT_DYNSYM | SHT_SYMTAB => 24,
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
            SHT_STRTAB,
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
}
