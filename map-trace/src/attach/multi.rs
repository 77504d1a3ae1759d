//! uprobe_multi links: one BPF link per program and binary (or process) for every site of that
//! program, each site with its own cookie, instead of one perf event per probe.
//!
//! Why: a perf-event uprobe waits for the kernel's uprobe grace period when it is closed, once
//! per probe (about 80 ms each here: 1,260 links took 104 s to close), and since the
//! CVE-2025-38466 fix it needs `CAP_SYS_ADMIN`. A uprobe_multi link waits once for all its
//! sites and needs only `CAP_BPF` and `CAP_PERFMON` (measured: docs/uprobe-multi.md). Used
//! from Linux 6.10, whose link follows a process rather than one of its threads when given a
//! pid; older kernels keep perf-event uprobes.
//!
//! Why by hand: aya 0.14 loads every uprobe program without an expected attach type, which
//! such a link requires to be `BPF_TRACE_UPROBE_MULTI`, and has no uprobe_multi link; no aya
//! that builds with the pinned toolchains has either. So this module parses the embedded object
//! with aya-obj (the parser aya itself uses), points its map references at the maps aya
//! created, loads the programs it is asked for with that attach type, and creates the links:
//! two bpf(2) commands, `BPF_PROG_LOAD` and `BPF_LINK_CREATE`, with the kernel's own layouts.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use aya::Ebpf;
use aya::maps::{Map, MapData};
use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_prog_type};

/// The part of `union bpf_attr` that `BPF_PROG_LOAD` reads, through `attach_btf_id`; the
/// kernel zeroes what a shorter attr leaves out. Explicit structs with no implicit padding, not
/// aya-obj's bindgen union: a typed copy of a union need not keep its padding bytes, and the
/// kernel refuses an attr whose bytes past the command's fields are not zero (seen: EFAULT from
/// garbage in the union's tail). Offsets checked against aya-obj's bindings of the uapi header
/// in the tests below.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// `BPF_LINK_CREATE` for `BPF_TRACE_UPROBE_MULTI`.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    pad: u32,
}

/// `BPF_BTF_LOAD`.
#[repr(C)]
#[derive(Default)]
struct BtfLoad {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    pad: u32,
}

const BPF_PROG_LOAD: libc::c_long = bpf_cmd::BPF_PROG_LOAD as libc::c_long;
const BPF_LINK_CREATE: libc::c_long = bpf_cmd::BPF_LINK_CREATE as libc::c_long;
const BPF_BTF_LOAD: libc::c_long = bpf_cmd::BPF_BTF_LOAD as libc::c_long;
const UPROBE_MULTI: u32 = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;

/// bpf(2) with `attr` for a command that returns a new fd.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is one of the `#[repr(C)]` attrs above, without implicit padding, laid out
    // as the kernel reads `cmd`'s, and its size is passed; every pointer in it is to memory the
    // caller keeps alive across the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// What a program is loaded with besides its instructions.
struct Debug<'a> {
    btf: Option<&'a OwnedFd>,
    /// `bpf_func_info` records and their size (a callback passed to `bpf_loop` needs them).
    func_info: (Vec<u8>, u32, u32),
    line_info: (Vec<u8>, u32, u32),
}

