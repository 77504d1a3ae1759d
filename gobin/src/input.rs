//! Opening the files a user names (Go binaries, config files) so that no name can hang or
//! exhaust the daemon: only regular files are read, never more than a stated limit, and a
//! FIFO, a device or a directory is refused before anything is read from it.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest binary map-trace reads. Binaries are read into memory whole, so this bounds the
/// daemon's memory; real Go programs are far smaller (Hugo 95 MB, the Go compiler 27 MB, even
/// with DWARF a few hundred MB).
pub const MAX_BINARY_BYTES: u64 = 1 << 30;
/// The largest config file: the real one is a dozen lines.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a named file was not read.
#[derive(Debug)]
pub enum InputError {
    /// A directory, FIFO, device or socket (named by [`kind_name`]).
    NotRegular(&'static str),
    TooLarge {
        size: u64,
        limit: u64,
    },
    Io(std::io::Error),
}

impl From<std::io::Error> for InputError {
    fn from(e: std::io::Error) -> Self {
        InputError::Io(e)
    }
}

/// Opens `path` for reading if it is a regular file of at most `limit` bytes, without blocking.
///
/// The type is checked with `stat` before opening, because opening some devices acts (a
/// watchdog arms, a tape rewinds) and opening a FIFO blocks until a writer comes. The open
/// itself is non-blocking, and the opened file is checked again with `fstat`, so a file
/// swapped in between the two is still refused.
pub fn open_regular(path: &Path, limit: u64) -> Result<(File, u64), InputError> {
    check_type(&std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    check_type(&meta)?;
    if meta.len() > limit {
        return Err(InputError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file of at most `limit` bytes (see [`open_regular`]). A file that
/// grows while it is read is cut off at the limit and refused, never read on.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let (file, size) = open_regular(path, limit)?;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    let read = data.len() as u64;
    if read > limit {
        return Err(InputError::TooLarge { size: read, limit });
    }
    Ok(data)
}

fn check_type(meta: &std::fs::Metadata) -> Result<(), InputError> {
    match meta.is_file() {
        true => Ok(()),
        false => Err(InputError::NotRegular(kind_name(&meta.file_type()))),
    }
}

/// What a file that is not a regular file is, in words.
pub fn kind_name(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Whether an I/O error means the path leads to no file at all (as opposed to a file that
/// cannot be read): a missing file, a missing or non-directory component, a symlink loop, a
/// name too long.
pub fn leads_nowhere(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
        || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG))
}

/// One line saying what an I/O error on a path means, in the words a user would search for
/// (`io::Error`'s own text says "Too many levels of symbolic links (os error 40)").
pub fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match (e.kind(), e.raw_os_error()) {
        (_, Some(libc::ELOOP)) => "symlink loop (too many levels of symbolic links)".into(),
        (_, Some(libc::ENAMETOOLONG)) => "file name too long".into(),
        (ErrorKind::NotFound, _) => "no such file".into(),
        (ErrorKind::NotADirectory, _) => {
            "no such file (a component of the path is not a directory)".into()
        }
        (ErrorKind::PermissionDenied, _) => "permission denied".into(),
        (ErrorKind::IsADirectory, _) => "not a regular file but a directory".into(),
        _ => e.to_string(),
    }
}

/// A byte count the way limits are stated: `1 GiB`, `1 MiB`, else bytes.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("map-trace-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn regular_files_within_the_limit_are_read() {
        let p = scratch("small");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_regular(&p, 5).unwrap(), b"hello");
        assert!(matches!(
            read_regular(&p, 4),
            Err(InputError::TooLarge { size: 5, limit: 4 })
        ));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let fifo = scratch("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever comes: a blocking open would hang this test.
        for (path, kind) in [
            (fifo.as_path(), "FIFO (named pipe)"),
            (Path::new("/dev/zero"), "character device"),
            (Path::new("/"), "directory"),
        ] {
            match read_regular(path, 1 << 20) {
                Err(InputError::NotRegular(k)) => assert_eq!(k, kind, "{}", path.display()),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        let _ = std::fs::remove_file(&fifo);
    }

    #[test]
    fn io_errors_are_named_in_words() {
        let a = scratch("loop-a");
        let b = scratch("loop-b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let Err(InputError::Io(e)) = read_regular(&a, 1) else {
            panic!("a symlink loop is an I/O error")
        };
        assert!(leads_nowhere(&e));
        assert_eq!(
            describe_io(&e),
            "symlink loop (too many levels of symbolic links)"
        );
        let Err(InputError::Io(e)) = read_regular(Path::new("/etc/passwd/x"), 1) else {
            panic!("a file used as a directory is an I/O error")
        };
        assert!(leads_nowhere(&e));
        assert!(describe_io(&e).starts_with("no such file"), "{e}");
        let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    }

    #[test]
    fn limits_are_stated_in_round_units() {
        assert_eq!(bytes(MAX_BINARY_BYTES), "1 GiB");
        assert_eq!(bytes(MAX_CONFIG_BYTES), "1 MiB");
        assert_eq!(bytes(1000), "1000 bytes");
    }
}
