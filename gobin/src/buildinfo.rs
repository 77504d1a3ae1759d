//! Go build information (`.go.buildinfo`): the toolchain version, GOEXPERIMENTs and build settings.
//! Present in every Go binary since 1.13, stripped or not, which makes it the test for "is Go".

use std::fmt;

use object::elf::PF_W;
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Bit of the flags byte saying the version and module strings follow the header inline (Go 1.18+).
const FLAG_INLINE: u8 = 0x2;
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Longest string we accept, so a corrupted varint cannot make us allocate gigabytes.
const MAX_STRING: u64 = 1 << 20;

/// A Go release as written in build info (`go1.24.11`, `go1.27rc1`, `devel go1.26-abc…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        GoVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses the first `goX.Y[.Z]` in `s`; pre-releases (`rc1`, `beta2`) count as patch 0.
    pub fn parse(s: &str) -> Option<Self> {
        let start = s.find("go")? + 2;
        let rest = &s[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let mut parts = rest[..end].split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(GoVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What `.go.buildinfo` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The raw version string, e.g. `go1.24.11 X:noswissmap`.
    pub raw_version: String,
    pub version: Option<GoVersion>,
    /// GOEXPERIMENTs from the version suffix and the `GOEXPERIMENT` build setting, deduplicated.
    pub goexperiments: Vec<String>,
    /// `build` lines of the module info (`-buildmode`, `-ldflags`, `CGO_ENABLED`, …).
    pub settings: Vec<(String, String)>,
    /// The main package's path (`path` line: `cmd/compile` for the Go toolchain's own tools,
    /// `command-line-arguments` for `go run x.go`); None without module info.
    pub main_path: Option<String>,
}

impl BuildInfo {
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_experiment(&self, name: &str) -> bool {
        self.goexperiments.iter().any(|e| e == name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("no Go build info")]
    Missing,
    #[error("malformed Go build info: {0}")]
    Malformed(String),
}

/// Finds and parses the build info of an ELF file.
pub fn read(file: &object::read::elf::ElfFile64<'_>) -> Result<BuildInfo, BuildInfoError> {
    // The linker names the section; stripping keeps section headers. Without them, scan the
    // writable segments at the 16-byte alignment the linker uses, as debug/buildinfo does.
    if let Some(section) = file.section_by_name(".go.buildinfo") {
        let data = section
            .data()
            .map_err(|e| BuildInfoError::Malformed(e.to_string()))?;
        return parse(data, |addr, len| read_vaddr(file, addr, len));
    }
    // Only there: a program that reads Go binaries (map-trace itself) has the magic among its
    // read-only constants, which is no build info of its own.
    let writable = |s: &object::read::elf::ElfSegment64<'_, '_>| p_flags(s) & PF_W != 0;
    for segment in file.segments().filter(writable) {
        let Ok(data) = segment.data() else { continue };
        let mut at = 0;
        while let Some(pos) = find(&data[at..], MAGIC) {
            let start = at + pos;
            if (segment.address() + start as u64).is_multiple_of(16) {
                return parse(&data[start..], |addr, len| read_vaddr(file, addr, len));
            }
            at = start + 1;
        }
    }
    Err(BuildInfoError::Missing)
}

/// A segment's ELF `p_flags` (`PF_R`, `PF_W`, `PF_X`).
pub(crate) fn p_flags(s: &object::read::elf::ElfSegment64<'_, '_>) -> u32 {
    match s.flags() {
        object::SegmentFlags::Elf { p_flags } => p_flags,
        _ => 0,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `len` bytes of the program's memory image at `addr`, from whichever segment holds them.
pub(crate) fn read_vaddr(
    file: &object::read::elf::ElfFile64<'_>,
    addr: u64,
    len: u64,
) -> Option<Vec<u8>> {
    file.segments().find_map(|s| {
        let data = s.data_range(addr, len).ok()??;
        Some(data.to_vec())
    })
}

/// Parses build info starting at the magic. `read_mem` reads the program's memory image, needed
/// only by the pre-1.18 layout, which stores pointers to Go string headers instead of the strings.
pub fn parse(
    data: &[u8],
    read_mem: impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Result<BuildInfo, BuildInfoError> {
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        return Err(BuildInfoError::Missing);
    }
    let ptr_size = data[14] as usize;
    let flags = data[15];
    let (version, modinfo) = if flags & FLAG_INLINE != 0 {
        let mut rest = &data[HEADER_LEN..];
        let version = read_varint_string(&mut rest)?;
        let modinfo = read_varint_string(&mut rest).unwrap_or_default();
        (version, modinfo)
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(BuildInfoError::Malformed(format!(
                "pointer size {ptr_size}"
            )));
        }
        let big = flags & FLAG_BIG_ENDIAN != 0;
        let word = |bytes: &[u8]| -> u64 {
            let mut v = 0u64;
            for (i, b) in bytes.iter().enumerate() {
                let shift = if big {
                    (bytes.len() - 1 - i) * 8
                } else {
                    i * 8
                };
                v |= u64::from(*b) << shift;
            }
            v
        };
        let go_string = |at: usize| -> Result<String, BuildInfoError> {
            let ptr = word(data.get(at..at + ptr_size).ok_or_else(truncated)?);
            let header = read_mem(ptr, 2 * ptr_size as u64).ok_or_else(|| {
                BuildInfoError::Malformed(format!("string header at {ptr:#x} not in the file"))
            })?;
            let (sptr, slen) = (word(&header[..ptr_size]), word(&header[ptr_size..]));
            if slen > MAX_STRING {
                return Err(BuildInfoError::Malformed(format!("string of {slen} bytes")));
            }
            let bytes = read_mem(sptr, slen).ok_or_else(|| {
                BuildInfoError::Malformed(format!("string at {sptr:#x} not in the file"))
            })?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        (go_string(16)?, go_string(16 + ptr_size).unwrap_or_default())
    };
    if version.is_empty() {
        return Err(BuildInfoError::Malformed("empty Go version".into()));
    }
    Ok(interpret(version, &modinfo))
}

fn truncated() -> BuildInfoError {
    BuildInfoError::Malformed("truncated".into())
}

fn read_varint_string(rest: &mut &[u8]) -> Result<String, BuildInfoError> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first().ok_or_else(truncated)?;
        *rest = tail;
        if shift > 63 {
            return Err(BuildInfoError::Malformed("varint too long".into()));
        }
        len |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    if len > MAX_STRING || len as usize > rest.len() {
        return Err(BuildInfoError::Malformed(format!(
            "string of {len} bytes with {} left",
            rest.len()
        )));
    }
    let (s, tail) = rest.split_at(len as usize);
    *rest = tail;
    Ok(String::from_utf8_lossy(s).into_owned())
}

pub(crate) fn interpret(raw_version: String, modinfo: &str) -> BuildInfo {
    let mut settings = Vec::new();
    let main_path = modinfo
        .lines()
        .find_map(|l| l.strip_prefix("path\t"))
        .map(str::to_string);
    for line in modinfo.lines() {
        if let Some(setting) = line.strip_prefix("build\t")
            && let Some((k, v)) = setting.split_once('=')
        {
            settings.push((k.to_string(), v.trim_matches('"').to_string()));
        }
    }
    let mut goexperiments: Vec<String> = Vec::new();
    let suffix = raw_version
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("X:"))
        .flat_map(|x| x.split(','));
    let setting = settings
        .iter()
        .filter(|(k, _)| k == "GOEXPERIMENT")
        .flat_map(|(_, v)| v.split(','));
    for e in suffix.chain(setting) {
        let e = e.trim();
        if !e.is_empty() && !goexperiments.iter().any(|g| g == e) {
            goexperiments.push(e.to_string());
        }
    }
    BuildInfo {
        version: GoVersion::parse(&raw_version),
        raw_version,
        goexperiments,
        settings,
        main_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(version: &str, modinfo: &str) -> Vec<u8> {
        let mut d = MAGIC.to_vec();
        d.extend([8, FLAG_INLINE]);
        d.resize(HEADER_LEN, 0);
        for s in [version, modinfo] {
            let mut n = s.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                d.push(if n > 0 { b | 0x80 } else { b });
                if n == 0 {
                    break;
                }
            }
            d.extend(s.as_bytes());
        }
        d
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            GoVersion::parse("go1.24.11 X:noswissmap"),
            Some(GoVersion::new(1, 24, 11))
        );
        assert_eq!(
            GoVersion::parse("go1.27rc1"),
            Some(GoVersion::new(1, 27, 0))
        );
        assert_eq!(
            GoVersion::parse("devel go1.26-abcdef Tue"),
            Some(GoVersion::new(1, 26, 0))
        );
        assert_eq!(GoVersion::parse("go1.21"), Some(GoVersion::new(1, 21, 0)));
        assert_eq!(GoVersion::parse("gopher"), None);
        assert!(GoVersion::new(1, 9, 0) < GoVersion::new(1, 19, 0));
    }

    #[test]
    fn reads_inline_buildinfo_with_experiments_and_settings() {
        let modinfo = "0w\u{af}\npath\tx\nbuild\t-buildmode=pie\nbuild\tGOEXPERIMENT=noswissmap,foo\nbuild\tCGO_ENABLED=0\n";
        let bi = parse(&inline("go1.24.11 X:noswissmap", modinfo), |_, _| None).unwrap();
        assert_eq!(bi.version, Some(GoVersion::new(1, 24, 11)));
        assert_eq!(bi.goexperiments, vec!["noswissmap", "foo"]);
        assert_eq!(bi.setting("-buildmode"), Some("pie"));
        assert_eq!(bi.main_path.as_deref(), Some("x"));
        assert!(bi.has_experiment("noswissmap"));
    }

    #[test]
    fn rejects_truncation_at_every_length_without_panicking() {
        let full = inline("go1.26.6", "build\tCGO_ENABLED=1\n");
        for len in 0..full.len() {
            let _ = parse(&full[..len], |_, _| None);
        }
        assert_eq!(
            parse(&full[..10], |_, _| None),
            Err(BuildInfoError::Missing)
        );
    }

    #[test]
    fn rejects_huge_varint() {
        let mut d = MAGIC.to_vec();
        d.extend([8, FLAG_INLINE]);
        d.resize(HEADER_LEN, 0);
        d.extend([0xff; 12]);
        assert!(matches!(
            parse(&d, |_, _| None),
            Err(BuildInfoError::Malformed(_))
        ));
    }

    #[test]
    fn reads_pointer_layout_of_old_go() {
        // Go 1.13–1.17: two pointers to string headers, resolved through the memory image.
        let mut d = MAGIC.to_vec();
        d.extend([8, 0]);
        d.extend(0x1000u64.to_le_bytes());
        d.extend(0x1010u64.to_le_bytes());
        let mem = |addr: u64, len: u64| -> Option<Vec<u8>> {
            match (addr, len) {
                (0x1000, 16) => Some([0x2000u64.to_le_bytes(), 8u64.to_le_bytes()].concat()),
                (0x1010, 16) => Some([0x3000u64.to_le_bytes(), 0u64.to_le_bytes()].concat()),
                (0x2000, 8) => Some(b"go1.16.3".to_vec()),
                (0x3000, 0) => Some(vec![]),
                _ => None,
            }
        };
        let bi = parse(&d, mem).unwrap();
        assert_eq!(bi.version, Some(GoVersion::new(1, 16, 3)));
    }
}
