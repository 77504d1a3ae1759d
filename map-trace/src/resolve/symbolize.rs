//! From the return addresses the probes captured to `function (file:line)` frames, using the
//! binary's own `.gopclntab` (present in stripped binaries too), with inlined calls expanded.

use gobin::elf::ElfImage;
use gobin::pclntab::Pclntab;
use serde::Serialize;

use crate::error::TargetError;

/// One logical frame: a function and the line it was executing (for callers, the call).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl Frame {
    /// For addresses outside any Go function (C code in cgo programs, a broken chain).
    fn unknown(pc: u64) -> Self {
        Frame {
            function: format!("?? {pc:#x}"),
            file: String::new(),
            line: 0,
        }
    }

    /// `file:line`, or nothing known.
    pub fn location(&self) -> String {
        if self.file.is_empty() {
            "?".into()
        } else {
            format!("{}:{}", self.file, self.line)
        }
    }
}

/// The line tables of one executable, and where one process loaded it.
pub struct Symbolizer {
    pclntab: Pclntab,
    /// Runtime address minus link-time address (non-zero for PIE).
    bias: u64,
}

impl Symbolizer {
    pub fn new(image: &ElfImage, bias: u64) -> Result<Self, TargetError> {
        let file = object::File::parse(image.data())
            .map_err(|e| image.malformed(format!("ELF headers: {e}")))?;
        let pclntab =
            Pclntab::read_in(&file, image.backing()).map_err(|e| image.malformed(e.to_string()))?;
        Ok(Symbolizer { pclntab, bias })
    }

    pub fn bias(&self) -> u64 {
        self.bias
    }

    /// The frames of a captured stack (runtime return addresses, innermost first), trimmed to
    /// what the user wrote: see [`trim`].
    pub fn stack(&self, pcs: &[u64]) -> Vec<Frame> {
        trim(self.stack_untrimmed(pcs))
    }

    /// `stack` with the runtime's own frames kept: what the runtime was doing (a crash's).
    pub fn stack_untrimmed(&self, pcs: &[u64]) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(pcs.len() * 2);
        for &pc in pcs {
            frames.extend(self.frames_at(pc));
        }
        frames
    }

    /// The logical frames (inlined calls expanded, innermost first) of the call that returns to
    /// the runtime address `ret`.
    pub fn frames_at(&self, ret: u64) -> Vec<Frame> {
        // The call instruction is one byte back: that is the line the user sees, and it stays
        // inside an inlined body that ends with the call.
        let link = ret.wrapping_sub(self.bias).wrapping_sub(1);
        let expanded = self.pclntab.inlined_frames(link);
        if expanded.is_empty() {
            return vec![Frame::unknown(ret)];
        }
        expanded
            .into_iter()
            .map(|(function, file, line)| Frame {
                function,
                file,
                line,
            })
            .collect()
    }
}

/// Whether a frame belongs to the Go runtime's map implementation or scheduler, which the user
/// did not write: the linkname shims between a map statement and the probed function, and the
/// goroutine entry frames.
fn is_runtime(f: &Frame) -> bool {
    const DIRS: [&str; 2] = ["runtime/", "internal/runtime/"];
    // Pushed linknames such as `reflect.mapdelete` are runtime code under another package's
    // name: their file gives them away.
    f.function.starts_with("runtime.")
        || f.function.starts_with("internal/runtime/")
        || DIRS
            .iter()
            .any(|d| f.file.starts_with(d) || f.file.contains(&format!("/src/{d}")))
}

/// Drops the runtime frames above the first frame the user wrote (so the first frame is the
/// line with `m[k] = v`, `delete(m, k)`, `clear(m)` or `for … range m`, or the library call
/// such as `reflect.Value.SetMapIndex` that made it) and the runtime frames below the last one
/// (`runtime.main`, `runtime.goexit`), as Go's own tracebacks do. A stack of runtime frames
/// only is kept whole.
pub fn trim(frames: Vec<Frame>) -> Vec<Frame> {
    let Some(first) = frames.iter().position(|f| !is_runtime(f)) else {
        return frames;
    };
    let last = frames.iter().rposition(|f| !is_runtime(f)).unwrap_or(first);
    frames[first..=last].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(function: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: "/src/x.go".into(),
            line,
        }
    }

    #[test]
    fn runtime_shims_and_goroutine_entry_are_trimmed() {
        let frames = vec![
            f("runtime.mapdelete_faststr", 1),
            f("internal/runtime/maps.(*Map).Delete", 2),
            f("main.(*Cache).sweep", 42),
            f("runtime.doInit", 3),
            f("main.main", 55),
            f("runtime.main", 4),
            f("runtime.goexit", 5),
        ];
        let t = trim(frames);
        let names: Vec<&str> = t.iter().map(|f| f.function.as_str()).collect();
        // Runtime frames between user frames stay: they are part of how the code got there.
        assert_eq!(
            names,
            ["main.(*Cache).sweep", "runtime.doInit", "main.main"]
        );
    }

    #[test]
    fn library_frames_are_kept() {
        let mut linkname = f("reflect.mapdelete_faststr", 1);
        linkname.file = "/usr/lib/go/src/runtime/map.go".into();
        let t = trim(vec![
            linkname,
            f("runtime.reflect_mapdelete", 1),
            f("reflect.Value.SetMapIndex", 2),
            f("main.update", 3),
        ]);
        assert_eq!(t[0].function, "reflect.Value.SetMapIndex");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn all_runtime_stacks_are_kept_whole() {
        let frames = vec![f("runtime.gcBgMarkWorker", 1), f("runtime.goexit", 2)];
        assert_eq!(trim(frames.clone()), frames);
        assert!(trim(Vec::new()).is_empty());
    }
}
