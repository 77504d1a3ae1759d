//! Where a process lives: its cgroup, the container and systemd unit that cgroup names, and on
//! a Kubernetes node its pod and container — read from /proc alone (the cgroup path, the files
//! the kubelet puts in the container), with no API server and no container runtime socket.
//! The parsers are pure and tested on the path shapes of systemd, cgroupfs, Docker, Podman,
//! containerd and CRI-O.

use std::path::Path;

/// What is known of where a process runs; each field absent when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

impl Location {
    /// Reads it for `pid` (through `proc`, normally /proc); best effort, never an error.
    pub fn of(proc: &Path, pid: u32) -> Location {
        let dir = proc.join(pid.to_string());
        let text = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        let mut l = from_cgroup_file(&text);
        if l.pod_uid.is_some() {
            let read = |rel: &str| {
                std::fs::read_to_string(dir.join("root").join(rel))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            l.pod_namespace = read("var/run/secrets/kubernetes.io/serviceaccount/namespace");
            // The kubelet sets the container's hostname to the pod's name.
            l.pod_name = read("etc/hostname");
            let mounts = std::fs::read_to_string(dir.join("mountinfo")).unwrap_or_default();
            l.container_name = container_name_from_mounts(&mounts);
        }
        l
    }

    /// The `container` metric label: the Kubernetes container name, else the systemd unit,
    /// else empty. Never an id: ids change with every restart, names do not.
    pub fn container_label(&self) -> &str {
        self.container_name
            .as_deref()
            .or(self.unit.as_deref())
            .unwrap_or("")
    }

    /// The `pod` metric label: `namespace/name`, else empty.
    pub fn pod_label(&self) -> String {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => String::new(),
        }
    }

    /// One line for the human output, or None when nothing is known beyond the root cgroup.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        let pod = self.pod_label();
        if !pod.is_empty() {
            parts.push(format!("pod {pod}"));
        }
        if let Some(c) = &self.container_name {
            parts.push(format!("container {c}"));
        }
        if let Some(id) = &self.container_id {
            parts.push(format!("container id {}", &id[..id.len().min(12)]));
        }
        if let Some(u) = &self.unit {
            parts.push(format!("unit {u}"));
        }
        if parts.is_empty() {
            self.cgroup
                .as_ref()
                .filter(|c| c.as_str() != "/")
                .map(|c| format!("cgroup {c}"))
        } else {
            Some(parts.join(", "))
        }
    }
}

/// From /proc/PID/cgroup: the cgroup v2 path (`0::PATH`), else the v1 `name=systemd` one, and
/// what that path names.
pub fn from_cgroup_file(text: &str) -> Location {
    let mut v2 = None;
    let mut systemd = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrl.is_empty() {
            v2 = Some(path);
        } else if ctrl == "name=systemd" {
            systemd = Some(path);
        }
    }
    // Under a v1 hierarchy the v2 line is there but says "/": the systemd one says more.
    let path = match (v2, systemd) {
        (Some("/"), Some(s)) => s,
        (Some(p), _) => p,
        (None, Some(s)) => s,
        (None, None) => return Location::default(),
    };
    from_cgroup_path(path)
}

/// What a cgroup path names.
pub fn from_cgroup_path(path: &str) -> Location {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let container_id = parts.iter().rev().find_map(|p| container_id(p));
    let unit = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        .map(|p| p.to_string());
    let pod_uid = parts.iter().find_map(|p| pod_uid(p));
    Location {
        cgroup: Some(path.to_string()),
        container_id,
        unit,
        pod_uid,
        ..Location::default()
    }
}

/// A container id in one path component: `docker-ID.scope`, `cri-containerd-ID.scope`,
/// `crio-ID.scope`, `libpod-ID.scope` (systemd driver) or a bare 64-hex `ID` (cgroupfs driver).
/// A runtime's monitor (`libpod-conmon-…`, `crio-conmon-…`) is not the container.
fn container_id(component: &str) -> Option<String> {
    if component.contains("conmon") {
        return None;
    }
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let id = name.rsplit('-').next().unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// A pod's uid in one component: `kubepods-burstable-pod<uid with _>.slice` (systemd driver)
/// or `pod<uid>` (cgroupfs driver).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let after = &name[name.rfind("pod")? + 3..];
    let uid = after.replace('_', "-");
    let uuid_shape = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    uuid_shape.then_some(uid)
}

/// The kubelet bind-mounts each container's termination log from
/// `…/pods/<uid>/containers/<name>/<id>`: the mount's root names the container.
pub fn container_name_from_mounts(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let root = l.split_whitespace().nth(3)?;
        let (_, rest) = root.split_once("/containers/")?;
        root.contains("/pods/")
            .then(|| rest.split('/').next().map(str::to_string))
            .flatten()
            .filter(|n| !n.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c0a7e5b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e";

    #[test]
    fn systemd_services_and_sessions_name_their_unit() {
        let l = from_cgroup_file("0::/system.slice/api.service\n");
        assert_eq!(l.unit.as_deref(), Some("api.service"));
        assert_eq!(l.container_id, None);
        assert_eq!(l.describe().as_deref(), Some("unit api.service"));
        assert_eq!(l.container_label(), "api.service");
        // A v1 host: the v2 line says "/", the systemd one says where.
        let l = from_cgroup_file(
            "12:memory:/system.slice/api.service\n1:name=systemd:/system.slice/api.service\n0::/\n",
        );
        assert_eq!(l.cgroup.as_deref(), Some("/system.slice/api.service"));
        assert_eq!(from_cgroup_file("0::/\n").describe(), None);
    }

    #[test]
    fn container_runtimes_name_the_container_id() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            format!("/system.slice/crio-{ID}.scope"),
        ] {
            let l = from_cgroup_path(&path);
            assert_eq!(l.container_id.as_deref(), Some(ID), "{path}");
        }
        let l = from_cgroup_path(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(l.container_id, None, "conmon is not the container");
    }

    #[test]
    fn kubernetes_paths_name_the_pod_both_drivers() {
        let uid = "8d2f4b1e-6c3a-4e5f-9a7b-1c2d3e4f5a6b";
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}/{ID}");
        for path in [systemd, cgroupfs] {
            let l = from_cgroup_path(&path);
            assert_eq!(l.pod_uid.as_deref(), Some(uid), "{path}");
            assert_eq!(l.container_id.as_deref(), Some(ID), "{path}");
        }
        let mounts = format!(
            "1042 1030 259:1 /var/lib/kubelet/pods/{uid}/containers/api/5a1b2c3d /dev/termination-log rw,relatime - ext4 /dev/root rw\n"
        );
        assert_eq!(container_name_from_mounts(&mounts).as_deref(), Some("api"));
        let l = Location {
            pod_namespace: Some("shop".into()),
            pod_name: Some("api-7d9f-x2k".into()),
            container_name: Some("api".into()),
            ..from_cgroup_path(&format!("/kubepods/pod{uid}/{ID}"))
        };
        assert_eq!(l.pod_label(), "shop/api-7d9f-x2k");
        assert_eq!(l.container_label(), "api");
        assert_eq!(
            l.describe().as_deref(),
            Some("pod shop/api-7d9f-x2k, container api, container id 3f1c0a7e5b2d")
        );
    }
}
