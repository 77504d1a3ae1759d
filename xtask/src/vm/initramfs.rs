//! An initramfs as the kernel unpacks it: a newc ("070701") cpio archive, uncompressed (the
//! kernel needs no decompressor for it, and the host has no cpio binary to write one).

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being written, in memory (a few tens of MB: the daemon and the fixtures).
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Archive {
    pub fn new() -> Archive {
        Archive {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory; parents must come first, as in any cpio archive the kernel reads.
    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// A character device node: `/dev/console` must exist before devtmpfs is mounted, or
    /// init starts without stdin/stdout.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, 1, (0, 0), &[]);
        self.buf
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let path = path.trim_start_matches('/');
        let ino = if path == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let size = u32::try_from(data.len()).expect("newc sizes are 32-bit: file under 4 GiB");
        let name_size = u32::try_from(path.len() + 1).expect("short path");
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.buf.extend_from_slice(MAGIC.as_bytes());
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(path.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    use std::process::{Command, Stdio};

    #[test]
    fn layout_of_one_entry() {
        let mut a = Archive::new();
        a.file("/x", 0o644, b"hello");
        let out = a.finish();
        let hdr = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(&hdr[..6], "070701");
        assert_eq!(&hdr[14..22], "000081A4", "mode: regular file 0644");
        assert_eq!(&hdr[54..62], "00000005", "file size");
        assert_eq!(&hdr[94..102], "00000002", "name size counts the NUL");
        assert_eq!(
            &out[110..112],
            b"x\0",
            "name and NUL end on a 4-byte boundary"
        );
        assert_eq!(&out[112..117], b"hello");
        assert_eq!(out.len() % 4, 0);
        assert!(String::from_utf8_lossy(&out).contains("TRAILER!!!"));
    }

    /// busybox's own cpio (the one the guests run) must read back exactly what was written.
    #[test]
    fn busybox_cpio_reads_it_back() {
        let busybox = crate::vm::kernels::busybox_path(crate::vm::VmArch::X86_64);
        assert!(
            busybox.is_file(),
            "{} is missing; run `cargo xtask setup`",
            busybox.display()
        );
        let mut a = Archive::new();
        a.dir("bin");
        a.dir("bin/sub");
        a.file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n");
        // Sizes around the 4-byte padding, and an empty file.
        for n in 0..6 {
            a.file(&format!("bin/sub/f{n}"), 0o600, &vec![b'a' + n as u8; n]);
        }
        a.char_device("dev-console", 0o600, 5, 1);
        let archive = a.finish();

        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(&busybox)
            .args(["cpio", "-i", "-d"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tool = dir.join("bin/tool");
        assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(
            tool.metadata().unwrap().permissions().mode() & 0o7777,
            0o755
        );
        for n in 0..6 {
            let f = dir.join(format!("bin/sub/f{n}"));
            assert_eq!(std::fs::read(&f).unwrap(), vec![b'a' + n as u8; n]);
            assert_eq!(f.metadata().unwrap().permissions().mode() & 0o7777, 0o600);
        }
        let console = dir.join("dev-console").symlink_metadata().unwrap();
        assert!(console.file_type().is_char_device());
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(console.rdev(), libc::makedev(5, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
