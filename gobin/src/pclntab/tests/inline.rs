//! Inlined frames from the inline trees, found through gofunc (Go 1.18+) or per function
//! (Go 1.16).

use super::builder::{Builder, PCLN_ADDR, TREE_OFF, image, inline_tree};
use crate::bytes::Backing;
use crate::pclntab::Format;

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
