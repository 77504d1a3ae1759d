//! Go's map fatal errors, as the probe on the runtime's fatal-error path sees them: the
//! runtime's message, the goroutine that noticed (the side Go prints) and every write in
//! progress in that process at that moment (the side it does not). One record per crash, on
//! the `FATALS` ring buffer.

/// Bytes of the runtime's message kept. The longest map message Go has,
/// "small map with no empty slot (concurrent map writes?)", is 54.
pub const FATAL_MESSAGE_LEN: usize = 64;

/// Writes in progress named per crash; more are counted in `Fatal::writers_more`.
pub const FATAL_WRITERS: usize = 4;

/// One write in progress when the process died.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FatalWriter {
    pub map: u64,
    /// The map's type descriptor, as the write's entry probe saw it.
    pub map_type: u64,
    pub goid: u64,
    /// `STACKS` key (never 0 here: a write whose stack could not be named is counted instead).
    pub stack: u64,
    /// `Op as u32`.
    pub op: u32,
    /// A growth probe fired inside this write, or (classic) the map was evacuating.
    pub growing: u32,
    /// 1: the map's writing flag was still set when this write was found (the first write
    /// found has its whole stack walked, unless it ended meanwhile; the others, and any that
    /// ended, are named by their call sites, kept at their entries); 0: it began at most
    /// `FATAL_RECENT_NS` before the crash and had ended by then (its call site only).
    pub in_progress: u32,
    pub _pad: u32,
}

/// How long before the crash a write that had ended by the time it was looked at may have
/// begun to be named: a writer in a tight loop is between two writes (or in map-trace's own
/// probe) most of the time, though Go's check met its flag set.
pub const FATAL_RECENT_NS: u64 = 200_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fatal {
    /// `bpf_ktime_get_ns` at the fatal call.
    pub ns: u64,
    /// The goroutine that called the runtime's fatal-error function, and its stack (`STACKS`
    /// key; 0: not captured).
    pub goid: u64,
    pub stack: u64,
    /// Where the message is in the process when the probe could not read it (0 when `message`
    /// holds it): the kernel's reads never fault a page in, and a process that has not touched
    /// the page of its message yet dies with it unmapped. The daemon reads it then
    /// (`settle_message`).
    pub message_addr: u64,
    pub tgid: u32,
    /// The executable's id (its links' cookie), as in `Finding::binary`.
    pub binary: u32,
    /// Bytes of `message` that hold the message (at most `FATAL_MESSAGE_LEN`), and its full
    /// length in the runtime.
    pub message_len: u32,
    pub message_full_len: u32,
    /// Entries of `writers` filled.
    pub writers: u32,
    /// Writes in progress beyond `FATAL_WRITERS`, not named.
    pub writers_more: u32,
    /// Writes in progress seen but not named: they ended before their stack could be read and
    /// their call site was unreadable at their entry.
    pub writers_unnamed: u32,
    pub _pad: u32,
    pub message: [u8; FATAL_MESSAGE_LEN],
    pub writer: [FatalWriter; FATAL_WRITERS],
}

impl Default for Fatal {
    fn default() -> Self {
        Fatal {
            ns: 0,
            goid: 0,
            stack: 0,
            message_addr: 0,
            tgid: 0,
            binary: 0,
            message_len: 0,
            message_full_len: 0,
            writers: 0,
            writers_more: 0,
            writers_unnamed: 0,
            _pad: 0,
            message: [0; FATAL_MESSAGE_LEN],
            writer: [FatalWriter::default(); FATAL_WRITERS],
        }
    }
}

impl Fatal {
    /// The message bytes that were read.
    pub fn message(&self) -> &[u8] {
        &self.message[..(self.message_len as usize).min(FATAL_MESSAGE_LEN)]
    }

    /// The writes in progress that were named.
    pub fn writers(&self) -> &[FatalWriter] {
        &self.writer[..(self.writers as usize).min(FATAL_WRITERS)]
    }

    /// Whether this is a map's fatal error, reading a message the probe could not read with
    /// `read` (the process's memory at an address, into a buffer): the kernel sends only map
    /// messages it could read, and those it could not read at all.
    pub fn settle_message(&mut self, read: impl FnOnce(u64, &mut [u8]) -> bool) -> FatalMessage {
        if self.message_addr == 0 {
            return FatalMessage::Map;
        }
        let n = (self.message_full_len as usize).min(FATAL_MESSAGE_LEN);
        let mut buf = [0u8; FATAL_MESSAGE_LEN];
        if n == 0 || !read(self.message_addr, &mut buf[..n]) {
            return FatalMessage::Unread;
        }
        self.message = buf;
        self.message_len = n as u32;
        self.message_addr = 0;
        match is_map_message(&self.message, n) {
            true => FatalMessage::Map,
            false => FatalMessage::Other,
        }
    }
}

