//! Reading whole files: where the table is, and where `runtime.text` comes from when the
//! pcHeader does not say (Go 1.26+ leave its word 0, PIE relocates it).

use object::elf::{R_X86_64_RELATIVE, SHT_DYNSYM, SHT_RELA, SHT_STRTAB, SHT_SYMTAB};

use super::builder::{Builder, PCLN_ADDR};
use super::elf::{ALLOC, TestElf, WRITE};
use crate::pclntab::header::parse_header;
use crate::pclntab::{Format, PclntabError};

/// A Go 1.20+ table whose pcHeader textStart word is `text_word` (0: absent, as from Go 1.26).
fn table_with_text_word(text_word: u64) -> Vec<u8> {
    let mut b = Builder::new(Format::Go120);
    b.text_word = text_word;
    b.build()
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

/// One `Elf64_Rela` entry.
fn rela(addr: u64, r_type: u32, sym: u32, addend: i64) -> Vec<u8> {
    let mut v = addr.to_le_bytes().to_vec();
    v.extend_from_slice(&((u64::from(sym) << 32) | u64::from(r_type)).to_le_bytes());
    v.extend_from_slice(&addend.to_le_bytes());
    v
}

#[test]
fn read_plain_exe() {
    let pcln = Builder::new(Format::Go120).build();
    let t = TestElf::with_pclntab(pcln).read().unwrap();
    assert_eq!(t.text_start(), 0x401000);
    assert_eq!(t.function("runtime.c").unwrap().entry, 0x401100);
}

#[test]
fn read_missing_section() {
    assert!(matches!(TestElf::exec().read(), Err(PclntabError::Missing)));
}

#[test]
fn read_go126_uses_go_module() {
    let pcln = table_with_text_word(0);
    let md = moduledata(&pcln, 0x401100);
    let t = TestElf::with_pclntab(pcln)
        .data(".go.module", WRITE, 0x600000, md)
        .read()
        .unwrap();
    assert_eq!(t.text_start(), 0x401100);
    assert_eq!(t.functions()[0].entry, 0x401100);
}

#[test]
fn read_stripped_finds_moduledata_by_scanning() {
    let pcln = table_with_text_word(0);
    let mut noptr = vec![0u8; 64];
    // A lone pointer to the table that is not a moduledata must be skipped.
    noptr[8..16].copy_from_slice(&PCLN_ADDR.to_le_bytes());
    noptr.extend(moduledata(&pcln, 0x401080));
    let t = TestElf::with_pclntab(pcln)
        .data(".noptrdata", WRITE, 0x600000, noptr)
        .read()
        .unwrap();
    assert_eq!(t.text_start(), 0x401080);
}

#[test]
fn read_text_start_outside_code_falls_back_then_fails() {
    let pcln = table_with_text_word(0x900000);
    match TestElf::with_pclntab(pcln).read() {
        Err(PclntabError::NoTextStart(m)) => {
            assert!(m.contains("0x900000 is not in executable code"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_pie_uses_relative_relocation() {
    let pcln = table_with_text_word(0);
    // One null dynamic symbol; .rela.dyn links to .dynsym (section 2), .dynsym to .dynstr (3).
    let dynsym = vec![0u8; 24];
    let relocs = rela(PCLN_ADDR + 24, R_X86_64_RELATIVE, 0, 0x401040);
    let t = TestElf::pie()
        .section(".dynsym", SHT_DYNSYM, ALLOC, 0x300000, dynsym, 3)
        .section(".dynstr", SHT_STRTAB, ALLOC, 0x300100, vec![0], 0)
        .section(".rela.dyn", SHT_RELA, ALLOC, 0x300200, relocs, 2)
        .data(".data.rel.ro.gopclntab", WRITE, PCLN_ADDR, pcln)
        .read()
        .unwrap();
    assert_eq!(t.text_start(), 0x401040);
    assert_eq!(t.functions()[1].entry, 0x401080);
}

#[test]
fn read_symtab_runtime_text_fallback_and_header_scan() {
    let pcln = table_with_text_word(0);
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
    let t = TestElf::exec()
        .section(".symtab", SHT_SYMTAB, 0, 0, symtab, 3)
        .section(".strtab", SHT_STRTAB, 0, 0, strtab, 0)
        .data(".data.rel.ro", WRITE, PCLN_ADDR - 16, relro)
        .read()
        .unwrap();
    assert_eq!(t.text_start(), 0x401020);
    assert_eq!(t.function("main.b").unwrap().entry, 0x401060);
}
