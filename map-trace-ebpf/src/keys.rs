//! Whether a delete during the deleting goroutine's own range removes a key other than the one
//! being visited: keys compared exactly, or not at all.

use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_buf};

use crate::context::{Event, read_u8, read_u64};

/// `abi.Kind` of strings, and the mask of the kind byte.
const KIND_STRING: u8 = 24;
const KIND_MASK: u8 = 31;
/// `abi.TFlagRegularMemory`: equality is plain byte equality over the type's size.
const TFLAG_REGULAR_MEMORY: u8 = 1 << 3;
/// Longest key compared byte by byte; longer keys are never classified.
const KEY_BYTES: usize = 64;

/// The key argument of a delete, as each runtime function passes it.
pub enum Key {
    /// `mapdelete_fast32`: the key value.
    U32(u64),
    /// `mapdelete_fast64`: the key value (also pointer keys).
    U64(u64),
    /// `mapdelete_faststr`: the string's data and length.
    Str(u64, u64),
    /// `mapdelete`, Swiss `(*Map).Delete`: a pointer to the key, and the map type.
    Ptr(u64, u64),
    /// Assign and clear: no key needed.
    None,
}

/// True only when the deleted key is certainly not the key the iteration is visiting
/// (`visiting`, from `visited_key`). Anything uncertain (floats, interfaces, structs with
/// pointers, long keys, a moved iterator) is false: a missed notice costs less than a wrong one.
#[inline(always)]
pub fn deletes_other_key(e: &Event, visiting: Option<u64>, key: &Key) -> bool {
    let Some(visited) = visiting.filter(|&k| k != 0) else {
        return false;
    };
    match *key {
        Key::U32(v) => {
            // SAFETY: faults are caught by the helper.
            let cur = unsafe { bpf_probe_read_user(visited as *const u32) };
            cur.is_ok_and(|c| c != v as u32)
        }
        Key::U64(v) => read_u64(visited).is_some_and(|c| c != v),
        Key::Str(ptr, len) => match (read_u64(visited), read_u64(visited + 8)) {
            (Some(vptr), Some(vlen)) => strings_differ(vptr, vlen, ptr, len),
            _ => false,
        },
        Key::Ptr(ptr, maptype) => {
            let Some(kt) = read_u64(maptype + e.cfg.maptype_key as u64) else {
                return false;
            };
            let (Some(size), Some(tflag), Some(kind)) = (
                read_u64(kt + e.cfg.type_size as u64),
                read_u8(kt + e.cfg.type_tflag as u64),
                read_u8(kt + e.cfg.type_kind as u64),
            ) else {
                return false;
            };
            if kind & KIND_MASK == KIND_STRING {
                match (
                    read_u64(visited),
                    read_u64(visited + 8),
                    read_u64(ptr),
                    read_u64(ptr + 8),
                ) {
                    (Some(a), Some(al), Some(b), Some(bl)) => strings_differ(a, al, b, bl),
                    _ => false,
                }
            } else if tflag & TFLAG_REGULAR_MEMORY != 0 && size as usize <= KEY_BYTES {
                bytes_differ(visited, ptr, size as usize)
            } else {
                false
            }
        }
        Key::None => false,
    }
}

#[inline(always)]
fn strings_differ(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    if alen != blen {
        return true;
    }
    if alen as usize > KEY_BYTES {
        // Equal prefixes of long strings would prove nothing; unequal ones still do.
        return bytes_differ(a, b, KEY_BYTES);
    }
    bytes_differ(a, b, alen as usize)
}

#[inline(always)]
fn bytes_differ(a: u64, b: u64, len: usize) -> bool {
    if len == 0 || len > KEY_BYTES {
        return false;
    }
    // Compared a word at a time: a 64-step byte loop costs the verifier hundreds of ms per
    // inlined copy, which is most of the time it takes to attach. Bytes past `len` stay zero
    // in both buffers, so whole words compare exactly.
    let mut x = [0u64; KEY_BYTES / 8];
    let mut y = [0u64; KEY_BYTES / 8];
    // SAFETY: byte views of the two word buffers, KEY_BYTES long.
    let (xb, yb) = unsafe {
        (
            &mut *x.as_mut_ptr().cast::<[u8; KEY_BYTES]>(),
            &mut *y.as_mut_ptr().cast::<[u8; KEY_BYTES]>(),
        )
    };
    if !read_key(a, xb, len) || !read_key(b, yb, len) {
        return false;
    }
    let mut differ = false;
    for i in 0..KEY_BYTES / 8 {
        if x[i] != y[i] {
            differ = true;
        }
    }
    differ
}

/// Reads `len` bytes of a key, bounding `len` in the very register the helper gets. Kernels
/// before 6.8 ("bpf: Track spilled unbounded scalars") turn an unbounded scalar spilled to the
/// stack into STACK_MISC, so a bounds check made on one reload of `len` does not cover the
/// next: 6.1 rejected `delete_swiss` with "R2 min value is negative". The volatile reload
/// keeps LLVM from dropping this check as redundant with the caller's.
#[inline(always)]
fn read_key(src: u64, buf: &mut [u8; KEY_BYTES], len: usize) -> bool {
    // SAFETY: reads a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    if len == 0 || len > KEY_BYTES {
        return false;
    }
    // SAFETY: faults are caught by the helper; len is bounded by KEY_BYTES.
    unsafe { bpf_probe_read_user_buf(src as *const u8, &mut buf[..len]).is_ok() }
}
