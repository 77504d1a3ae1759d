//! The ELF container of a Go program: architecture, PIE, linker, and address → file offset.

use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _};
use object::{Object as _, ObjectSection as _, elf};

use crate::Arch;
use crate::bytes::{Backing, Bytes};
use crate::error::TargetError;
use crate::input;

/// A whole ELF file held in memory. `object` borrows from the bytes, so views are re-parsed on
/// demand; parsing the headers is cheap next to anything we do with them.
pub struct ElfImage {
    path: PathBuf,
    data: Bytes,
    /// Where `data` comes from: what long-lived tables keep ranges of instead of copies.
    backing: Backing,
    /// PT_LOAD segments, read once: every probe's file offset is looked up in them.
    loads: Vec<Load>,
}

/// An executable's PT_LOAD segments.
#[derive(Clone, Debug)]
pub struct Segments(Vec<Load>);

impl Segments {
    /// See [`ElfImage::vaddr_of_offset`].
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        vaddr_of_offset(&self.0, offset)
    }

    /// The file offset of link-time address `vaddr`, if a PT_LOAD maps it from the file.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        file_offset(&self.0, vaddr)
    }
}

fn file_offset(loads: &[Load], vaddr: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz)
        .map(|l| vaddr - l.vaddr + l.offset)
}

fn vaddr_of_offset(loads: &[Load], offset: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| offset >= l.offset && offset - l.offset < l.filesz.max(1))
        .map(|l| l.vaddr + (offset - l.offset))
}

/// A PT_LOAD segment, which is what a uprobe offset is relative to.
#[derive(Clone, Copy, Debug)]
struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

/// Facts read from the ELF headers.
#[derive(Clone, Debug)]
pub struct ElfFacts {
    pub arch: Arch,
    /// ET_DYN: loaded at a random bias, so runtime addresses are bias + vaddr.
    pub pie: bool,
    /// No `.symtab`: symbols must come from `.gopclntab`.
    pub stripped: bool,
    /// Linked by the system linker (cgo), recognised by the C runtime's `.init` section.
    pub external_linker: bool,
    pub has_dwarf: bool,
}

impl ElfImage {
    /// Reads the file at `path` whole: only a regular file of at most
    /// [`input::MAX_BINARY_BYTES`], so no name (a FIFO, `/dev/zero`) can hang or exhaust us.
    pub fn open(path: &Path) -> Result<Self, TargetError> {
        let data = input::read_regular(path, input::MAX_BINARY_BYTES)
            .map_err(|e| TargetError::from_input(path, e))?;
        Self::from_bytes(path.to_path_buf(), data)
    }

