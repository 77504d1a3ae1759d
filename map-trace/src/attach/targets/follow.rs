//! Following processes no `--exe` names: `map-trace run` (its command's descendants) and
//! `--all` (every Go process on the host). Each followed process gets links of its own, so no
//! probe ever stays on a file nothing runs (a running file cannot be rewritten: ETXTBSY), and
//! which processes are followed is decided here: path globs, the Go toolchain's own commands,
//! and a cap on the binaries traced at once. Everything skipped is counted.

use crate::attach::Bpf;
use std::ffi::CString;
use std::path::Path;

use super::{Targets, deploy};
use crate::attach::exec_guard::Fingerprint;
use crate::discover::exe_match::FileId;

/// How processes no `--exe` names are followed.
#[derive(Clone, Debug, Default)]
pub struct Follow {
    /// Trace `go`, `compile`, `link`, `vet`, … (main packages under `cmd/`) too.
    pub toolchain: bool,
    pub filter: PathFilter,
    /// `--all`: a binary's analysis stays after its last process exits (nothing stays
    /// attached), so the next process of the same content is not analysed again.
    pub keep_idle: bool,
    /// Binaries analysed at once at most (`--max-binaries`); beyond, processes are skipped.
    pub max_binaries: usize,
}

/// `--include` / `--exclude`: shell patterns (`*`, `?`, `[…]`; `*` matches `/` too) on the
/// executable's path as the process sees it. Excludes win; without includes everything else
/// is included.
#[derive(Clone, Debug, Default)]
pub struct PathFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl PathFilter {
    pub fn admits(&self, path: &Path) -> bool {
        let hit = |globs: &[String]| globs.iter().any(|g| matches(g, path));
        !hit(&self.exclude) && (self.include.is_empty() || hit(&self.include))
    }
}

/// fnmatch(3) without FNM_PATHNAME: the C library's own shell matching.
fn matches(glob: &str, path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let (Ok(g), Ok(p)) = (
        CString::new(glob),
        CString::new(path.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: two NUL-terminated strings that live through the call.
    unsafe { libc::fnmatch(g.as_ptr(), p.as_ptr(), 0) == 0 }
}

/// Processes skipped when followed, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// By `--include`/`--exclude`.
    pub excluded: u64,
    /// The Go toolchain's own commands.
    pub toolchain: u64,
    /// The binary cap was reached.
    pub cap: u64,
}

impl Skipped {
    /// The `reason` label values, the same list `by_reason` counts under.
    pub fn reasons() -> [&'static str; 3] {
        Skipped::default().by_reason().map(|(r, _)| r)
    }

    pub fn by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("excluded", self.excluded),
            ("toolchain", self.toolchain),
            ("binary_cap", self.cap),
        ]
    }
}

impl Targets {
    /// Follows processes no `--exe` names (`map-trace run`, `--all`).
    pub fn follow(&mut self, f: Follow) {
        self.follow = Some(f);
    }

    pub fn follows(&self) -> bool {
        self.follow.is_some()
    }

    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Whether a followed process running `exe` (the file `file` at content `fp`, reached at
    /// `host_path`) is a target; what is not is remembered (by content) or counted.
    pub(super) fn follow_admits(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut crate::resolve::Resolver,
        exe: &Path,
        host_path: &Path,
        file: FileId,
        fp: Fingerprint,
    ) -> bool {
        let Some(f) = &self.follow else {
            return false;
        };
        if !f.filter.admits(exe) {
            self.skipped.excluded += 1;
            return false;
        }
        if self.binaries.contains_key(&file) {
            return true;
        }
        if !f.toolchain && deploy::toolchain_command(host_path) {
            // Seen once per file: the build tools of `go test`/`go run` are not what is tested.
            self.skipped.toolchain += 1;
            self.rejected
                .insert(file, (fp, "a command of the Go toolchain".into()));
            return false;
        }
        if self.binaries.len() >= f.max_binaries && !self.drop_an_idle_binary(ebpf, resolver) {
            self.skipped.cap += 1;
            return false;
        }
        true
    }

    /// Whether a binary no process runs any more is kept (`--all`).
    pub(super) fn keeps_idle(&self) -> bool {
        self.follow.as_ref().is_some_and(|f| f.keep_idle)
    }

    /// Makes room under the cap by forgetting one binary nothing runs and nothing is attached
    /// to; false when there is none.
    fn drop_an_idle_binary(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut crate::resolve::Resolver,
    ) -> bool {
        let idle = self
            .binaries
            .iter()
            .find(|(_, b)| b.procs == 0 && b.shared.is_none())
            .map(|(f, _)| *f);
        match idle {
            Some(file) => {
                // Nothing of it is attached: there is nothing to wait for.
                self.drop_binary(ebpf, resolver, file).in_background();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_win_and_no_includes_means_everything() {
        let f = PathFilter {
            include: vec![],
            exclude: vec!["/usr/*".into(), "*/debug-*".into()],
        };
        assert!(f.admits(Path::new("/srv/api/bin/api")));
        assert!(!f.admits(Path::new("/usr/local/bin/tool")));
        assert!(!f.admits(Path::new("/srv/debug-api")));
        let f = PathFilter {
            include: vec!["/srv/*".into(), "/app/server".into()],
            exclude: vec!["/srv/legacy/*".into()],
        };
        assert!(f.admits(Path::new("/srv/a/b/c")), "* matches across /");
        assert!(f.admits(Path::new("/app/server")));
        assert!(!f.admits(Path::new("/app/server2")));
        assert!(!f.admits(Path::new("/srv/legacy/x")));
        assert!(!f.admits(Path::new("/opt/x")));
        let f = PathFilter {
            include: vec!["/bin/[ab]?".into()],
            exclude: vec![],
        };
        assert!(f.admits(Path::new("/bin/ax")) && !f.admits(Path::new("/bin/cx")));
    }
}
