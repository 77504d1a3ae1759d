//! The metrics address as users give it: a default on loopback, host names refused, and an
//! address that cannot be bound failing with its own exit code. No root needed: map-trace binds
//! before it loads anything into the kernel. (The live endpoint: `kernel::metrics_endpoint`.)

use std::time::Duration;

use crate::MAP_TRACE;

#[test]
fn a_metrics_address_that_cannot_be_bound_has_its_own_exit_code() {
    // Bound before anything is loaded into the kernel, so no root needed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let me = std::process::id().to_string();
    let limit = Duration::from_secs(1);
    test_support::assert_fails(
        &MAP_TRACE.run_within(&["--pid", &me, "--metrics-addr", &addr], limit),
        14,
        &format!("cannot serve metrics on {addr}: the port is in use"),
    );
    // TEST-NET-1 (RFC 5737): never an address of this host. Not loopback either, so the
    // warning about that comes first, on its own line.
    let o = MAP_TRACE.run_within(&["--pid", &me, "--metrics-addr", "192.0.2.1:9464"], limit);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(14), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("warning: metrics_addr 192.0.2.1:9464 is reachable"));
    assert!(
        lines[1]
            .contains("cannot serve metrics on 192.0.2.1:9464: the address is not on this host"),
        "{err}"
    );
}

#[test]
fn metrics_addr_defaults_to_loopback_and_rejects_host_names() {
    let o = MAP_TRACE.run(&["--pid", "1", "--metrics-addr", "--check-config"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("metrics: http://127.0.0.1:9464/metrics"),
        "{out}"
    );
    let o = MAP_TRACE.run(&["--pid", "1", "--metrics-addr", "localhost:9464"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("IP:PORT"),
        "{o:?}"
    );
}
