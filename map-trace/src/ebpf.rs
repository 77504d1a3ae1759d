//! The eBPF object built from map-trace-ebpf by build.rs, embedded in the daemon.

/// The compiled eBPF object (an ELF for the bpf target), aligned as aya requires.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/map-trace"))
}

#[cfg(test)]
mod tests {
    use map_trace_common::program::{Program, map};

    /// The kernel/user contract by name: every program and map the daemon asks for by name is in
    /// the object it embeds. Parsed as aya parses it at load time, so this needs no root.
    #[test]
    fn every_name_the_daemon_uses_is_in_the_object() {
        let obj = aya_obj::Object::parse(super::object()).expect("the embedded object parses");
        let missing: Vec<&str> = Program::ALL
            .iter()
            .map(|p| p.name())
            .filter(|n| !obj.programs.contains_key(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "programs not in the object: {missing:?}"
        );
        let missing: Vec<&str> = map::ALL
            .into_iter()
            .filter(|n| !obj.maps.contains_key(*n))
            .collect();
        assert!(missing.is_empty(), "maps not in the object: {missing:?}");
        // And nothing the object has goes unnamed on this side (a program added there only).
        let unnamed: Vec<&String> = obj
            .programs
            .keys()
            .filter(|k| !Program::ALL.iter().any(|p| p.name() == k.as_str()))
            .collect();
        assert!(
            unnamed.is_empty(),
            "programs the daemon has no name for: {unnamed:?}"
        );
    }
}