/// Loads `insns` as a uprobe program for uprobe_multi links. On a refusal, loads again with
/// the verifier's log and returns its end.
fn load_program(
    name: &str,
    insns: &[u64],
    license: &CString,
    debug: Option<&Debug<'_>>,
) -> Result<OwnedFd, MultiError> {
    let mut p = ProgLoad {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: UPROBE_MULTI,
        ..ProgLoad::default()
    };
    // The kernel takes 15 name bytes of [A-Za-z0-9_.].
    for (d, s) in p.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    // As aya passes them: the records (counted by what was parsed, not the section's header)
    // only with the BTF they refer to.
    if let Some(d) = debug
        && let Some(btf) = d.btf
    {
        p.prog_btf_fd = btf.as_raw_fd() as u32;
        if d.func_info.1 > 0 {
            (p.func_info, p.func_info_rec_size, p.func_info_cnt) =
                (d.func_info.0.as_ptr() as u64, d.func_info.1, d.func_info.2);
        }
        if d.line_info.1 > 0 {
            (p.line_info, p.line_info_rec_size, p.line_info_cnt) =
                (d.line_info.0.as_ptr() as u64, d.line_info.1, d.line_info.2);
        }
    }
    match bpf(BPF_PROG_LOAD, &mut p) {
        Ok(fd) => Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(MultiError::LoadDenied),
        Err(e) => {
            let mut log = vec![0u8; 1 << 20];
            p.log_level = 1;
            p.log_size = log.len() as u32;
            p.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut p);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim_end();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            Err(MultiError::Load(format!(
                "{e}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )))
        }
    }
}

/// Loads the object's BTF (after aya-obj's fix-ups for this kernel), which the programs'
/// function and line records refer to.
fn load_btf(bytes: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = BtfLoad {
        btf: bytes.as_ptr() as u64,
        btf_size: bytes.len() as u32,
        ..BtfLoad::default()
    };
    bpf(BPF_BTF_LOAD, &mut attr)
}

/// One uprobe_multi link for `prog` at `sites` (file offset, cookie) of the file at `path`;
/// `pid`: only that process traps (0: every process). Closing the fd detaches every site.
fn create_link(prog: &OwnedFd, path: &Path, sites: &[(u64, u64)], pid: u32) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let offsets: Vec<u64> = sites.iter().map(|s| s.0).collect();
    let cookies: Vec<u64> = sites.iter().map(|s| s.1).collect();
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cookies: cookies.as_ptr() as u64,
        cnt: sites.len() as u32,
        pid,
        ..LinkCreate::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}

/// The uprobe programs of the embedded object, loaded for uprobe_multi links when first used.
pub struct MultiPrograms {
    object: aya_obj::Object,
    /// Copies of aya's map fds, which the relocated instructions name: open until the last
    /// program is loaded (the kernel takes its own references at load).
    _maps: Vec<OwnedFd>,
    /// The object's BTF, loaded; None where the kernel takes none.
    btf: Option<OwnedFd>,
    loaded: HashMap<String, OwnedFd>,
}

impl MultiPrograms {
    /// The object's programs, their map references pointing at `ebpf`'s maps (all of them
    /// still in it: call before any `take_map`), with the object's BTF — the same steps as
    /// aya's loader.
    pub fn new(ebpf: &Ebpf, bytes: &[u8]) -> Result<MultiPrograms, String> {
        let mut object = aya_obj::Object::parse(bytes).map_err(|e| e.to_string())?;
        let btf = match aya::features().btf() {
            Some(features) => match object
                .fixup_and_sanitize_btf(features)
                .map_err(|e| e.to_string())?
            {
                Some(btf) => Some(load_btf(&btf.to_bytes()).map_err(|e| format!("BTF: {e}"))?),
                None => None,
            },
            None => None,
        };
        let mut fds = Vec::new();
        for (name, map) in ebpf.maps() {
            let data = map_data(map).ok_or_else(|| format!("map {name}: a type not handled"))?;
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("map {name}: {e}"))?;
            fds.push((name.to_string(), fd));
        }
        let defs = object.maps.clone();
        let text_sections: HashSet<usize> = object.functions.keys().map(|(s, _)| *s).collect();
        let maps = fds
            .iter()
            .filter_map(|(n, fd)| defs.get(n).map(|m| (n.as_str(), fd.as_raw_fd(), m)));
        object
            .relocate_maps(maps, &text_sections)
            .map_err(|e| e.to_string())?;
        object
            .relocate_calls(&text_sections)
            .map_err(|e| e.to_string())?;
        Ok(MultiPrograms {
            object,
            _maps: fds.into_iter().map(|(_, fd)| fd).collect(),
            btf,
            loaded: HashMap::new(),
        })
    }

    /// Attaches program `name` at `sites` of the file at `path` in one link.
    pub fn attach(
        &mut self,
        name: &str,
        path: &Path,
        sites: &[(u64, u64)],
        pid: u32,
    ) -> Result<OwnedFd, MultiError> {
        if !self.loaded.contains_key(name) {
            let fd = self.load(name)?;
            self.loaded.insert(name.to_string(), fd);
        }
        create_link(&self.loaded[name], path, sites, pid).map_err(MultiError::Link)
    }

    fn load(&self, name: &str) -> Result<OwnedFd, MultiError> {
        let missing = |what: &str| MultiError::Load(format!("no {what} for program {name}"));
        let program = self
            .object
            .programs
            .get(name)
            .ok_or_else(|| missing("entry in the object"))?;
        let f = self
            .object
            .functions
            .get(&program.function_key())
            .ok_or_else(|| missing("code"))?;
        // SAFETY: `bpf_insn` is 8 bytes of plain data (code, registers, offset, immediate).
        let insns: Vec<u64> = f
            .instructions
            .iter()
            .map(|i| unsafe { std::mem::transmute_copy::<_, u64>(i) })
            .collect();
        let debug = Debug {
            btf: self.btf.as_ref(),
            func_info: (
                f.func_info.func_info_bytes(),
                f.func_info_rec_size as u32,
                f.func_info.len() as u32,
            ),
            line_info: (
                f.line_info.line_info_bytes(),
                f.line_info_rec_size as u32,
                f.line_info.len() as u32,
            ),
        };
        load_program(name, &insns, &program.license, Some(&debug))
    }
}

