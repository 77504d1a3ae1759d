//! `map-trace inspect` against every Go fixture of the matrix, with Go's own tools as oracles:
//! `go tool nm` for addresses, `go tool objdump` for instruction boundaries, DWARF for layouts.

use std::collections::HashMap;

use gobin::elf::ElfImage;
use gobin::symbols::Symbols;
use gobin::{MapImpl, OffsetsSource, dwarf, offsets, runtime};
use map_trace::plan::GoTarget;
use map_trace_common::probe::Role;
use test_support::{Fixture, check_all};

use super::go_tool;

fn assert_none(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Fixtures that still have `.symtab` and DWARF.
fn unstripped() -> Vec<Fixture> {
    test_support::fixtures()
        .into_iter()
        .filter(|f| !f.stripped)
        .collect()
}

fn analyze(f: &Fixture) -> Result<GoTarget, String> {
    GoTarget::analyze(&f.path).map_err(|e| format!("{}: analyze failed: {e}", f.name))
}

/// Text symbols from `go tool nm` of the binary that still has a symbol table.
fn nm(f: &Fixture) -> HashMap<String, u64> {
    let bin = if f.stripped { &f.twin } else { &f.path };
    let out = go_tool(f, &["nm", bin.to_str().unwrap()]);
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (addr, kind, name) = (w.next()?, w.next()?, w.next()?);
            matches!(kind, "T" | "t")
                .then(|| Some((name.to_string(), u64::from_str_radix(addr, 16).ok()?)))?
        })
        .collect()
}

#[test]
fn probe_addresses_match_go_tool_nm() {
    let fixtures = test_support::fixtures();
    let failures = check_all(&fixtures, |f| {
        let t = match analyze(f) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let nm = nm(f);
        let mut bad = Vec::new();
        if t.probes.is_empty() {
            bad.push(format!("{}: no probes planned", f.name));
        }
        for p in &t.probes {
            match nm.get(&p.function.name) {
                Some(&a) if a == p.function.entry => {}
                other => bad.push(format!(
                    "{}: {} at {:#x}, go tool nm says {other:?}",
                    f.name, p.function.name, p.function.entry
                )),
            }
        }
        // What inspect calls "not linked" must really be absent.
        for name in &t.absent {
            if nm.contains_key(*name) {
                bad.push(format!(
                    "{}: {name} reported absent but nm lists it",
                    f.name
                ));
            }
        }
        bad
    });
    assert_none(&failures);
}

#[test]
fn pclntab_and_symtab_agree_on_every_function() {
    let fixtures = unstripped();
    let failures = check_all(&fixtures, |f| {
        let image = ElfImage::open(&f.path).unwrap();
        let file = image.object().unwrap();
        let symtab = Symbols::from_symtab(&file).expect("unstripped fixture has .symtab");
        let pcln = match Symbols::from_pclntab(&file) {
            Ok(p) => p,
            Err(e) => return vec![format!("{}: pclntab: {e}", f.name)],
        };
        let mut bad = Vec::new();
        if pcln.len() < 1000 {
            bad.push(format!(
                "{}: only {} functions in pclntab",
                f.name,
                pcln.len()
            ));
        }
        for name in all_catalog_names() {
            let (a, b) = (
                symtab.get(name).map(|f| f.entry),
                pcln.get(name).map(|f| f.entry),
            );
            if a != b {
                bad.push(format!("{}: {name}: symtab {a:x?} pclntab {b:x?}", f.name));
            }
        }
        bad
    });
    assert_none(&failures);
}

fn all_catalog_names() -> impl Iterator<Item = &'static str> {
    [MapImpl::Classic, MapImpl::Swiss]
        .into_iter()
        .flat_map(|m| runtime::catalog(m).iter())
        .flat_map(|s| s.symbols.iter().chain(s.via.iter()).copied())
}

