//! Real containers (podman, images built here `FROM scratch`; see `test_support::podman`): a Go
//! program in a container is traced from the host by `--exe` (its path inside the container)
//! and by `--all`; map-trace itself runs in a container exactly as the DaemonSet's pod spec
//! says (host pid namespace, its capabilities and nothing else, read-only root, the
//! ConfigMap's config) and traces a Go program in another container; and the .deb installs in
//! a fresh Debian container. Findings name the container.

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use test_support::daemon::Daemon;
use test_support::podman::{self, DEBIAN_IMAGE, Image, Named, RUN_LIMITS};
use test_support::{Reaped, Scratch, kernel_test, repo_path, wait_timeout};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "containers";

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GO: &str = "1.26.6";
const RACE: &str = "cross_insert_str";

/// An image holding only the scenarios program (static) at /app.
fn scenarios_image(dir: &Scratch, what: &str) -> Image {
    std::fs::copy(
        test_support::host_fixture("scenarios", GO).path,
        dir.join("app"),
    )
    .unwrap();
    Image::build(
        &format!("localhost/map-trace-test-{what}:{}", std::process::id()),
        dir.path(),
        "FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n",
    )
}

/// A scenario in a container, waiting for a line on stdin; (its name, the podman client, its
/// pid on the host, its full id — read now: `--rm` removes it when it ends).
fn start_target(image: &Image, what: &str) -> (Named, Reaped, u32, String) {
    let name = Named::new(what);
    let client = Reaped(
        podman::podman()
            .args(["run", "--rm", "-i", "--network", "none", "--name", &name.0])
            .args(RUN_LIMITS)
            .args([&image.0, RACE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman run"),
    );
    let pid = name.pid(Duration::from_secs(60));
    let id = name.id();
    (name, client, pid, id)
}

/// Lets the scenario run; it must end as a correct Go program does.
fn release(mut client: Reaped) {
    client.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let code = wait_timeout(&mut client.0, Duration::from_secs(60)).unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let _ = client.0.stdout.take().unwrap().read_to_string(&mut out);
    let _ = client.0.stderr.take().unwrap().read_to_string(&mut err);
    assert!(
        code == Some(0) && out.trim() == "ok",
        "the program in the container failed ({code:?}): {out}{err}"
    );
}

/// The JSON findings of `pid` in map-trace's stdout.
fn findings_of(stdout: &str, pid: u32) -> Vec<Value> {
    test_support::json_findings(stdout)
        .into_iter()
        .filter(|v| v["pid"] == pid)
        .collect()
}

/// Traces one container under map-trace started with `args` on the host; returns its finding.
fn traced_from_host(args: &[&str], ready: &str, what: &str) -> (Value, String) {
    podman::require();
    let dir = Scratch::new(what);
    let image = scenarios_image(&dir, what);
    let mut d = Daemon::start(MAP_TRACE, args, false);
    d.wait_line(ready, Duration::from_secs(60));
    let (_name, client, pid, id) = start_target(&image, what);
    let line = d.wait_line(&format!("tracing pid {pid} "), Duration::from_secs(30));
    assert!(line.contains("(/app)"), "{line}");
    release(client);
    d.wait_line(&format!("pid {pid} exited"), Duration::from_secs(30));
    let (code, out, err) = d.terminate();
    assert_eq!(code, Some(0), "{err}");
    let mine = findings_of(&out, pid);
    let f = mine
        .first()
        .unwrap_or_else(|| panic!("no finding of the container's pid {pid}:\n{err}"))
        .clone();
    assert_eq!(f["kind"], "concurrent_write_during_iteration", "{f}");
    assert_eq!(
        f["writer_stack"][0]["function"], "main.crossInsertStr.func1",
        "{f}"
    );
    (f, id)
}

#[test]
fn exe_traces_a_go_program_in_a_container_by_its_path_there() {
    let _gate = kernel_test(GROUP, "runs podman containers and attaches uprobes");
    // Every occurrence: the other test's container runs the same /app, and its finding would
    // be this one's group.
    let args = ["--exe", "/app", "--format", "json", "--every-occurrence"];
    let (f, id) = traced_from_host(&args, "inside their own root", "exe");
    assert_eq!(f["container_id"], id.as_str(), "{f}");
    assert!(
        f["cgroup"].as_str().unwrap_or("").contains(&id),
        "the cgroup does not name the container: {f}"
    );
}

#[test]
fn all_traces_a_go_program_in_a_container_and_names_it() {
    let _gate = kernel_test(GROUP, "runs podman containers and attaches uprobes");
    let args = [
        "--all",
        "--include",
        "/app",
        "--format",
        "json",
        "--every-occurrence",
    ];
    let (f, id) = traced_from_host(&args, "watching every Go process", "all");
    assert_eq!(f["container_id"], id.as_str(), "{f}");
}

/// map-trace's own image (dist/container/Containerfile around `cargo xtask dist`'s static
/// binary) run with what the DaemonSet's pod spec asks — each flag read from the manifest —
/// traces a Go program in another container.
#[test]
fn map_trace_in_a_container_run_as_the_daemonset_says_traces_another_container() {
    // A group of its own: this map-trace traces every Go program on the host, and its
    // findings are grouped as configured, so the other tests' containers must not overlap.
    let _gate = kernel_test(
        "containers_daemonset",
        "runs map-trace in a container with the DaemonSet's capabilities",
    );
    podman::require();
    let docs = test_support::kubernetes_documents(&repo_path("dist/kubernetes/map-trace.yaml"));
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in the manifest"))
    };
    let (cm, ds) = (of("ConfigMap"), of("DaemonSet"));
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];

    let dir = Scratch::new("daemonset");
    let config_dir = dir.join("config");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        cm["data"]["config.toml"].as_str().unwrap(),
    )
    .unwrap();
    let arch = std::env::consts::ARCH;
    let own = Image::build_file(
        &format!("localhost/map-trace-test-self:{}", std::process::id()),
        &test_support::dist_dir(),
        &repo_path("dist/container/Containerfile"),
        &[&format!("ARCH={arch}"), &format!("VERSION={VERSION}")],
    );

    let name = Named::new("daemonset");
    let mut run = podman::podman();
    run.args(["run", "--rm", "--name", &name.0, "--network", "none"]);
    run.args(RUN_LIMITS);
    assert_eq!(spec["hostPID"], true);
    run.arg("--pid=host");
    run.arg(format!(
        "--user={}:{}",
        sc["runAsUser"].as_u64().unwrap(),
        sc["runAsGroup"].as_u64().unwrap()
    ));
    assert_eq!(
        sc["privileged"], false,
        "the test runs what the manifest says"
    );
    for cap in sc["capabilities"]["drop"].as_array().unwrap() {
        run.arg(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    for cap in sc["capabilities"]["add"].as_array().unwrap() {
        run.arg(format!("--cap-add={}", cap.as_str().unwrap()));
    }
    if sc["readOnlyRootFilesystem"] == true {
        run.arg("--read-only");
    }
    if sc["allowPrivilegeEscalation"] == false {
        run.args(["--security-opt", "no-new-privileges"]);
    }
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
    run.args(["--security-opt", "seccomp=unconfined"]);
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    run.arg("-v")
        .arg(format!("{}:{mount}:ro", config_dir.display()));
    run.arg(&own.0);
    for a in c["args"].as_array().unwrap() {
        run.arg(a.as_str().unwrap());
    }
    let mut d = Daemon::spawn(run, None);
    d.wait_line("watching every Go process", Duration::from_secs(120));

    let target_dir = Scratch::new("daemonset-target");
    let image = scenarios_image(&target_dir, "daemonset-target");
    let (_target, client, pid, id) = start_target(&image, "daemonset-target");
    d.wait_line(&format!("tracing pid {pid} "), Duration::from_secs(60));
    release(client);
    d.wait_line(&format!("pid {pid} exited"), Duration::from_secs(30));
    let (code, out, err) = d.terminate();
    drop(name);
    assert_eq!(code, Some(0), "{err}");
    let mine = findings_of(&out, pid);
    let f = mine
        .first()
        .unwrap_or_else(|| panic!("no finding of the other container's pid {pid}:\n{err}"));
    // The ConfigMap's sentinel mode reports the range that saw the insert.
    assert!(
        [
            "map_changed_during_iteration",
            "concurrent_write_during_iteration"
        ]
        .contains(&f["kind"].as_str().unwrap_or("")),
        "{f}"
    );
    assert_eq!(f["container_id"], id.as_str(), "{f}");
}

/// A fresh Debian (debootstrap's minbase, imported by `cargo xtask setup`): `dpkg -i` of the
/// .deb, then what it installed runs.
#[test]
fn the_deb_installs_and_runs_in_a_fresh_debian_container() {
    let _gate = kernel_test(GROUP, "runs podman containers");
    podman::require();
    let exists = podman::podman()
        .args(["image", "exists", DEBIAN_IMAGE])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        exists,
        "no {DEBIAN_IMAGE} image: `cargo xtask setup` makes it (debootstrap from the Debian mirror)"
    );
    let deb_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no .deb for {other}"),
    };
    let fixture = test_support::host_fixture("scenarios", GO).path;
    let script = format!(
        "set -e
         dpkg -i /dist/map-trace_{VERSION}_{deb_arch}.deb
         dpkg-query -W -f '${{Status}}\\n' map-trace
         map-trace --version
         map-trace --config /etc/map-trace/config.toml --check-config
         map-trace inspect /fixture/app
         test -s /usr/share/man/man1/map-trace.1.gz
         test -s /usr/lib/systemd/system/map-trace.service"
    );
    let o = podman::podman()
        .args(["run", "--rm", "--network", "none"])
        .args(RUN_LIMITS)
        .arg("-v")
        .arg(format!("{}:/dist:ro", test_support::dist_dir().display()))
        .arg("-v")
        .arg(format!("{}:/fixture/app:ro", fixture.display()))
        .args([DEBIAN_IMAGE, "sh", "-c", &script])
        .output()
        .expect("podman run");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}: {out}{err}", o.status);
    assert!(out.contains("install ok installed"), "{out}");
    assert!(out.contains(&format!("map-trace {VERSION}")), "{out}");
    assert!(out.contains(&format!("go{GO}")), "{out}");
}
