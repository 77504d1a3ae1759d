//! Go type names of map type descriptors: from the `*maptype` a probe reports to the string Go
//! prints with `%T`, such as `map[string]main.entry`.
//!
//! Every descriptor the linker emits lies in moduledata's `[types, etypes)`, and its `Str` field
//! is a name offset from `types` (`runtime.resolveNameOff`). A name is a flags byte, a uvarint
//! length and the bytes (Go 1.17+). Types made at run time (`reflect.MapOf`) live on the heap and
//! their names are registered with the runtime only, so for those only sizes can be told.
//!
//! Everything read from the binary or the process is untrusted: reads are bounds-checked and a
//! bad address gives [`MapTypeName::Unnamed`], never a panic.

use object::read::elf::ElfFile64;
use object::{Object as _, ObjectSection as _, SectionKind};

use crate::bytes::{Backing, Bytes};
use crate::offsets::RuntimeOffsets;
use crate::pclntab;

/// `abi.Kind` of maps (`kindMap` before Go 1.21), under the mask that drops the flag bits.
const KIND_MAP: u8 = 21;
const KIND_MASK: u8 = 0x1f;
/// `TFlagExtraStar`: the stored name has a `*` prepended, to share it with the pointer type.
const TFLAG_EXTRA_STAR: u8 = 1 << 1;
/// Descriptor fields are in the first few words; larger offsets mean a broken layout.
const MAX_FIELD_OFFSET: u64 = 512;

/// Where fields are in a type descriptor (from map-trace's offsets: DWARF or the built-in table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeLayout {
    pub type_size: u64,
    pub type_tflag: u64,
    pub type_kind: u64,
    pub type_str: u64,
    pub maptype_key: u64,
    pub maptype_elem: u64,
}

impl From<&RuntimeOffsets> for TypeLayout {
    fn from(o: &RuntimeOffsets) -> Self {
        TypeLayout {
            type_size: o.type_size,
            type_tflag: o.type_tflag,
            type_kind: o.type_kind,
            type_str: o.type_str,
            maptype_key: o.maptype_key,
            maptype_elem: o.maptype_elem,
        }
    }
}

impl TypeLayout {
    /// Bytes of a map type descriptor that hold every field read here; `None` for offsets no
    /// descriptor has (a broken layout must not make us read or allocate far).
    fn span(&self) -> Option<usize> {
        let fields = [
            (self.type_size, 8),
            (self.type_tflag, 1),
            (self.type_kind, 1),
            (self.type_str, 4),
            (self.maptype_key, 8),
            (self.maptype_elem, 8),
        ];
        if fields.iter().any(|&(off, _)| off > MAX_FIELD_OFFSET) {
            return None;
        }
        let end = fields.iter().map(|&(off, len)| off + len).max()?;
        usize::try_from(end).ok()
    }
}

/// Reads target memory that is not in the file (heap-allocated descriptors).
pub trait Memory {
    /// Reads `buf.len()` bytes at the *runtime* address `addr`; false when unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
    /// Runtime minus link-time address of the executable (the PIE load bias; 0 otherwise), to
    /// turn the link-time addresses [`TypeNames::map_type`] takes into runtime ones and back.
    fn load_bias(&self) -> u64 {
        0
    }
}

/// What a map type descriptor says about its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapTypeName {
    /// The type as `%T` prints it.
    Named(String),
    /// The name is not resolvable: the key and element sizes when readable, and why.
    Unnamed {
        key_size: Option<u64>,
        elem_size: Option<u64>,
        why: String,
    },
}

impl MapTypeName {
    pub fn display(&self) -> String {
        match self {
            MapTypeName::Named(name) => name.clone(),
            MapTypeName::Unnamed {
                key_size,
                elem_size,
                why,
            } => {
                let size = |s: &Option<u64>| s.map_or("? B".to_string(), |s| format!("{s} B"));
                format!(
                    "map[?]? (key {}, elem {}; {why})",
                    size(key_size),
                    size(elem_size)
                )
            }
        }
    }
}