#[test]
fn stripped_binaries_give_the_same_answers_as_their_unstripped_twins() {
    let fixtures: Vec<Fixture> = test_support::fixtures()
        .into_iter()
        .filter(|f| f.stripped)
        .collect();
    assert!(!fixtures.is_empty(), "the matrix has no stripped fixtures");
    let failures = check_all(&fixtures, |f| {
        let (s, t) = match (analyze(f), GoTarget::analyze(&f.twin)) {
            (Ok(s), Ok(t)) => (s, t),
            (a, b) => {
                return vec![format!(
                    "{}: {:?} / twin {:?}",
                    f.name,
                    a.err(),
                    b.err().map(|e| e.to_string())
                )];
            }
        };
        let key = |g: &GoTarget| {
            g.probes
                .iter()
                .map(|p| {
                    (
                        p.role,
                        p.function.name.clone(),
                        p.function.entry,
                        p.file_offset,
                        p.attach.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut bad = Vec::new();
        if key(&s) != key(&t) {
            bad.push(format!(
                "{}: probes differ from the unstripped twin:\n  {:x?}\n  {:x?}",
                f.name,
                key(&s),
                key(&t)
            ));
        }
        if (s.version, s.map_impl, &s.build.goexperiments)
            != (t.version, t.map_impl, &t.build.goexperiments)
        {
            bad.push(format!("{}: version/map impl differ from twin", f.name));
        }
        // The stripped one has no DWARF, so its offsets come from the table: they must equal
        // what the twin's DWARF says.
        if s.offsets != t.offsets || !matches!(s.offsets_source, OffsetsSource::Table { .. }) {
            bad.push(format!(
                "{}: offsets {:?} ({:?}) vs twin {:?} ({:?})",
                f.name, s.offsets, s.offsets_source, t.offsets, t.offsets_source
            ));
        }
        bad
    });
    assert_none(&failures);
}

#[test]
fn dwarf_offsets_equal_the_builtin_table_for_every_version() {
    let fixtures = unstripped();
    let failures = check_all(&fixtures, |f| {
        let t = match analyze(f) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let image = ElfImage::open(&f.path).unwrap();
        let layouts = match dwarf::struct_layouts(&image.object().unwrap(), offsets::DWARF_STRUCTS)
        {
            Ok(l) => l,
            Err(e) => return vec![format!("{}: {e}", f.name)],
        };
        let from_dwarf = match offsets::from_dwarf(&layouts, t.map_impl) {
            Ok(o) => o,
            Err(e) => return vec![format!("{}: {e}", f.name)],
        };
        let choice = offsets::table_choice(t.version);
        let mut bad = Vec::new();
        if choice.warning.is_some() {
            bad.push(format!("{}: {} is not in the table", f.name, t.version));
        }
        let table = offsets::builtin(choice.minor, t.map_impl);
        if from_dwarf != table {
            bad.push(format!(
                "{}: DWARF {from_dwarf:?}\n   table {table:?}",
                f.name
            ));
        }
        if t.offsets_source != OffsetsSource::Dwarf {
            bad.push(format!(
                "{}: DWARF present but offsets came from {:?}",
                f.name, t.offsets_source
            ));
        }
        bad
    });
    assert_none(&failures);
}

#[test]
fn binary_facts_match_how_each_fixture_was_built() {
    let fixtures = test_support::fixtures();
    let failures = check_all(&fixtures, |f| {
        let t = match analyze(f) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let mut bad = Vec::new();
        let mut expect = |what: &str, got: String, want: String| {
            if got != want {
                bad.push(format!("{}: {what} is {got}, built as {want}", f.name));
            }
        };
        expect(
            "version",
            t.version.to_string(),
            format!("go{}", f.go_version),
        );
        expect("map_impl", t.map_impl.name().into(), f.map_impl.clone());
        expect("arch", t.elf.arch.name().into(), f.arch.clone());
        expect(
            "stripped",
            t.elf.stripped.to_string(),
            f.stripped.to_string(),
        );
        expect("pie", t.elf.pie.to_string(), f.pie.to_string());
        expect(
            "external linker",
            t.elf.external_linker.to_string(),
            f.external_link.to_string(),
        );
        expect(
            "noswissmap",
            t.build.has_experiment("noswissmap").to_string(),
            (f.goexperiment.as_deref() == Some("noswissmap")).to_string(),
        );
        if !t.warnings.is_empty() {
            bad.push(format!("{}: unexpected warnings {:?}", f.name, t.warnings));
        }
        bad
    });
    assert_none(&failures);
}

/// One instruction of `go tool objdump` output.
struct Insn {
    /// `file.go:LINE` of the line table.
    pos: String,
    addr: u64,
    text: String,
}

/// Instructions per function from one objdump run over all the probed functions.
fn objdump(f: &Fixture, names: &[&str]) -> HashMap<String, Vec<Insn>> {
    objdump_with_sources(f, names).0
}

/// `objdump`, and the source file each function's `TEXT` header names.
fn objdump_with_sources(
    f: &Fixture,
    names: &[&str],
) -> (HashMap<String, Vec<Insn>>, HashMap<String, String>) {
    let escaped: Vec<String> = names
        .iter()
        .map(|n| {
            n.chars()
                .map(|c| {
                    if "()*.[]".contains(c) {
                        format!("\\{c}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    let re = format!("^({})$", escaped.join("|"));
    // objdump needs a symbol table: a stripped build is read through its twin, whose code and
    // addresses are identical (checked by the stripped-twin test).
    let bin = if f.stripped { &f.twin } else { &f.path };
    let out = go_tool(f, &["objdump", "-s", &re, bin.to_str().unwrap()]);
    let mut funcs: HashMap<String, Vec<Insn>> = HashMap::new();
    let mut sources = HashMap::new();
    let mut current = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("TEXT ") {
            let mut parts = rest.split("(SB)");
            current = parts.next().map(str::to_string);
            if let (Some(name), Some(path)) = (&current, parts.next()) {
                sources.insert(name.clone(), path.trim().to_string());
            }
            continue;
        }
        // "  file.go:93\t0x40e2a0\t\t493b6610\t\tCMPQ SP, 0x10(R14)"
        let cols: Vec<&str> = line.split('\t').filter(|c| !c.is_empty()).collect();
        if let (Some(name), [pos, addr, _, text, ..]) = (&current, cols.as_slice())
            && let Some(addr) = addr
                .trim()
                .strip_prefix("0x")
                .and_then(|a| u64::from_str_radix(a, 16).ok())
        {
            funcs.entry(name.clone()).or_default().push(Insn {
                pos: pos.trim().to_string(),
                addr,
                text: text.trim().to_string(),
            });
        }
    }
    (funcs, sources)
}

fn is_stack_check(arch: &str, text: &str) -> bool {
    match arch {
        "x86_64" => text.contains("0x10(R14)"),
        _ => text.contains("16(R28)"),
    }
}

fn is_branch_after_check(arch: &str, text: &str) -> bool {
    let op = text.split_whitespace().next().unwrap_or("");
    match arch {
        "x86_64" => matches!(op, "JBE" | "JLS" | "JB" | "JCS" | "JA" | "JHI"),
        _ => matches!(op, "BLS" | "BLO" | "BCC" | "BHI" | "BCS" | "BHS"),
    }
}

fn is_prologue_insn(arch: &str, text: &str) -> bool {
    let op = text.split_whitespace().next().unwrap_or("");
    is_branch_after_check(arch, text)
        || matches!(
            op,
            "CMPQ" | "CMP" | "SUB" | "SUBS" | "SUBQ" | "MOVD" | "MOVQ" | "LEAQ"
        )
}

#[test]
fn attach_offsets_land_after_the_stack_check_branch_per_objdump() {
    let fixtures = test_support::fixtures();
    let failures = check_all(&fixtures, |f| {
        let t = match analyze(f) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let names: Vec<&str> = t.probes.iter().map(|p| p.function.name.as_str()).collect();
        let listing = objdump(f, &names);
        let mut bad = Vec::new();
        // End sites sit mid-function by design (their own test is below).
        for p in t.probes.iter().filter(|p| p.role != Role::IterEnd) {
            let Some(insns) = listing.get(&p.function.name) else {
                bad.push(format!("{}: objdump has no {}", f.name, p.function.name));
                continue;
            };
            let prologue_end = insns
                .iter()
                .take(8)
                .position(|i| is_stack_check(&f.arch, &i.text));
            let at = p.function.entry + p.attach.offset;
            match (prologue_end, p.attach.offset) {
                (None, 0) if p.attach.fallback_reason.is_some() => {}
                (None, _) => bad.push(format!(
                    "{}: {} has no stack check but attach {:#x}",
                    f.name, p.function.name, p.attach.offset
                )),
                (Some(_), 0) => bad.push(format!(
                    "{}: {} has a stack check but fell back: {:?}",
                    f.name, p.function.name, p.attach.fallback_reason
                )),
                (Some(check), _) => {
                    let Some(idx) = insns.iter().position(|i| i.addr == at) else {
                        bad.push(format!(
                            "{}: {}+{:#x} is not an instruction boundary",
                            f.name, p.function.name, p.attach.offset
                        ));
                        continue;
                    };
                    // arm64 probes go past the frame store that writes SP back (see
                    // gobin::disasm::arm64::skip_writeback_store), and nothing else.
                    let frame_store = f.arch == "aarch64"
                        && idx >= 2
                        && insns[idx - 1].text.starts_with("MOVD.W R30, -");
                    let branch = if frame_store { idx - 2 } else { idx - 1 };
                    let prev = &insns[branch].text;
                    if branch < check || !is_branch_after_check(&f.arch, prev) {
                        bad.push(format!(
                            "{}: {}+{:#x} follows {prev:?}, not the stack-check branch",
                            f.name, p.function.name, p.attach.offset
                        ));
                    }
                    // Nothing between the check and our point but the check's own compare and
                    // branches: skipping `PUSHQ BP` would lose the frame.
                    if insns[check + 1..=branch]
                        .iter()
                        .any(|i| !is_prologue_insn(&f.arch, &i.text))
                    {
                        bad.push(format!(
                            "{}: {}+{:#x} skips more than the stack check",
                            f.name, p.function.name, p.attach.offset
                        ));
                    }
                }
            }
        }
        bad
    });
    assert_none(&failures);
}

/// A register as objdump names it, in the numbering of `gobin::disasm::iter_end::EndSite::reg`.
fn reg_number(arch: &str, name: &str) -> Option<u8> {
    match arch {
        "x86_64" => [
            "AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI", "R8", "R9", "R10", "R11", "R12", "R13",
            "R14", "R15",
        ]
        .iter()
        .position(|r| *r == name)
        .map(|n| n as u8),
        _ => name
            .strip_prefix('R')?
            .parse()
            .ok()
            .filter(|&n: &u8| n <= 30),
    }
}

/// The zero store of `it.key = nil; it.elem = nil` and the iterator register it stores through.
fn zero_store_base(arch: &str, text: &str) -> Option<u8> {
    let rest = match arch {
        "x86_64" => text.strip_prefix("MOVUPS X15, 0(")?,
        _ => text.strip_prefix("STP (ZR, ZR), (")?,
    };
    reg_number(arch, rest.strip_suffix(')')?)
}

/// Where an unconditional jump goes: amd64 objdump prints the address, arm64 `N(PC)` counted in
/// instructions from the jump.
fn jump_target(arch: &str, insn: &Insn) -> Option<u64> {
    let operand = insn.text.strip_prefix("JMP ")?;
    match arch {
        "x86_64" => u64::from_str_radix(operand.strip_prefix("0x")?, 16).ok(),
        _ => {
            let n: i64 = operand.strip_suffix("(PC)")?.parse().ok()?;
            Some(insn.addr.wrapping_add_signed(n * 4))
        }
    }
}

/// A conditional branch's target: amd64 `JE 0x…`, arm64 `CBZW Rn, N(PC)`, with the register
/// it tests on arm64.
fn branch_if(arch: &str, insn: &Insn) -> Option<(u64, Option<u8>)> {
    let (op, operand) = insn.text.split_once(' ')?;
    match arch {
        "x86_64" => {
            let conditional = op.starts_with('J') && op != "JMP";
            let target = u64::from_str_radix(operand.trim().strip_prefix("0x")?, 16).ok()?;
            conditional.then_some((target, None))
        }
        _ => {
            if op != "CBZW" && op != "CBNZW" {
                return None;
            }
            let (reg, rel) = operand.split_once(", ")?;
            let n: i64 = rel.trim().strip_suffix("(PC)")?.parse().ok()?;
            Some((
                insn.addr.wrapping_add_signed(n * 4),
                Some(reg_number(arch, reg)?),
            ))
        }
    }
}

/// The write-barrier test guarding the zero store `insns[at]`, by objdump's text: the branch
/// that jumps to it (straight-line code in between) or falls through into it, right after
/// `CMPL runtime.writeBarrier(SB), $0x0` (either operand order; no-ops aside) or, on arm64, `MOVWU …, Rn` of the
/// register it tests.
fn barrier_guard(arch: &str, insns: &[Insn], at: usize) -> Option<u64> {
    let store = insns[at].addr;
    let leaves = |i: &Insn| {
        let op = i.text.split(' ').next().unwrap_or_default();
        op != "CALL" && (op.starts_with('J') || op.starts_with("RET") || op.starts_with("CB"))
    };
    let b = (0..at).rev().find(|&b| {
        branch_if(arch, &insns[b]).is_some_and(|(t, _)| t == store || insns[b + 1].addr == store)
    })?;
    if insns[b + 1..at].iter().any(leaves) {
        return None;
    }
    let test = insns[..b]
        .iter()
        .rev()
        .find(|i| !i.text.starts_with("NOP"))?;
    let guarded = match (arch, branch_if(arch, &insns[b])?) {
        // Go 1.19's objdump prints the operands the other way round.
        ("x86_64", _) => {
            test.text.starts_with("CMPL ")
                && (test.text.ends_with(", $0x0") || test.text.starts_with("CMPL $0x0, "))
        }
        (_, (_, Some(reg))) => {
            test.text.starts_with("MOVWU ")
                && test
                    .text
                    .rsplit(", ")
                    .next()
                    .and_then(|r| reg_number(arch, r))
                    == Some(reg)
        }
        _ => false,
    };
    guarded.then_some(insns[b].addr)
}

/// The low-overhead mode's end sites, checked against Go's line table and the runtime sources:
/// every line of the step function that reads `it.key = nil` has its zero store; every site is
/// the write-barrier test's branch into one (emulated by the kernel, not single-stepped), or
/// where there is none, the instruction after the store (or the join its jump goes to); and
/// each names the store's register.
#[test]
fn iteration_end_sites_follow_every_it_key_nil_per_objdump_and_the_sources() {
    let fixtures = test_support::fixtures();
    let failures = check_all(&fixtures, |f| {
        let t = match analyze(f) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let Some(step) = t.probes.iter().find(|p| p.role == Role::IterStep) else {
            return vec![format!("{}: no step probe", f.name)];
        };
        let name = step.function.name.as_str();
        let (listing, sources) = objdump_with_sources(f, &[name]);
        let Some(insns) = listing.get(name) else {
            return vec![format!("{}: objdump has no {name}", f.name)];
        };
        // Go 1.19's objdump prints no lines for PIE builds: there every zero store of the key
        // must have its site, and the sources cannot say more.
        let lineless = insns.iter().all(|i| i.pos.starts_with(':'));
        let path = match sources.get(name).filter(|p| !p.is_empty()) {
            Some(p) => p.clone(),
            None => {
                let base = insns[0].pos.split(':').next().unwrap_or_default();
                ["src/runtime", "src/internal/runtime/maps"]
                    .iter()
                    .map(|d| f.goroot.join(d).join(base))
                    .find(|p| p.exists())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            }
        };
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(_) if lineless => String::new(),
            Err(e) => return vec![format!("{}: {path}: {e}", f.name)],
        };
        let file = path.rsplit('/').next().unwrap_or_default();
        // The one store that clears key and elem is attributed to either line (Go 1.19: elem's).
        let lines: Vec<&str> = source.lines().collect();
        let key_lines: Vec<usize> = (0..lines.len())
            .filter(|&n| lines[n].trim() == "it.key = nil")
            .collect();
        let line_of = |pos: &str| -> Option<usize> {
            if lineless {
                return Some(0);
            }
            let (f, n) = pos.split_once(':')?;
            let n: usize = n.parse().ok()?;
            let n = n.checked_sub(1)?;
            (f == file)
                .then(|| {
                    key_lines
                        .iter()
                        .find(|&&k| k == n || (k + 1 == n && lines[n].trim() == "it.elem = nil"))
                        .copied()
                })
                .flatten()
        };
        let mut bad = Vec::new();
        let mut want = Vec::new();
        let mut covered = std::collections::BTreeSet::new();
        let mut guarded = 0;
        for (i, insn) in insns.iter().enumerate() {
            let Some(key_line) = line_of(&insn.pos) else {
                continue;
            };
            let Some(reg) = zero_store_base(&f.arch, &insn.text) else {
                continue;
            };
            covered.insert(key_line);
            let Some(next) = insns.get(i + 1) else {
                bad.push(format!("{}: zero store at the end of {name}", f.name));
                continue;
            };
            let at = barrier_guard(&f.arch, insns, i)
                .inspect(|_| guarded += 1)
                .unwrap_or_else(|| jump_target(&f.arch, next).unwrap_or(next.addr));
            want.push((at - step.function.entry, reg));
        }
        let used: std::collections::BTreeSet<usize> =
            insns.iter().filter_map(|i| line_of(&i.pos)).collect();
        if used.is_empty() || used.len() != covered.len() {
            bad.push(format!(
                "{}: `it.key = nil` at {used:?} in {name}, zero stores found for {covered:?}",
                f.name
            ));
        }
        let mut got: Vec<(u64, u8)> = t
            .probes
            .iter()
            .filter(|p| p.role == Role::IterEnd)
            .map(|p| (p.attach.offset, p.reg.unwrap_or(u8::MAX)))
            .collect();
        got.sort();
        want.sort();
        want.dedup();
        if got != want {
            bad.push(format!(
                "{}: end sites {got:x?}, objdump and the sources say {want:x?}",
                f.name
            ));
        }
        // Every supported release guards the store with its write-barrier test: a layout
        // without one would put the range's end on a single-stepped instruction again.
        if guarded != want.len() {
            bad.push(format!(
                "{}: {guarded} of {} end sites on the write-barrier branch",
                f.name,
                want.len()
            ));
        }
        bad
    });
    assert_none(&failures);
    eprintln!("end sites checked on {} fixtures", fixtures.len());
}
