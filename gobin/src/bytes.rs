//! Bytes of an executable that outlive its analysis (line tables, inline trees, type data):
//! either a range of the file's read-only mapping, which costs no anonymous memory and whose
//! pages the kernel can drop and fault in again, or an owned copy (decompressed sections,
//! files not mapped, tests).
//!
//! A mapping can fault with SIGBUS if the file is truncated under it (a `cp` over it); readers
//! of long-lived tables check [`Backing::intact`] first (see the daemon's `resolve`).

use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

#[derive(Clone)]
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes::Owned(v)
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self {
            Bytes::Owned(_) => "owned",
            Bytes::Mapped { .. } => "mapped",
        };
        write!(f, "Bytes({how}, {} bytes)", self.len())
    }
}

/// The mapping slices of an image may come from, if the image is mapped.
#[derive(Clone, Default)]
pub struct Backing(Option<Arc<Mmap>>);

impl Backing {
    pub fn mapped(map: Arc<Mmap>) -> Self {
        Backing(Some(map))
    }

    /// Keeps `s`: as a range of the mapping when it lies in it, else as a copy.
    pub fn keep(&self, s: &[u8]) -> Bytes {
        if let Some(map) = &self.0 {
            let base = map.as_ptr() as usize;
            let at = s.as_ptr() as usize;
            if at >= base && at + s.len() <= base + map.len() {
                return Bytes::Mapped {
                    map: map.clone(),
                    start: at - base,
                    len: s.len(),
                };
            }
        }
        Bytes::Owned(s.to_vec())
    }

    /// Lets the kernel take back the pages the analysis touched: they stay in the page cache
    /// and fault in again when a lookup needs them, so the daemon's resident memory holds
    /// only what it uses.
    pub fn release_resident(&self) {
        if let Some(map) = &self.0 {
            // SAFETY: DONTNEED on a read-only file mapping only drops page-table entries; the
            // next read faults the same file contents back in.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// `len` bytes of the mapped file at `offset` (None when not mapped or out of range).
    /// Check `intact` first: a truncated file faults with SIGBUS past its end.
    pub fn at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let map = self.0.as_ref()?;
        let start = usize::try_from(offset).ok()?;
        map.get(start..start.checked_add(len)?)
    }

    /// Whether reading any byte of the mapping is safe now: the file is at least as long as
    /// the mapping (a truncated file faults with SIGBUS past its end).
    pub fn intact(&self, file_len: u64) -> bool {
        self.0.as_ref().is_none_or(|m| file_len >= m.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_the_mapping_are_kept_as_ranges_others_are_copied() {
        let path = std::env::temp_dir().join(format!("mt-bytes-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: a test file nobody else writes.
        let map = Arc::new(unsafe { Mmap::map(&f) }.unwrap());
        let b = Backing::mapped(map.clone());
        let kept = b.keep(&map[2..5]);
        assert!(matches!(
            kept,
            Bytes::Mapped {
                start: 2,
                len: 3,
                ..
            }
        ));
        assert_eq!(&*kept, b"234");
        let other = b.keep(b"xyz");
        assert!(matches!(other, Bytes::Owned(_)));
        assert_eq!(&*other, b"xyz");
        b.release_resident();
        assert_eq!(&*kept, b"234", "pages fault back in after DONTNEED");
        assert!(b.intact(10) && !b.intact(9));
        assert!(Backing::default().intact(0));
        let _ = std::fs::remove_file(&path);
    }
}