/// The type data of one executable, copied out once.
pub struct TypeNames {
    /// `moduledata.types`: the base of name offsets and the first descriptor.
    types: u64,
    /// The bytes of `[types, etypes)`: a range of the mapped file where it can be.
    data: Bytes,
    layout: TypeLayout,
}

/// Byte offsets of `moduledata.types` and `.etypes`: `covctrs`/`ecovctrs` came before them in Go
/// 1.20, and Go 1.27 put a field between them.
fn moduledata_types_fields(go_minor: u32) -> (u64, u64) {
    match go_minor {
        ..=19 => (280, 288),
        20..=26 => (296, 304),
        _ => (296, 312),
    }
}

impl TypeNames {
    /// `file`: the executable; `go_minor`: e.g. 27 for go1.27.3 (for moduledata layout).
    pub fn read(file: &ElfFile64<'_>, go_minor: u32, layout: TypeLayout) -> Result<Self, String> {
        Self::read_in(file, go_minor, layout, &Backing::default())
    }

    /// Like [`TypeNames::read`], keeping the type data as a range of `backing` (the file's
    /// mapping) rather than a copy.
    pub fn read_in(
        file: &ElfFile64<'_>,
        go_minor: u32,
        layout: TypeLayout,
        backing: &Backing,
    ) -> Result<Self, String> {
        if layout.span().is_none() {
            return Err(format!("implausible type descriptor layout {layout:?}"));
        }
        let generic = object::File::parse(file.data()).map_err(|e| format!("ELF: {e}"))?;
        let (types_at, etypes_at) = moduledata_types_fields(go_minor);
        let (md, fields) = pclntab::moduledata_fields(&generic, &[types_at, etypes_at])
            .ok_or("cannot find runtime.firstmoduledata")?;
        let (types, etypes) = match fields[..] {
            [Some(t), Some(e)] if t != 0 && t < e => (t, e),
            _ => {
                return Err(format!(
                    "moduledata at {md:#x} has no type data range at +{types_at}/+{etypes_at} \
                     (the go1.{go_minor} layout): {fields:x?}"
                ));
            }
        };
        let section = file
            .sections()
            .filter(|s| s.kind() != SectionKind::UninitializedData)
            .find(|s| types >= s.address() && etypes <= s.address().saturating_add(s.size()))
            .ok_or_else(|| {
                format!("type data [{types:#x}, {etypes:#x}) is not inside one section")
            })?;
        let data = section
            .data()
            .ok()
            .and_then(|d| {
                let start = usize::try_from(types - section.address()).ok()?;
                d.get(start..start.checked_add(usize::try_from(etypes - types).ok()?)?)
            })
            .map(|d| backing.keep(d))
            .ok_or_else(|| format!("type data [{types:#x}, {etypes:#x}) is not in the file"))?;
        Ok(TypeNames {
            types,
            data,
            layout,
        })
    }

    /// `[moduledata.types, moduledata.etypes)`, link-time addresses.
    pub fn types_range(&self) -> (u64, u64) {
        (self.types, self.types + self.data.len() as u64)
    }

