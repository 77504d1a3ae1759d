//! Map type names (`gobin::gotypes`) on every mapops fixture. Oracles: `mapops -types`, which
//! prints each map type's descriptor address and `%T`, and `go tool nm` for the type data range.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use gobin::elf::ElfImage;
use gobin::gotypes::{MapTypeName, TypeLayout, TypeNames};
use gobin::symbols::Symbols;
use map_trace::plan::GoTarget;
use map_trace::resolve::memory::ProcMem;
use test_support::{Fixture, Reaped, check_all};

use super::go_tool;

/// The map types mapops declares, so the linker puts their descriptors and names in the binary.
const STATIC: [&str; 9] = [
    "map[uint64]int",
    "map[uint32]int",
    "map[string]int",
    "map[main.pair]int",
    "map[*main.T]int",
    "map[string]main.pair",
    "map[string][]string",
    "map[main.pair]map[string]*main.T",
    "map[interface {}]struct {}",
];

/// Made by `reflect.MapOf` at run time: its name is nowhere in the binary.
const RUNTIME: &str = "map[int8]uint16";

fn assert_none(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fixture's type names, with the layout map-trace's own analysis chose for it.
fn type_names(f: &Fixture) -> Result<TypeNames, String> {
    let image = ElfImage::open(&f.path).map_err(|e| format!("{}: {e}", f.name))?;
    let t = GoTarget::analyze_image(&image).map_err(|e| format!("{}: analyze: {e}", f.name))?;
    let layout = TypeLayout::from(&t.offsets);
    let file = image.object().map_err(|e| format!("{}: {e}", f.name))?;
    TypeNames::read(&file, t.version.minor, layout).map_err(|e| format!("{}: {e}", f.name))
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

#[test]
fn type_data_range_matches_go_tool_nm() {
    // A stripped fixture's layout differs slightly from its twin's, so only unstripped ones.
    let fixtures: Vec<Fixture> = test_support::fixtures_of("mapops")
        .into_iter()
        .filter(|f| !f.stripped)
        .collect();
    let failures = check_all(&fixtures, |f| {
        let names = match type_names(f) {
            Ok(n) => n,
            Err(e) => return vec![e],
        };
        let nm = go_tool(f, &["nm", f.path.to_str().unwrap()]);
        let symbol = |name: &str| {
            nm.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                let (addr, _kind, sym) = (w.next()?, w.next()?, w.next()?);
                (sym == name).then(|| hex(addr))?
            })
        };
        let want = (symbol("runtime.types"), symbol("runtime.etypes"));
        let got = names.types_range();
        if want == (Some(got.0), Some(got.1)) {
            vec![]
        } else {
            vec![format!(
                "{}: type data {got:x?}, go tool nm says {want:x?}",
                f.name
            )]
        }
    });
    assert_none(&failures);
}

/// Static, so arm64 and stripped fixtures are covered too: every map type mapops declares must
/// be among the names of the map descriptors in the type data. A wrong `types` base would shift
/// every name offset and find none of them.
#[test]
fn every_declared_map_type_is_named_in_the_type_data() {
    let fixtures = test_support::fixtures_of("mapops");
    let failures = check_all(&fixtures, |f| {
        let names = match type_names(f) {
            Ok(n) => n,
            Err(e) => return vec![e],
        };
        let (lo, hi) = names.types_range();
        // Descriptors are pointer-aligned.
        let found: BTreeSet<String> = (lo..hi)
            .step_by(8)
            .filter_map(|a| match names.map_type(a, None) {
                MapTypeName::Named(n) => Some(n),
                MapTypeName::Unnamed { .. } => None,
            })
            .collect();
        let missing: Vec<&str> = STATIC.into_iter().filter(|w| !found.contains(*w)).collect();
        if missing.is_empty() {
            vec![]
        } else {
            vec![format!(
                "{}: no descriptor named {missing:?}; the {} names found: {found:?}",
                f.name,
                found.len()
            )]
        }
    });
    assert_none(&failures);
}

/// Runs `mapops -types` and checks every address it prints against its `%T`: static types by
/// name, the `reflect.MapOf` one by the sizes read from the live process.
#[test]
fn live_map_type_addresses_resolve_to_their_go_names() {
    // The fixtures must run here; arm64 ones would need an emulator.
    let fixtures: Vec<Fixture> = test_support::fixtures_of("mapops")
        .into_iter()
        .filter(|f| f.arch == std::env::consts::ARCH)
        .collect();
    assert!(
        !fixtures.is_empty(),
        "no {} mapops fixtures",
        std::env::consts::ARCH
    );
    let failures = check_all(&fixtures, |f| match live(f) {
        Ok(bad) => bad,
        Err(e) => vec![format!("{}: {e}", f.name)],
    });
    assert_none(&failures);
}

fn live(f: &Fixture) -> Result<Vec<String>, String> {
    let names = type_names(f)?;
    let image = ElfImage::open(&f.path).map_err(|e| e.to_string())?;
    let file = image.object().map_err(|e| e.to_string())?;
    let main_main = Symbols::load(&file)
        .map_err(|e| e.to_string())?
        .get("main.main")
        .ok_or("no main.main")?
        .entry;

    let mut child = Reaped(
        Command::new(&f.path)
            .arg("-types")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run {}: {e}", f.path.display()))?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    // One line for main.main, then one per map; the process then waits for stdin to close.
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(1 + STATIC.len() + 1)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading -types output: {e}"))?;
    let mut parsed = Vec::new();
    for l in &lines {
        let (addr, what) = l
            .split_once(' ')
            .and_then(|(a, w)| Some((hex(a)?, w)))
            .ok_or_else(|| format!("bad -types line {l:?}"))?;
        parsed.push((addr, what));
    }
    let Some(&(main_rt, "func main.main")) = parsed.first() else {
        return Err(format!(
            "-types output does not start with main.main: {lines:?}"
        ));
    };
    let types: BTreeSet<&str> = parsed.iter().skip(1).map(|&(_, t)| t).collect();
    let want: BTreeSet<&str> = STATIC.iter().copied().chain([RUNTIME]).collect();
    if types != want {
        return Err(format!("-types printed {types:?}, want {want:?}"));
    }

    let bias = main_rt.wrapping_sub(main_main);
    if !f.pie && bias != 0 {
        return Err(format!("load bias {bias:#x} in a non-PIE binary"));
    }
    let mem = ProcMem::new(child.0.id()).with_load_bias(bias);
    let mut bad = Vec::new();
    for &(rt, want) in parsed.iter().skip(1) {
        let addr = rt.wrapping_sub(bias);
        let (with_mem, without) = (names.map_type(addr, Some(&mem)), names.map_type(addr, None));
        let ok = if want == RUNTIME {
            let sized = matches!(
                &with_mem,
                MapTypeName::Unnamed { key_size: Some(1), elem_size: Some(2), why }
                    if why.contains("run time")
            ) && with_mem.display().contains("key 1 B, elem 2 B");
            let no_sizes = matches!(
                without,
                MapTypeName::Unnamed {
                    key_size: None,
                    elem_size: None,
                    ..
                }
            );
            sized && no_sizes
        } else {
            with_mem == MapTypeName::Named(want.into()) && without == with_mem
        };
        if !ok {
            bad.push(format!(
                "{}: {want} at {rt:#x} (link-time {addr:#x}): {with_mem:?}; without memory {without:?}",
                f.name
            ));
        }
    }

    drop(child.0.stdin.take());
    let status = child.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        bad.push(format!("{}: -types exited with {status}", f.name));
    }
    Ok(bad)
}
