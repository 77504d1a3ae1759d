//! The Go build ID of an ELF file, read from its note segments with a few small reads (no map
//! of the file): `cmd/link` writes it as an ELF note named "Go" of type 4
//! (`.note.go.buildid`), also in stripped binaries. Its last part is a hash of the linked
//! file's content, so two files with the same build ID have the same code — what the daemon
//! needs to know before it reuses an analysis for a file that may have been rewritten.

use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// The note type of Go's build ID (cmd/link: `ELF_NOTE_GOBUILDID_TAG`).
const NOTE_GO_BUILDID: u32 = 4;
const PT_NOTE: u32 = 4;
/// Program headers read at most (Go binaries have about ten).
const MAX_PHDRS: usize = 64;
/// A note segment read at most.
const MAX_NOTES: u64 = 4096;

/// The build ID (`actionID/contentID`, as `go tool buildid` prints it), or None for a file that
/// is not a 64-bit little-endian ELF or has no Go build ID note.
pub fn go_build_id(f: &File) -> Option<String> {
    let mut ehdr = [0u8; 64];
    f.read_exact_at(&mut ehdr, 0).ok()?;
    // ELF magic, ELFCLASS64, ELFDATA2LSB: the arches map-trace traces.
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64_at(&ehdr, 32);
    let phentsize = usize::from(u16_at(&ehdr, 54));
    let phnum = usize::from(u16_at(&ehdr, 56)).min(MAX_PHDRS);
    if phentsize < 56 {
        return None;
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    f.read_exact_at(&mut phdrs, phoff).ok()?;
    phdrs
        .chunks_exact(phentsize)
        .filter(|p| u32_at(p, 0) == PT_NOTE)
        .find_map(|p| {
            let (offset, size) = (u64_at(p, 8), u64_at(p, 32).min(MAX_NOTES));
            let mut notes = vec![0u8; size as usize];
            f.read_exact_at(&mut notes, offset).ok()?;
            find_note(&notes)
        })
}

/// The Go build ID note among `notes` (namesz, descsz, type, name and desc, each padded to 4).
fn find_note(notes: &[u8]) -> Option<String> {
    let pad = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let word = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().unwrap()) as usize;
        let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8) as u32);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad(namesz))?;
        let end = desc_at.checked_add(pad(descsz))?;
        if end > notes.len() {
            return None;
        }
        // cmd/link writes the name as "Go\0\0" (namesz 4); others pad it to "Go\0".
        let name = &notes[name_at..name_at + namesz];
        if kind == NOTE_GO_BUILDID && name.split(|&b| b == 0).next() == Some(b"Go") {
            let desc = &notes[desc_at..desc_at + descsz];
            return std::str::from_utf8(desc).ok().map(str::to_string);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(kind.to_le_bytes());
        n.extend(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    #[test]
    fn the_go_note_is_found_among_others() {
        let mut notes = note(b"GNU\0", 3, &[1; 20]);
        notes.extend(note(b"Go\0\0", NOTE_GO_BUILDID, b"abc/def"));
        assert_eq!(find_note(&notes).as_deref(), Some("abc/def"));
        assert_eq!(find_note(&note(b"Go\0", 4, b"x/y")).as_deref(), Some("x/y"));
        assert_eq!(find_note(&note(b"Gox\0", 4, b"x/y")), None);
        assert_eq!(find_note(&note(b"GNU\0", 3, &[1; 20])), None);
    }

    #[test]
    fn truncated_or_oversized_notes_are_no_id() {
        let n = note(b"Go\0", NOTE_GO_BUILDID, b"abc/def");
        assert_eq!(find_note(&n[..n.len() - 4]), None);
        let mut huge = n.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find_note(&huge), None);
        assert_eq!(find_note(&[]), None);
    }
}