/// Why a uprobe_multi attach failed.
#[derive(Debug)]
pub enum MultiError {
    /// The program was refused (the verifier's last words).
    Load(String),
    /// Loading the program was not permitted (CAP_BPF and CAP_PERFMON).
    LoadDenied,
    /// The link was refused.
    Link(io::Error),
}

/// The map's data, for the map types the object declares.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::RingBuf(m)
        | Map::Unsupported(m) => Some(m),
        _ => None,
    }
}

/// Whether this kernel creates uprobe_multi links with a process filter that follows the
/// process: the link exists from 6.6 and its pid filter is right from 6.10. Asked as libbpf
/// asks: a link on "/" must fail with EBADF (not a regular file), not EINVAL.
pub fn supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        if !super::kernel_features::release_at_least(&super::kernel_features::release(), (6, 10)) {
            return false;
        }
        // r0 = 0; exit
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = CString::new("GPL").expect("no NUL");
        let prog = match load_program("probe_multi", &insns, &license, None) {
            Ok(prog) => prog,
            // Cannot tell without the privilege to ask: the kernel is new enough, and the real
            // load will say what is missing.
            Err(MultiError::LoadDenied) => return true,
            Err(_) => return false,
        };
        matches!(
            create_link(&prog, Path::new("/"), &[(0, 0)], 0).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EBADF))
        )
    })
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use aya_obj::generated::{
        bpf_attr__bindgen_ty_4 as K, bpf_attr__bindgen_ty_12 as B,
        bpf_attr__bindgen_ty_14__bindgen_ty_3__bindgen_ty_7 as M,
    };

    use super::*;

    /// The attrs agree with the kernel header's (aya-obj's bindings of it).
    #[test]
    fn attrs_are_laid_out_as_the_kernel_reads_them() {
        assert_eq!(offset_of!(ProgLoad, insns), offset_of!(K, insns));
        assert_eq!(offset_of!(ProgLoad, log_buf), offset_of!(K, log_buf));
        assert_eq!(offset_of!(ProgLoad, prog_name), offset_of!(K, prog_name));
        assert_eq!(
            offset_of!(ProgLoad, expected_attach_type),
            offset_of!(K, expected_attach_type)
        );
        assert_eq!(offset_of!(ProgLoad, func_info), offset_of!(K, func_info));
        assert_eq!(
            offset_of!(ProgLoad, line_info_cnt),
            offset_of!(K, line_info_cnt)
        );
        assert_eq!(
            offset_of!(ProgLoad, attach_btf_id),
            offset_of!(K, attach_btf_id)
        );
        assert_eq!(size_of::<ProgLoad>(), offset_of!(K, attach_btf_id) + 4);
        // The link's own part starts after prog_fd, target_fd, attach_type and flags.
        assert_eq!(
            offset_of!(
                aya_obj::generated::bpf_attr__bindgen_ty_14,
                __bindgen_anon_3
            ),
            16
        );
        assert_eq!(offset_of!(LinkCreate, path) - 16, offset_of!(M, path));
        assert_eq!(offset_of!(LinkCreate, cookies) - 16, offset_of!(M, cookies));
        assert_eq!(offset_of!(LinkCreate, pid) - 16, offset_of!(M, pid));
        assert_eq!(
            offset_of!(BtfLoad, btf_log_level),
            offset_of!(B, btf_log_level)
        );
    }
}
