//! Real uprobes at the attach offsets `inspect` computes: the kernel accepts them, the traced Go
//! program runs normally, and the probe fires exactly once per call.
//!
//! Needs root and a kernel with uprobes and BPF; it fails (never skips) without them.

use std::process::Command;

use aya::Ebpf;
use aya::maps::PerCpuArray;
use aya::programs::uprobe::UProbeScope;
use aya::programs::{Program, UProbe};
use map_trace::plan::GoTarget;
use map_trace_common::event::counter;
use map_trace_common::probe::Role;
use test_support::Fixture;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "attach_offsets";

fn assign_hits(ebpf: &Ebpf) -> u64 {
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("COUNTERS").expect("COUNTERS map")).unwrap();
    counters
        .get(&(counter::HITS + Role::Assign as u32), 0)
        .unwrap()
        .iter()
        .sum()
}

fn run(f: &Fixture, n: u32) {
    let out = Command::new(&f.path)
        .args(["-n", &n.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} -n {n} failed under the probe: {}",
        f.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Counts `runtime.mapassign_fast64` calls through a probe at `offset` of its entry.
fn count_calls(f: &Fixture, offset: u64) -> (u64, u64) {
    let mut ebpf = Ebpf::load(map_trace::ebpf::object()).expect("load eBPF object");
    // The real assign probe: it counts every hit before it looks for the process's settings.
    let prog: &mut UProbe = ebpf.program_mut("assign").unwrap().try_into().unwrap();
    prog.load().expect("verifier accepts assign");
    prog.attach(offset, &f.path, UProbeScope::AllProcesses)
        .unwrap_or_else(|e| panic!("{}: attach at {offset:#x}: {e}", f.name));
    run(f, 0);
    let base = assign_hits(&ebpf);
    run(f, 5000);
    let with_loop = assign_hits(&ebpf) - base;
    (base, with_loop.wrapping_sub(base))
}

#[test]
fn probe_after_the_prologue_fires_once_per_call_on_every_amd64_fixture() {
    let _gate = test_support::kernel_test(GROUP, "loads eBPF programs");
    let fixtures: Vec<Fixture> = test_support::fixtures_of("mapops")
        .into_iter()
        .filter(|f| f.arch == "x86_64")
        .collect();
    let mut failures = Vec::new();
    for f in &fixtures {
        let t = GoTarget::analyze(&f.path).unwrap();
        let p = t
            .probes
            .iter()
            .find(|p| p.function.name == "runtime.mapassign_fast64")
            .unwrap_or_else(|| panic!("{}: no mapassign_fast64 probe", f.name));
        if p.attach.offset == 0 {
            failures.push(format!(
                "{}: no prologue found: {:?}",
                f.name, p.attach.fallback_reason
            ));
            continue;
        }
        let (base, calls) = count_calls(f, p.uprobe_offset());
        // n=0 still assigns a few keys in literals; the difference is exactly the n loop.
        if calls != 5000 {
            failures.push(format!(
                "{}: {calls} hits for 5000 calls (baseline {base})",
                f.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("exact call counts on {} amd64 fixtures", fixtures.len());
}

#[test]
fn every_probe_program_passes_the_verifier() {
    let _gate = test_support::kernel_test(GROUP, "loads eBPF programs");
    let mut ebpf = Ebpf::load(map_trace::ebpf::object()).expect("load eBPF object");
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    assert!(
        names.len() >= 15,
        "expected every probe program and the exec tracepoint, got {names:?}"
    );
    for name in &names {
        let loaded = match ebpf.program_mut(name).unwrap() {
            Program::UProbe(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            other => panic!("{name}: unexpected program type {:?}", other.prog_type()),
        };
        loaded.unwrap_or_else(|e| panic!("verifier rejects {name}: {e:?}"));
    }
}
