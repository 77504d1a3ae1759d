//! dist/kubernetes: the DaemonSet and its ConfigMap are valid against the Kubernetes API's own
//! schemas (PyPI `kubernetes-validate`, strict: no unknown field) for the oldest and newest
//! Kubernetes the README names, the config they carry is one map-trace accepts, and the pieces
//! agree with each other and with the systemd unit (capabilities, ports, probes, labels).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use test_support::{Scratch, repo_path};

use crate::MAP_TRACE;

fn documents(path: &Path) -> Vec<Value> {
    test_support::kubernetes_documents(path)
}

fn validate(path: &Path, version: &str) -> std::process::Output {
    let tool = test_support::kubernetes_validate_venv().join("bin/kubernetes-validate");
    Command::new(tool)
        .args(["--strict", "-k", version])
        .arg(path)
        .output()
        .expect("run kubernetes-validate")
}

#[test]
fn the_daemonset_is_valid_for_kubernetes_1_30_to_1_37() {
    let manifest = repo_path("dist/kubernetes/map-trace.yaml");
    for version in ["1.30", "1.37"] {
        let o = validate(&manifest, version);
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{version}: {out}");
        for kind in ["namespace", "serviceaccount", "configmap", "daemonset"] {
            assert!(
                out.contains(&format!("passed for resource {kind}/map-trace")),
                "{version}: {out}"
            );
        }
    }
    // The validator does reject: a misspelt field and a wrong type.
    let dir = Scratch::new("k8s-broken");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for (from, to) in [
        ("hostPID: true", "hostPid: true"),
        ("containerPort: 9464", "containerPort: \"nine\""),
    ] {
        assert!(text.contains(from));
        let broken = dir.join("broken.yaml");
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let o = validate(&broken, "1.37");
        assert!(!o.status.success(), "{to:?} was accepted");
    }
}

#[test]
fn the_pieces_agree_and_the_config_is_one_map_trace_accepts() {
    let docs = documents(&repo_path("dist/kubernetes/map-trace.yaml"));
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let (cm, ds) = (of("ConfigMap"), of("DaemonSet"));

    // The config: checked by map-trace itself.
    let dir = Scratch::new("k8s-config");
    let config = dir.join("config.toml");
    std::fs::write(&config, cm["data"]["config.toml"].as_str().unwrap()).unwrap();
    let o = MAP_TRACE.run(&["--config", config.to_str().unwrap(), "--check-config"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("all: every Go process on this host"), "{out}");
    assert!(out.contains("sentinel"), "{out}");
    assert!(out.contains("http://0.0.0.0:9464/metrics"), "{out}");

    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true);
    let c = &spec["containers"][0];
    assert_eq!(
        c["args"],
        serde_json::json!(["--config", "/etc/map-trace/config.toml"])
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/map-trace");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // Exactly the systemd unit's capabilities.
    let added: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let unit = std::fs::read_to_string(repo_path("dist/systemd/map-trace.service")).unwrap();
    let bounding: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(added, bounding);
    // The metrics port: the config's, the container's, the probe's and the annotations'.
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9464);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9464");
    for k in ["requests", "limits"] {
        assert!(c["resources"][k]["memory"].is_string(), "resources.{k}");
    }
    // The PodMonitor scrapes these pods on that port.
    let pm = &documents(&repo_path("dist/kubernetes/podmonitor.yaml"))[0];
    assert_eq!(pm["kind"], "PodMonitor");
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "PodMonitor selects {k}={v}");
    }
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        pm["spec"]["selector"]["matchLabels"]
    );
}