/// What `Fatal::settle_message` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatalMessage {
    /// A map's fatal error: a finding.
    Map,
    /// Another fatal error (a deadlock, a sync misuse): not map-trace's to report.
    Other,
    /// Neither the probe nor the daemon could read the message (the process had gone).
    Unread,
}

/// Whether a runtime fatal message (its first `len` bytes) is about a map: every map message Go
/// 1.19–1.27 has contains " map" ("concurrent map writes", "concurrent map read and map write",
/// "concurrent map iteration and map write", "concurrent map clone and map write", "small map
/// with no empty slot (concurrent map writes?)"); none of its other fatal messages does (see
/// docs/go-runtime-maps.md §6). The probe reports only these. Written as one bounded loop over
/// the fixed buffer, so the eBPF verifier takes it as it is.
pub fn is_map_message(message: &[u8; FATAL_MESSAGE_LEN], len: usize) -> bool {
    let mut i = 0;
    while i + 4 <= FATAL_MESSAGE_LEN {
        if i + 4 <= len
            && message[i] == b' '
            && message[i + 1] == b'm'
            && message[i + 2] == b'a'
            && message[i + 3] == b'p'
        {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unread(text: &str) -> Fatal {
        Fatal {
            message_addr: 0x4a_0000,
            message_full_len: text.len() as u32,
            ..Fatal::default()
        }
    }

    fn reading(text: &str) -> impl FnOnce(u64, &mut [u8]) -> bool + '_ {
        move |addr, buf| {
            assert_eq!(addr, 0x4a_0000);
            buf.copy_from_slice(&text.as_bytes()[..buf.len()]);
            true
        }
    }

    #[test]
    fn a_message_the_probe_could_not_read_is_read_by_the_daemon() {
        let text = "concurrent map iteration and map write";
        let mut f = unread(text);
        assert_eq!(f.settle_message(reading(text)), FatalMessage::Map);
        assert_eq!(f.message(), text.as_bytes());
        assert_eq!(f.message_addr, 0);
        // Another fatal error is not a map's.
        let text = "all goroutines are asleep - deadlock!";
        assert_eq!(
            unread(text).settle_message(reading(text)),
            FatalMessage::Other
        );
        // A long message: its first `FATAL_MESSAGE_LEN` bytes, as the probe would have read.
        let text = "small map with no empty slot (concurrent map writes?) and some more words";
        let mut f = unread(text);
        assert_eq!(f.settle_message(reading(text)), FatalMessage::Map);
        assert_eq!(f.message().len(), FATAL_MESSAGE_LEN);
        // The process has gone.
        let mut f = unread("concurrent map writes");
        assert_eq!(f.settle_message(|_, _| false), FatalMessage::Unread);
        // Read by the probe: nothing to read again.
        let mut f = Fatal::default();
        assert_eq!(
            f.settle_message(|_, _| panic!("read again")),
            FatalMessage::Map
        );
    }

    fn check(text: &str) -> bool {
        let mut m = [0u8; FATAL_MESSAGE_LEN];
        let n = text.len().min(FATAL_MESSAGE_LEN);
        m[..n].copy_from_slice(&text.as_bytes()[..n]);
        is_map_message(&m, n)
    }

    #[test]
    fn map_messages_and_only_those() {
        for m in [
            "concurrent map writes",
            "concurrent map read and map write",
            "concurrent map iteration and map write",
            "concurrent map clone and map write",
            "small map with no empty slot (concurrent map writes?)",
        ] {
            assert!(check(m), "{m}");
        }
        for m in [
            "all goroutines are asleep - deadlock!",
            "sync: unlock of unlocked mutex",
            "sync: RUnlock of unlocked RWMutex",
            "concurrent ma",
            "",
        ] {
            assert!(!check(m), "{m}");
        }
    }

    #[test]
    fn only_the_bytes_read_count() {
        let mut m = [0u8; FATAL_MESSAGE_LEN];
        m[..21].copy_from_slice(b"concurrent map writes");
        assert!(!is_map_message(&m, 12));
        assert!(is_map_message(&m, 14));
    }
}
