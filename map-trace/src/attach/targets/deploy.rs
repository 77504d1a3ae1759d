//! Watched files that change on disk: a file rewritten in place loses its probes before its new
//! content runs, a file moved or copied in under a watched name gets probes before its first
//! instruction, and a file no name leads to any more is let go once nothing runs it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::attach::Bpf;
use gobin::elf::ElfImage;
use gobin::input;

use super::{Targets, describe};
use crate::attach::exec_guard::{Fingerprint, Held, dirs_for, file_id};
use crate::discover::exe_match::FileId;
use crate::error::{TargetError, TraceError};
use crate::resolve::Resolver;

/// Opens the regular file at `path`, which must be `file`, and maps it read-only. The
/// fingerprint is taken before anything is read, so a write during the analysis shows as a
/// change at the next check.
pub(super) fn open_binary(
    path: &Path,
    name: &Path,
    file: FileId,
) -> Result<(std::fs::File, Fingerprint, ElfImage), TraceError> {
    // Checks the type before opening (a FIFO must not block us) and the size.
    let (open, _) = input::open_regular(path, input::MAX_BINARY_BYTES)
        .map_err(|e| TargetError::from_input(name, e))?;
    let meta = open.metadata().map_err(|e| TargetError::from_io(name, e))?;
    let (opened, fingerprint) = (file_id(&meta), Fingerprint::of(&open, &meta));
    if opened != file {
        return Err(TraceError::Other(format!(
            "{}: replaced while being opened; looked at again at its next exec",
            name.display()
        )));
    }
    let image = ElfImage::map(name.to_path_buf(), &open)?;
    Ok((open, fingerprint, image))
}

/// Whether `path` is one of the Go distribution's own commands (`go`, `compile`, `link`,
/// `vet`, …: a main package under `cmd/`), read from its build info alone.
pub(super) fn toolchain_command(path: &Path) -> bool {
    let Ok((open, _)) = input::open_regular(path, input::MAX_BINARY_BYTES) else {
        return false;
    };
    let Ok(image) = ElfImage::map(path.to_path_buf(), &open) else {
        return false;
    };
    let Ok(file) = image.object() else {
        return false;
    };
    gobin::buildinfo::read(&file)
        .ok()
        .and_then(|b| b.main_path)
        .is_some_and(|p| p.starts_with("cmd/"))
}

impl Targets {
    /// The `--exe` paths as named.
    pub fn names(&self) -> Vec<PathBuf> {
        self.specs.iter().map(|s| s.path.clone()).collect()
    }

    /// Tells the exec guard which content each settled file has.
    pub(super) fn settle(&self) {
        let Some(g) = &self.guard else { return };
        let files = self
            .binaries
            .iter()
            .map(|(f, b)| (*f, b.fingerprint))
            .chain(self.rejected.iter().map(|(f, (fp, _))| (*f, *fp)));
        g.settle_all(files.collect());
    }

    /// Detaches and forgets a binary whose content changed, with its processes' entries.
    /// Returns the processes that were detached: any still running were started after the
    /// change and run the new content.
    pub(super) fn retire(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        file: FileId,
    ) -> Vec<u32> {
        let pids: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.file == file)
            .map(|(pid, _)| *pid)
            .collect();
        for &pid in &pids {
            self.remove(ebpf, resolver, pid);
        }
        let d = self.drop_binary(ebpf, resolver, file);
        self.keep_closing(d);
        // The new content must not meet one of these probes.
        self.wait_closed();
        self.rejected.remove(&file);
        pids
    }

    /// Processes to look at again (their file's probes were retired under them).
    pub fn take_readd(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.readd)
    }

    /// Settles an exec the guard holds: stale probes go, a watched file gets probes for the
    /// content about to run, then the exec is let go. Returns what to tell the user.
    pub fn on_held(&mut self, ebpf: &mut Bpf, resolver: &mut Resolver, held: Held) -> Vec<String> {
        let mut said = Vec::new();
        if !held.exec {
            // An open: its findings were read before this call, which is all it waits for.
            held.release();
            return said;
        }
        let file = held.file;
        let name = held.name.clone();
        if self
            .binaries
            .get(&file)
            .is_some_and(|b| b.fingerprint != held.fingerprint)
        {
            let pids = self.retire(ebpf, resolver, file);
            self.readd.extend(pids);
            said.push(format!(
                "{}: changed on disk; its old probes were detached before the new content ran",
                name.display()
            ));
        }
        self.rejected
            .retain(|f, (fp, _)| *f != file || *fp == held.fingerprint);
        let named = self
            .specs
            .iter()
            .any(|s| s.path == name || s.file() == Some(file));
        if named && !self.binaries.contains_key(&file) && !self.rejected.contains_key(&file) {
            said.push(match self.attach_file(ebpf, resolver, &held) {
                Ok(msg) => msg,
                Err(e) => {
                    self.rejected
                        .insert(file, (held.fingerprint, e.to_string()));
                    format!("not tracing {}: {e}", name.display())
                }
            });
        }
        self.settle();
        held.release();
        said
    }

    fn attach_file(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        held: &Held,
    ) -> Result<String, TraceError> {
        let at = super::FileAt {
            file: held.file,
            fingerprint: held.fingerprint,
            path: &held.path,
            name: &held.name,
        };
        let new = self.binary(ebpf, resolver, at)?;
        if let Err(e) = self.share(ebpf, held.file) {
            if new {
                self.drop_binary(ebpf, resolver, held.file).in_background();
            }
            return Err(e.into());
        }
        let b = &self.binaries[&held.file];
        Ok(format!(
            "watching {} ({}): {} probes attached before its first instruction",
            held.name.display(),
            describe(&b.target, self.mode),
            b.target.probes_for(self.mode).count()
        ))
    }

    /// Marks the directories the watched names lead through now, for the exec guard. Cheap,
    /// and first at every look: a new release directory must be marked before a symlink flips
    /// to it and its file runs. Returns what could not be marked.
    pub fn mark_dirs(&mut self) -> Vec<String> {
        let names = self.names();
        let errors = match self.guard.as_mut() {
            Some(g) => g.mark_dirs(&dirs_for(&names)),
            None => Vec::new(),
        };
        errors
            .into_iter()
            .map(|e| format!("cannot hold execs in {e}"))
            .collect()
    }

    /// Looks at the watched names again: binaries nothing runs whose name leads elsewhere now,
    /// or whose content changed, are let go (probes, settings, the open file and with it a
    /// deleted file's blocks). Detaching takes a while: call [`Targets::mark_dirs`] first.
    pub fn rescan(&mut self, ebpf: &mut Bpf, resolver: &mut Resolver) {
        let named: HashSet<FileId> = self.specs.iter().filter_map(|s| s.file()).collect();
        let gone: Vec<(FileId, bool)> = self
            .binaries
            .iter()
            .filter_map(|(f, b)| {
                let changed = b
                    .open
                    .metadata()
                    .map_or(true, |m| Fingerprint::of(&b.open, &m) != b.fingerprint);
                (b.procs == 0 && (!named.contains(f) || changed)).then_some((*f, changed))
            })
            .collect();
        let mut any_changed = false;
        for (f, changed) in gone {
            let d = self.drop_binary(ebpf, resolver, f);
            self.keep_closing(d);
            any_changed |= changed;
        }
        // Probes of a file nothing names any more are right for its content and close in the
        // background; those of a changed file must be gone before it runs again.
        if any_changed {
            self.wait_closed();
        }
        // A rejected file no name leads to will not be exec'd as a target again.
        self.rejected.retain(|f, _| named.contains(f));
        self.settle();
    }
}
