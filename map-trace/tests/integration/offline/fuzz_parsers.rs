//! The binary parsers on corrupted Go binaries: a regression corpus of known-nasty corruptions,
//! plus property-based fuzzing of the regions the parsers read. Either must end in Ok or Err —
//! never a panic (proptest reports a panic as a failure and shrinks it to a minimal case).

use std::path::PathBuf;

use gobin::elf::ElfImage;
use map_trace::plan::GoTarget;
use object::{Object as _, ObjectSection as _};
use proptest::prelude::*;
use test_support::Fixture;

fn pick(version: &str, variant: &str, arch: &str) -> Fixture {
    test_support::fixtures_of("mapops")
        .into_iter()
        .find(|f| {
            f.go_version.starts_with(version)
                && f.variant == variant
                && f.arch == arch
                && f.goexperiment.is_none()
        })
        .unwrap_or_else(|| panic!("no {variant} {arch} fixture of go{version}"))
}

/// File range of a section (or the whole file for `@file`).
fn region(data: &[u8], name: &str) -> (usize, usize) {
    if name == "@file" {
        return (0, data.len());
    }
    let file = object::File::parse(data).unwrap();
    let s = file
        .section_by_name(name)
        .unwrap_or_else(|| panic!("no section {name}"));
    let (off, len) = s
        .file_range()
        .unwrap_or_else(|| panic!("{name} has no file data"));
    (off as usize, len as usize)
}

/// Runs the whole analysis on `data`; panics propagate to the test.
fn analyze(data: Vec<u8>) -> Result<(), String> {
    let image = ElfImage::from_bytes(PathBuf::from("corrupt"), data).map_err(|e| e.to_string())?;
    GoTarget::analyze_image(&image)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn regression_corpus_never_panics() {
    let corpus = include_str!("../../corpus/parsers.txt");
    let mut ran = 0;
    for line in corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        let f = pick(w[1], w[2], w[3]);
        let mut data = std::fs::read(&f.path).unwrap();
        match w[0] {
            "patch" => {
                let (start, len) = region(&data, w[4]);
                let off: usize = w[5].parse().unwrap();
                let bytes = hex(w[6]);
                assert!(off + bytes.len() <= len, "{line}: patch outside {}", w[4]);
                data[start + off..start + off + bytes.len()].copy_from_slice(&bytes);
            }
            "truncate" => {
                let keep: f64 = w[4].parse().unwrap();
                data.truncate((data.len() as f64 * keep) as usize);
            }
            other => panic!("unknown corpus verb {other}"),
        }
        // Ok is allowed (some corruptions are harmless); only a panic fails.
        let _ = analyze(data);
        ran += 1;
    }
    assert!(ran >= 15, "corpus ran only {ran} cases");
}

/// Sections the parsers read, for targeted mutations ("@file": ELF and program headers).
const REGIONS: &[&str] = &[
    "@file",
    ".go.buildinfo",
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".go.module",
    ".symtab",
    ".debug_info",
    ".rela.dyn",
];

/// A corruption, small enough to print and to copy into corpus/parsers.txt when it fails.
#[derive(Debug, Clone)]
struct Mutation {
    region: &'static str,
    at: prop::sample::Index,
    bytes: Vec<u8>,
    truncate: Option<f64>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::sample::select(REGIONS),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 1..16),
        prop::option::weighted(0.2, 0.0f64..1.0),
    )
        .prop_map(|(region, at, bytes, truncate)| Mutation {
            region,
            at,
            bytes,
            truncate,
        })
}

fn apply(data: &[u8], m: &Mutation) -> Vec<u8> {
    let mut d = data.to_vec();
    let range = if m.region == "@file" {
        Some((0, 4096.min(d.len())))
    } else {
        object::File::parse(data)
            .ok()
            .and_then(|f| f.section_by_name(m.region)?.file_range())
            .map(|(o, l)| (o as usize, (l as usize).min(1 << 16)))
    };
    if let Some((start, len)) = range.filter(|(_, l)| *l > 0) {
        let off = start + m.at.index(len);
        for (i, b) in m.bytes.iter().enumerate() {
            if let Some(slot) = d.get_mut(off + i) {
                *slot = *b;
            }
        }
    }
    if let Some(keep) = m.truncate {
        d.truncate((d.len() as f64 * keep) as usize);
    }
    d
}

fn fuzz(
    version: &str,
    variant: &str,
    arch: &str,
) -> impl Fn(Mutation) -> Result<(), TestCaseError> {
    let data = std::fs::read(pick(version, variant, arch).path).unwrap();
    move |m| {
        let _ = analyze(apply(&data, &m));
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_stripped_swiss_amd64(m in mutation()) {
        thread_local!(static CHECK: Box<dyn Fn(Mutation) -> Result<(), TestCaseError>> = Box::new(fuzz("1.26", "stripped", "x86_64")));
        CHECK.with(|c| c(m))?;
    }

    #[test]
    fn fuzz_pie_classic_arm64(m in mutation()) {
        thread_local!(static CHECK: Box<dyn Fn(Mutation) -> Result<(), TestCaseError>> = Box::new(fuzz("1.21", "pie", "aarch64")));
        CHECK.with(|c| c(m))?;
    }

    #[test]
    fn fuzz_unstripped_with_dwarf(m in mutation()) {
        thread_local!(static CHECK: Box<dyn Fn(Mutation) -> Result<(), TestCaseError>> = Box::new(fuzz("1.25", "default", "x86_64")));
        CHECK.with(|c| c(m))?;
    }
}