    /// `addr` is a *link-time* address (the caller already subtracted the PIE load bias).
    /// `mem` is used only for addresses outside the file's loaded data (runtime-created types).
    pub fn map_type(&self, addr: u64, mem: Option<&dyn Memory>) -> MapTypeName {
        let unnamed = |key_size, elem_size, why: String| MapTypeName::Unnamed {
            key_size,
            elem_size,
            why,
        };
        let Some(span) = self.layout.span() else {
            return unnamed(None, None, "implausible type descriptor layout".into());
        };
        let l = self.layout;
        if let Some(desc) = self.local(addr, span) {
            if let Some(why) = not_a_map(desc, &l, addr) {
                return unnamed(None, None, why);
            }
            let str_off = le_i32(desc, l.type_str);
            let tflag = desc.get(l.type_tflag as usize).copied().unwrap_or(0);
            if let Some(name) = str_off.and_then(|off| self.name(off, tflag)) {
                return MapTypeName::Named(name);
            }
            // PIE files hold 0 in pointer words until the loader relocates them; then no sizes.
            let size = |field| self.size_at(le_u64(desc, field)?);
            return unnamed(
                size(l.maptype_key),
                size(l.maptype_elem),
                format!(
                    "the name offset {:#x} of the descriptor at {addr:#x} is outside the type data",
                    str_off.unwrap_or(0)
                ),
            );
        }
        let Some(mem) = mem else {
            return unnamed(
                None,
                None,
                format!(
                    "{addr:#x} is not in the binary's type data: a type created at run time (reflect.MapOf)?"
                ),
            );
        };
        let bias = mem.load_bias();
        let mut desc = vec![0u8; span];
        if !mem.read(addr.wrapping_add(bias), &mut desc) {
            return unnamed(
                None,
                None,
                format!(
                    "{addr:#x} is neither in the binary's type data nor readable in the process"
                ),
            );
        }
        if let Some(why) = not_a_map(&desc, &l, addr) {
            return unnamed(None, None, why);
        }
        // Pointers in process memory are runtime addresses; key and element types are usually
        // the binary's own, else read from the process too.
        let size = |field| {
            let p = le_u64(&desc, field)?;
            if let Some(size) = self.size_at(p.wrapping_sub(bias)) {
                return Some(size);
            }
            let mut buf = [0u8; 8];
            mem.read(p.checked_add(l.type_size)?, &mut buf)
                .then(|| u64::from_le_bytes(buf))
        };
        unnamed(
            size(l.maptype_key),
            size(l.maptype_elem),
            "a type created at run time (reflect.MapOf): its name is not in the binary".into(),
        )
    }

    /// The size of the type whose descriptor is at `addr`, when that is in the type data.
    fn size_at(&self, addr: u64) -> Option<u64> {
        le_u64(self.local(addr.checked_add(self.layout.type_size)?, 8)?, 0)
    }

    /// `len` bytes at link-time address `addr`, when all are in the type data.
    fn local(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.types)?).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    /// The string of the name at offset `off` from `types`; `None` for offsets the binary does
    /// not hold (0 is no name, negative ones are run-time names).
    fn name(&self, off: i32, tflag: u8) -> Option<String> {
        let start = usize::try_from(off).ok().filter(|&o| o > 0)?;
        let tail = self.data.get(start..)?;
        let (len, n) = uvarint(tail.get(1..)?)?;
        let bytes = tail.get(1 + n..(1 + n).checked_add(usize::try_from(len).ok()?)?)?;
        let s = String::from_utf8_lossy(bytes);
        let s = if tflag & TFLAG_EXTRA_STAR != 0 {
            s.strip_prefix('*')?
        } else {
            &s
        };
        (!s.is_empty()).then(|| s.to_string())
    }
}

/// Why `desc` (at `addr`) is not a map type descriptor, if it is not.
fn not_a_map(desc: &[u8], l: &TypeLayout, addr: u64) -> Option<String> {
    let kind = *desc.get(l.type_kind as usize)? & KIND_MASK;
    (kind != KIND_MAP)
        .then(|| format!("{addr:#x} is not a map type descriptor (kind {kind}, want {KIND_MAP})"))
}