    /// What [`ElfImage::open`] checks first, without reading the file: that it can be opened,
    /// is a regular file within the limit, and starts like an ELF file. Lets the daemon refuse
    /// a bad `--exe` before it loads anything into the kernel.
    pub fn precheck(path: &Path) -> Result<(), TargetError> {
        use std::io::Read as _;
        let (file, _) = input::open_regular(path, input::MAX_BINARY_BYTES)
            .map_err(|e| TargetError::from_input(path, e))?;
        let mut magic = Vec::with_capacity(4);
        file.take(4)
            .read_to_end(&mut magic)
            .map_err(|e| TargetError::from_io(path, e))?;
        match magic[..] == elf::ELFMAG[..] {
            true => Ok(()),
            false => Err(TargetError::NotElf {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Maps `file` read-only, to be named `path`: the daemon's way, so a 100 MB binary costs
    /// page cache, not anonymous memory, and what the analysis touched can be released.
    /// `file` must be a regular file (`input::open_regular`) of at most the binary limit.
    pub fn map(path: PathBuf, file: &std::fs::File) -> Result<Self, TargetError> {
        // SAFETY: the mapping is read-only. A file truncated under it faults (SIGBUS) when read
        // past its new end: the analysis runs while the caller holds the exec (no writer can
        // be mid-way, ETXTBSY), and later readers check `Backing::intact` first.
        let map =
            unsafe { memmap2::Mmap::map(file) }.map_err(|e| TargetError::from_io(&path, e))?;
        let map = std::sync::Arc::new(map);
        let data = Bytes::Mapped {
            map: map.clone(),
            start: 0,
            len: map.len(),
        };
        Self::new(path, data, Backing::mapped(map))
    }

    pub fn from_bytes(path: PathBuf, data: Vec<u8>) -> Result<Self, TargetError> {
        Self::new(path, Bytes::Owned(data), Backing::default())
    }

    fn new(path: PathBuf, data: Bytes, backing: Backing) -> Result<Self, TargetError> {
        if data.get(..4) != Some(&elf::ELFMAG[..]) {
            return Err(TargetError::NotElf { path });
        }
        let mut image = ElfImage {
            path,
            data,
            backing,
            loads: Vec::new(),
        };
        // 32-bit ELF is a valid ELF we do not support; report it as an architecture problem.
        if data_class(&image.data) != Some(elf::ELFCLASS64) {
            let arch = image.machine_name();
            return Err(TargetError::UnsupportedArch {
                path: image.path,
                arch: format!("{arch} (32-bit)"),
            });
        }
        image.loads = image.read_loads()?;
        Ok(image)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    pub fn object(&self) -> Result<ElfFile64<'_>, TargetError> {
        ElfFile64::parse(&*self.data).map_err(|e| self.malformed(format!("ELF headers: {e}")))
    }

    pub fn malformed(&self, detail: impl Into<String>) -> TargetError {
        TargetError::Malformed {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn machine_name(&self) -> String {
        // e_machine is at the same place in ELF32 and ELF64 headers.
        let machine = match self.data.get(18..20) {
            Some(b) if self.data.get(5) == Some(&elf::ELFDATA2MSB) => {
                u16::from_be_bytes([b[0], b[1]])
            }
            Some(b) => u16::from_le_bytes([b[0], b[1]]),
            None => return "unknown".into(),
        };
        match machine {
            elf::EM_386 => "i386".into(),
            elf::EM_ARM => "arm".into(),
            elf::EM_X86_64 => "x86_64".into(),
            elf::EM_AARCH64 => "aarch64".into(),
            elf::EM_RISCV => "riscv".into(),
            elf::EM_PPC64 => "ppc64".into(),
            elf::EM_S390 => "s390x".into(),
            elf::EM_MIPS => "mips".into(),
            elf::EM_LOONGARCH => "loong64".into(),
            other => format!("e_machine {other}"),
        }
    }

    pub fn facts(&self) -> Result<ElfFacts, TargetError> {
        let file = self.object()?;
        let arch = match file.architecture() {
            object::Architecture::X86_64 => Arch::X86_64,
            object::Architecture::Aarch64 => Arch::Aarch64,
            _ => {
                return Err(TargetError::UnsupportedArch {
                    path: self.path.clone(),
                    arch: self.machine_name(),
                });
            }
        };
        if file.endianness() != object::Endianness::Little {
            return Err(TargetError::UnsupportedArch {
                path: self.path.clone(),
                arch: format!("{} (big-endian)", self.machine_name()),
            });
        }
        let pie = file.elf_header().e_type(file.endian()) == elf::ET_DYN;
        Ok(ElfFacts {
            arch,
            pie,
            stripped: file.section_by_name(".symtab").is_none(),
            external_linker: file.section_by_name(".init").is_some(),
            has_dwarf: file.section_by_name(".debug_info").is_some(),
        })
    }

    fn read_loads(&self) -> Result<Vec<Load>, TargetError> {
        let file = self.object()?;
        Ok(file
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(file.endian()) == elf::PT_LOAD)
            .map(|ph| Load {
                vaddr: ph.p_vaddr(file.endian()),
                offset: ph.p_offset(file.endian()),
                filesz: ph.p_filesz(file.endian()),
            })
            .collect())
    }

    /// File offset of a virtual address, which is what the kernel's uprobe API wants: the
    /// PT_LOAD that contains it decides (PIE and external linking move segments around).
    pub fn file_offset(&self, vaddr: u64) -> Result<u64, TargetError> {
        file_offset(&self.loads, vaddr)
            .ok_or_else(|| self.malformed(format!("address {vaddr:#x} is in no loadable segment")))
    }

    /// The link-time address that file offset `offset` is loaded at, if a PT_LOAD maps it.
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        vaddr_of_offset(&self.loads, offset)
    }

    /// The loadable segments alone: enough to find a later process's load bias without keeping
    /// the whole file in memory.
    pub fn segments(&self) -> Segments {
        Segments(self.loads.clone())
    }

    /// The file bytes at `[vaddr, vaddr + len)`, if they are all file-backed.
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Result<&[u8], TargetError> {
        let offset = self.file_offset(vaddr)?;
        usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| self.data.get(start..start.checked_add(len)?))
            .ok_or_else(|| {
                self.malformed(format!(
                    "{len} bytes at {vaddr:#x} run past the end of the file"
                ))
            })
    }

    /// Contents of a section, decompressed if needed.
    pub fn section<'a>(file: &ElfFile64<'a>, name: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
        file.section_by_name(name)?.uncompressed_data().ok()
    }
}

fn data_class(data: &[u8]) -> Option<u8> {
    // e_ident[EI_CLASS]
    data.get(4).copied()
}
