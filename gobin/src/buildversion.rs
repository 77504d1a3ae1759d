//! The Go version of a binary whose build info is gone (esbuild's npm packages ship with
//! `.go.buildinfo` removed; `go version` cannot read them either): the runtime's own copy,
//! `runtime.buildVersion`, a string the linker writes into every Go program (`go1.26.5`,
//! `go1.24.11 X:noswissmap`) and keeps, because `runtime.Version()` returns it.
//!
//! With a symbol table, the symbol names the string's header. Stripped, the header is found
//! the way it is laid out: a read-only `go1.…` string, and an 8-byte-aligned (address, length)
//! pair pointing at exactly it in writable data. Other `go1.…` texts in a binary (error
//! messages, module paths) are parts of longer strings, so no header points at them alone.

use std::collections::{BTreeSet, HashMap};

use object::elf::{PF_W, PF_X};
use object::read::elf::ElfFile64;
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

use crate::buildinfo::{self, BuildInfo, p_flags, read_vaddr};

/// Where a binary's Go version came from (`inspect` says it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSource {
    /// `.go.buildinfo`, as `go version` reads it.
    BuildInfo,
    /// No build info: `runtime.buildVersion`, found by its symbol.
    BuildVersionSymbol,
    /// No build info, no symbol table: `runtime.buildVersion`, found by its string header.
    BuildVersionScan,
}

impl VersionSource {
    pub fn describe(self) -> &'static str {
        match self {
            VersionSource::BuildInfo => "build info",
            VersionSource::BuildVersionSymbol => {
                "runtime.buildVersion (by its symbol; the binary has no build info)"
            }
            VersionSource::BuildVersionScan => {
                "runtime.buildVersion (by its string header; the binary has no build info and no symbols)"
            }
        }
    }
}

/// Longest version string accepted (`devel go1.27-abcdef… X:a,b,c` fits).
const MAX_VERSION: u64 = 128;

/// The build info `runtime.buildVersion` implies (version and GOEXPERIMENTs; no settings),
/// or why it cannot be had.
pub fn read(file: &ElfFile64<'_>) -> Result<(BuildInfo, VersionSource), String> {
    if let Some(sym) = file.symbol_by_name("runtime.buildVersion") {
        let header =
            read_vaddr(file, sym.address(), 16).ok_or("runtime.buildVersion unreadable")?;
        let (ptr, len) = pair(&header, 0);
        if len == 0 || len > MAX_VERSION {
            return Err(format!("runtime.buildVersion has length {len}"));
        }
        let text = read_vaddr(file, ptr, len).ok_or("runtime.buildVersion's string unreadable")?;
        let raw = String::from_utf8_lossy(&text).into_owned();
        return Ok((info(raw)?, VersionSource::BuildVersionSymbol));
    }
    let found = scan(file);
    match found.len() {
        1 => {
            let raw = found.into_iter().next().expect("one");
            Ok((info(raw)?, VersionSource::BuildVersionScan))
        }
        0 => Err("no runtime.buildVersion string found".into()),
        _ => Err(format!(
            "several strings could be runtime.buildVersion: {}",
            found.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

fn info(raw: String) -> Result<BuildInfo, String> {
    let bi = buildinfo::interpret(raw, "");
    if bi.version.is_none() {
        return Err(format!("unrecognised Go version {:?}", bi.raw_version));
    }
    Ok(bi)
}

fn pair(b: &[u8], at: usize) -> (u64, u64) {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    (word(at), word(at + 8))
}

/// The distinct version strings that a string header in writable data points at exactly.
fn scan(file: &ElfFile64<'_>) -> BTreeSet<String> {
    // Candidates: (address, length) → text, in read-only, non-executable segments.
    let mut candidates: HashMap<(u64, u64), String> = HashMap::new();
    for seg in file.segments().filter(|s| p_flags(s) & (PF_W | PF_X) == 0) {
        let Ok(data) = seg.data() else { continue };
        let mut at = 0;
        while let Some(pos) = data[at..].windows(4).position(|w| w == b"go1.") {
            let start = at + pos;
            let len = version_len(&data[start..]);
            if len > 4 {
                let text = String::from_utf8_lossy(&data[start..start + len]).into_owned();
                candidates.insert((seg.address() + start as u64, len as u64), text);
            }
            at = start + 4;
        }
    }
    let mut found = BTreeSet::new();
    if candidates.is_empty() {
        return found;
    }
    for seg in file.segments().filter(|s| p_flags(s) & PF_W != 0) {
        let Ok(data) = seg.data() else { continue };
        // Headers are 8-byte aligned in memory; the segment's start may not be.
        let skew = ((8 - seg.address() % 8) % 8) as usize;
        let mut i = skew;
        while i + 16 <= data.len() {
            if let Some(text) = candidates.get(&pair(data, i)) {
                found.insert(text.clone());
            }
            i += 8;
        }
    }
    found
}

/// Length of the version text at the start of `b`: `go1.N[.P][rcN|betaN][ X:exp,…]`.
fn version_len(b: &[u8]) -> usize {
    let digits_dots = |from: usize| {
        from + b[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'.')
            .count()
    };
    let mut n = digits_dots(4);
    if n == 4 {
        return 0;
    }
    for pre in [&b"rc"[..], b"beta"] {
        if b[n..].starts_with(pre) {
            n = digits_dots(n + pre.len());
        }
    }
    if b[n..].starts_with(b" X:") {
        let exp = b[n + 3..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b',')
            .count();
        if exp > 0 {
            n += 3 + exp;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_extents() {
        assert_eq!(version_len(b"go1.26.5\x00"), 8);
        assert_eq!(version_len(b"go1.24.11 X:noswissmap rest"), 22);
        assert_eq!(version_len(b"go1.27rc1;"), 9);
        assert_eq!(version_len(b"go1.x"), 0);
        assert_eq!(version_len(b"go1.21 X: nothing"), 6);
    }
}