fn le_u64(data: &[u8], off: u64) -> Option<u64> {
    let at = usize::try_from(off).ok()?;
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn le_i32(data: &[u8], off: u64) -> Option<i32> {
    let at = usize::try_from(off).ok()?;
    Some(i32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// `encoding/binary.Uvarint`: the value and its length; `None` when cut off or over 64 bits.
fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in data.iter().take(10).enumerate() {
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: TypeLayout = TypeLayout {
        type_size: 0,
        type_tflag: 20,
        type_kind: 23,
        type_str: 40,
        maptype_key: 48,
        maptype_elem: 56,
    };
    const TYPES: u64 = 0x50_0000;

    /// Type data with: a map descriptor at +0x40 named by the name at +0x10 (with `*`), an int8
    /// at +0x100 and a uint16 at +0x180 whose pointers the map holds.
    fn type_data() -> Vec<u8> {
        let mut d = vec![0u8; 0x200];
        let name = b"*map[int8]uint16";
        d[0x10] = 0; // flags
        d[0x11] = name.len() as u8;
        d[0x12..0x12 + name.len()].copy_from_slice(name);
        descriptor(&mut d, 0x40, 8, 0x10, TFLAG_EXTRA_STAR, KIND_MAP);
        d[0x40 + 48..0x40 + 56].copy_from_slice(&(TYPES + 0x100).to_le_bytes());
        d[0x40 + 56..0x40 + 64].copy_from_slice(&(TYPES + 0x180).to_le_bytes());
        descriptor(&mut d, 0x100, 1, 0, 0, 3);
        descriptor(&mut d, 0x180, 2, 0, 0, 9);
        d
    }

    fn descriptor(d: &mut [u8], at: usize, size: u64, name: i32, tflag: u8, kind: u8) {
        d[at..at + 8].copy_from_slice(&size.to_le_bytes());
        d[at + 20] = tflag;
        d[at + 23] = kind;
        d[at + 40..at + 44].copy_from_slice(&name.to_le_bytes());
    }

    fn names(data: Vec<u8>) -> TypeNames {
        TypeNames {
            types: TYPES,
            data: data.into(),
            layout: LAYOUT,
        }
    }

    /// Process memory as one block at a runtime address, with a load bias.
    struct FakeMem {
        at: u64,
        bytes: Vec<u8>,
        bias: u64,
    }

    impl Memory for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(start) = addr
                .checked_sub(self.at)
                .and_then(|s| usize::try_from(s).ok())
            else {
                return false;
            };
            match self.bytes.get(start..start.saturating_add(buf.len())) {
                Some(src) if src.len() == buf.len() => {
                    buf.copy_from_slice(src);
                    true
                }
                _ => false,
            }
        }

        fn load_bias(&self) -> u64 {
            self.bias
        }
    }

    fn unnamed(t: &MapTypeName) -> (Option<u64>, Option<u64>, &str) {
        match t {
            MapTypeName::Unnamed {
                key_size,
                elem_size,
                why,
            } => (*key_size, *elem_size, why.as_str()),
            MapTypeName::Named(n) => panic!("unexpectedly named {n}"),
        }
    }

    #[test]
    fn static_descriptor_is_named_without_its_extra_star() {
        let t = names(type_data());
        assert_eq!(
            t.map_type(TYPES + 0x40, None),
            MapTypeName::Named("map[int8]uint16".into())
        );
        assert_eq!(t.types_range(), (TYPES, TYPES + 0x200));
        // Without TFlagExtraStar the stored string is the name as is.
        let mut d = type_data();
        d[0x40 + 20] = 0;
        assert_eq!(
            names(d).map_type(TYPES + 0x40, None).display(),
            "*map[int8]uint16"
        );
    }

    #[test]
    fn unresolvable_name_gives_sizes_and_why() {
        for off in [-3i32, 0, 0x7fff_0000] {
            let mut d = type_data();
            d[0x40 + 40..0x40 + 44].copy_from_slice(&off.to_le_bytes());
            let got = names(d).map_type(TYPES + 0x40, None);
            let (k, e, why) = unnamed(&got);
            assert_eq!((k, e), (Some(1), Some(2)), "{off}");
            assert!(why.contains("outside the type data"), "{why}");
        }
        let got = names(type_data()).map_type(TYPES + 0x100, None);
        assert!(
            unnamed(&got)
                .2
                .contains("not a map type descriptor (kind 3")
        );
    }

    #[test]
    fn heap_descriptor_is_read_from_memory_with_the_load_bias() {
        let bias = 0x5555_0000_0000;
        // A heap descriptor whose key is the binary's int8 (a runtime address) and whose
        // element type is on the heap too.
        let mut heap = vec![0u8; 0x100];
        descriptor(&mut heap, 0, 8, -5, 0, KIND_MAP);
        let heap_at: u64 = 0xc0_0001_0000;
        heap[48..56].copy_from_slice(&(TYPES + 0x100 + bias).to_le_bytes());
        heap[56..64].copy_from_slice(&(heap_at + 0x80).to_le_bytes());
        descriptor(&mut heap, 0x80, 24, 0, 0, 25);
        let mem = FakeMem {
            at: heap_at,
            bytes: heap,
            bias,
        };
        let t = names(type_data());
        let got = t.map_type(heap_at.wrapping_sub(bias), Some(&mem));
        let (k, e, why) = unnamed(&got);
        assert_eq!((k, e), (Some(1), Some(24)));
        assert!(why.contains("created at run time"), "{why}");
        assert_eq!(
            got.display(),
            "map[?]? (key 1 B, elem 24 B; a type created at run time (reflect.MapOf): its name is not in the binary)"
        );
        // Without memory, or with memory that cannot be read there, only the reason is left.
        let got = t.map_type(heap_at, None);
        assert_eq!(unnamed(&got).0, None);
        assert!(got.display().contains("key ? B, elem ? B;"));
        let got = t.map_type(0x10, Some(&mem));
        assert!(unnamed(&got).2.contains("nor readable in the process"));
    }

    #[test]
    fn uvarint_bounds() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
        max[9] = 0x02;
        assert_eq!(uvarint(&max), None);
        assert_eq!(uvarint(&[0xff; 12]), None);
    }

    #[test]
    fn moduledata_layouts_by_release() {
        assert_eq!(moduledata_types_fields(19), (280, 288));
        assert_eq!(moduledata_types_fields(21), (296, 304));
        assert_eq!(moduledata_types_fields(26), (296, 304));
        assert_eq!(moduledata_types_fields(27), (296, 312));
        assert_eq!(moduledata_types_fields(40), (296, 312));
    }

    #[test]
    fn implausible_layout_or_non_go_file_is_an_error_not_a_panic() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let file = ElfFile64::parse(&*exe).unwrap();
        let err = TypeNames::read(&file, 27, LAYOUT).err().unwrap();
        assert!(err.contains("runtime.firstmoduledata"), "{err}");
        let bad = TypeLayout {
            maptype_elem: u64::MAX - 2,
            ..LAYOUT
        };
        assert!(
            TypeNames::read(&file, 27, bad)
                .err()
                .unwrap()
                .contains("implausible")
        );
        let t = TypeNames {
            layout: bad,
            ..names(type_data())
        };
        assert!(
            unnamed(&t.map_type(TYPES + 0x40, None))
                .2
                .contains("implausible")
        );
    }

    #[test]
    fn garbage_never_panics() {
        // xorshift: reproducible without a dependency.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..200 {
            let len = (next() % 0x400) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Force the descriptor checks to pass more often.
                for b in data.iter_mut().skip(23).step_by(8) {
                    *b = KIND_MAP;
                }
            }
            let t = names(data);
            let mem = FakeMem {
                at: next() % 0x1000,
                bytes: (0..0x200).map(|_| next() as u8).collect(),
                bias: next() % 3,
            };
            for _ in 0..200 {
                let addr = match next() % 4 {
                    0 => next(),
                    1 => TYPES.wrapping_add(next() % 0x500),
                    2 => next() % 0x1200,
                    _ => u64::MAX - next() % 16,
                };
                let m: Option<&dyn Memory> = if next() % 2 == 0 { Some(&mem) } else { None };
                let _ = t.map_type(addr, m).display();
            }
        }
    }
}
