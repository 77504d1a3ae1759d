//! Symbolization against oracles nobody here wrote, on every scenarios fixture (both arches;
//! default, stripped, PIE, cgo):
//! - for every call instruction in package main, the frames map-trace derives from
//!   `.gopclntab` for that call's return address name the position `go tool objdump` prints for
//!   the call (innermost, inlining included) and the function objdump lists it under
//!   (outermost). Default and stripped builds only: objdump (debug/gosym) misplaces addresses
//!   in externally linked and some PIE builds, the very pitfall map-trace's reader avoids;
//! - where the binary has DWARF, every line-table row of the program's own files gives the
//!   same file and line as map-trace at that address.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use gimli::{EndianSlice, LittleEndian};
use gobin::elf::ElfImage;
use map_trace::resolve::symbolize::Symbolizer;
use object::{Object as _, ObjectSection as _};
use test_support::{Fixture, check_all};

use super::go_tool;

/// A call site as objdump prints it.
struct Call {
    function: String,
    file: String,
    line: u32,
    ret: u64,
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Every CALL/BL in `main.*` functions: objdump lines are `  file.go:N  0xADDR  HEX  CALL ...`.
fn calls(f: &Fixture) -> Vec<Call> {
    let text = go_tool(f, &["objdump", "-s", "^main\\.", f.twin.to_str().unwrap()]);
    let mut out = Vec::new();
    let mut function = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("TEXT ") {
            function = rest.split("(SB)").next().unwrap_or_default().to_string();
            continue;
        }
        let cols: Vec<&str> = line
            .split('\t')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let [pos, addr, hex, insn, ..] = cols[..] else {
            continue;
        };
        if !(insn.starts_with("CALL ") || insn.starts_with("BL ")) {
            continue;
        }
        let (file, l) = pos.rsplit_once(':').expect("file:line");
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        out.push(Call {
            function: function.clone(),
            file: file.to_string(),
            line: l.parse().unwrap(),
            ret: addr + hex.len() as u64 / 2,
        });
    }
    out
}

/// The DWARF line table: address → (file base name, line), for `row_at`.
fn dwarf_rows(path: &Path) -> BTreeMap<u64, (String, u32)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .map(|s| s.uncompressed_data().unwrap())
            .unwrap_or(Cow::Borrowed(&[][..])))
    };
    let sections = gimli::DwarfSections::load(load).unwrap();
    let dwarf = sections.borrow(|s| EndianSlice::new(s, LittleEndian));
    let mut rows = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let Some(program) = unit.line_program.clone() else {
            continue;
        };
        let mut it = program.rows();
        while let Some((header, row)) = it.next_row().unwrap() {
            if row.end_sequence() {
                continue;
            }
            let (Some(entry), Some(line)) = (row.file(header), row.line()) else {
                continue;
            };
            let name = dwarf.attr_string(&unit, entry.path_name()).unwrap();
            let name = String::from_utf8_lossy(&name).into_owned();
            rows.insert(row.address(), (base(&name).to_string(), line.get() as u32));
        }
    }
    rows
}

fn check(f: &Fixture) -> Vec<String> {
    let image = ElfImage::open(&f.path).unwrap();
    // Link-time addresses throughout: the load bias is 0.
    let sym = match Symbolizer::new(&image, 0) {
        Ok(s) => s,
        Err(e) => return vec![format!("{}: {e}", f.name)],
    };
    let objdump_reliable = matches!(f.variant.as_str(), "default" | "stripped");
    let calls = if objdump_reliable {
        calls(f)
    } else {
        Vec::new()
    };
    if objdump_reliable && calls.len() < 100 {
        return vec![format!(
            "{}: only {} calls in package main",
            f.name,
            calls.len()
        )];
    }
    let mut bad = Vec::new();
    if !f.stripped {
        let rows = dwarf_rows(&f.path);
        let own: Vec<_> = rows
            .iter()
            .filter(|(_, (file, _))| file.ends_with(".go") && f.source_dir.join(file).exists())
            .collect();
        if own.len() < 100 {
            bad.push(format!(
                "{}: only {} DWARF rows in the program's files",
                f.name,
                own.len()
            ));
        }
        for (&addr, (file, line)) in own {
            // frames_at takes a return address and looks one byte back.
            let inner = &sym.frames_at(addr + 1)[0];
            if base(&inner.file) != file || inner.line != *line {
                bad.push(format!(
                    "{}: at {addr:#x} DWARF {file}:{line}, map-trace {}:{}",
                    f.name, inner.file, inner.line
                ));
            }
        }
    }
    for c in &calls {
        let frames = sym.frames_at(c.ret);
        let (inner, outer) = (&frames[0], &frames[frames.len() - 1]);
        if base(&inner.file) != c.file || inner.line != c.line || outer.function != c.function {
            bad.push(format!(
                "{}: call at ret {:#x}: objdump {} {}:{}, map-trace {frames:?}",
                f.name, c.ret, c.function, c.file, c.line
            ));
        }
    }
    bad.truncate(5);
    bad
}

#[test]
fn frames_match_objdump_and_dwarf_on_every_build() {
    let fixtures = test_support::fixtures_of("scenarios");
    assert!(
        fixtures.len() >= 80,
        "expected the whole matrix, got {}",
        fixtures.len()
    );
    let failures = check_all(&fixtures, check);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
