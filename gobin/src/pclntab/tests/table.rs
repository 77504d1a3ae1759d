//! Parsing synthetic tables: every format, and every kind of damage.

use super::builder::{Builder, PCLN_ADDR, TREE_OFF, image, inline_tree, parse_bytes};
use crate::Function;
use crate::bytes::Backing;
use crate::pclntab::header::parse_header;
use crate::pclntab::pcvalue::varint;
use crate::pclntab::{Format, MAGIC_GO12, PclntabError};

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
