//! The `bpf(2)` syscall, the only way flowlat issues it (the map commands in
//! [`super::map`] go through `bpf` too), and the program commands.
//!
//! Each attribute struct mirrors the member of `union bpf_attr` in
//! `include/uapi/linux/bpf.h` that its command reads. The kernel accepts a
//! shorter `bpf_attr` than its own (the tail is taken as zero), so each call
//! passes just the struct it fills. The kernel follows the pointers in it for
//! as many bytes as the other fields and the object say, which is why
//! `bpf` is an `unsafe fn` and every caller states what it checked.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::insn::{Insn, BPF_EXIT};
use super::BpfError;

/// `BPF_PROG_TYPE_SCHED_CLS`: a tc classifier (`cls_bpf`).
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`: a program of a cgroup's socket address
/// hooks (`bind`, `connect`, `sendmsg`, ...), run with a `struct bpf_sock_addr`;
/// it must be loaded for the hook it will be attached to (see
/// [`prog_load_with_attach_type`] and [`super::link`]).
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;

/// `BPF_PROG_TYPE_CGROUP_SOCK`: a program of a cgroup's socket hooks
/// (`sock_create`, `post_bind4`, ...), run with the `struct bpf_sock` itself;
/// loaded, as [`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`], for its attach type.
pub const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;

/// `BPF_OBJ_NAME_LEN`: names are at most 15 bytes plus the NUL.
pub const BPF_OBJ_NAME_LEN: usize = 16;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_ENABLE_STATS: libc::c_int = 32;
/// The kernel's internal `ENOTSUPP`, which `bpf()` can return as is.
pub(super) const ENOTSUPP: i32 = 524;
/// `enum bpf_stats_type`: `BPF_STATS_RUN_TIME`.
const BPF_STATS_RUN_TIME: u32 = 0;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
const MOV64_IMM: u8 = 0xb7;

/// The verifier log buffer starts here and grows fourfold per retry up to the
/// kernel's limit (`UINT_MAX >> 2` since 5.2; 16 MiB keeps us well inside older limits).
const LOG_START: usize = 64 * 1024;
const LOG_MAX: usize = 16 * 1024 * 1024;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
}

/// Issues one `bpf()` command.
///
/// # Safety
///
/// `attr` must be the `#[repr(C)]` prefix of `union bpf_attr` that `cmd`
/// reads, and every pointer in it must point to memory that the kernel may
/// read (and, for output buffers, write) for as many bytes as `cmd` uses
/// given the other fields and the object the fd names.
pub(super) unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for what `attr` points to; `attr` itself is live
    // and exclusively borrowed, and its size is passed along.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Issues a `bpf()` command that returns a new fd on success, and owns it.
///
/// # Safety
///
/// As for [`bpf`], and `cmd` must be a command whose non-negative return
/// value is a new fd (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_*_GET_FD_BY_ID`, ...).
pub(super) unsafe fn bpf_fd<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller's contract is this one's.
    let ret = unsafe { bpf(cmd, attr) }?;
    // SAFETY: `cmd` returned a new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// A buffer's length for a `__u32` size field: one longer than `u32::MAX`
/// is told as `u32::MAX` bytes, so that the kernel uses less of it, never more.
pub(super) fn short_len(buf: &[u8]) -> u32 {
    u32::try_from(buf.len()).unwrap_or(u32::MAX)
}

/// Copies `name` into a fixed name field, cut to 15 bytes on a character boundary.
pub(super) fn obj_name(name: &str) -> [u8; BPF_OBJ_NAME_LEN] {
    let mut out = [0u8; BPF_OBJ_NAME_LEN];
    let mut len = name.len().min(BPF_OBJ_NAME_LEN - 1);
    while !name.is_char_boundary(len) {
        len -= 1;
    }
    // Only [A-Za-z0-9_.] are accepted by the kernel; anything else becomes '_'.
    for (dst, &b) in out.iter_mut().zip(name.as_bytes()[..len].iter()) {
        *dst = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            b
        } else {
            b'_'
        };
    }
    out
}

/// `BPF_PROG_LOAD`. `insns` are the program's instructions, map references
/// already patched (see [`super::object::Program::relocate`]). The first attempt runs without a
/// log, for speed; when it fails, the load is repeated at log level 1 with a buffer
/// that grows until the whole log fits, and the log goes into [`BpfError::Verifier`].
///
/// `expected_attach_type` is left 0, which the program types that do not
/// look at it (a classifier's) ignore; see [`prog_load_with_attach_type`].
pub fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &str,
    name: &str,
) -> Result<OwnedFd, BpfError> {
    prog_load_with_attach_type(prog_type, 0, insns, license, name)
}

/// [`prog_load`] with `bpf_attr`'s `expected_attach_type`: the `enum
/// bpf_attach_type` the program will be attached with. The verifier checks
/// the context fields and helpers a program uses against it, and the kernel
/// refuses to attach the program with any other type; some program types
/// (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, for one) refuse to load without one of
/// theirs (`EINVAL`). The attach types are in [`super::link`].
pub fn prog_load_with_attach_type(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    license: &str,
    name: &str,
) -> Result<OwnedFd, BpfError> {
    let insn_cnt = u32::try_from(insns.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            BpfError::Invalid(format!(
                "program {name} has {} instructions, not 1 to 2^32 - 1",
                insns.len()
            ))
        })?;
    let license = CString::new(license).map_err(|_| {
        BpfError::Invalid(format!("the license of program {name} holds a NUL byte"))
    })?;
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut a = ProgLoadAttr {
            prog_type,
            insn_cnt,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: obj_name(name),
            expected_attach_type,
            ..Default::default()
        };
        if let Some(buf) = log {
            a.log_level = 1;
            a.log_size = short_len(buf);
            a.log_buf = buf.as_mut_ptr() as u64;
        }
        // SAFETY: the kernel reads insn_cnt instructions of `insns` (its length), the
        // NUL-terminated `license`, and writes at most log_size bytes of `log`; the
        // command returns a new program fd.
        unsafe { bpf_fd(BPF_PROG_LOAD, &mut a) }
    };
    let first = match attempt(None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut size = LOG_START;
    loop {
        let mut log = vec![0u8; size];
        match attempt(Some(&mut log)) {
            // Loaded with a log after failing without one: take it.
            Ok(fd) => return Ok(fd),
            // The log did not fit: grow it and try again.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size < LOG_MAX => size *= 4,
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]).into_owned();
                let source = if log.is_empty() { first } else { e };
                return Err(BpfError::Verifier {
                    program: name.to_string(),
                    source,
                    log,
                });
            }
        }
    }
}

/// Whether the verifier accepts compare-and-exchange (`BPF_STX | BPF_ATOMIC |
/// BPF_DW` with `imm = BPF_CMPXCHG`, Linux 5.12): loads a classifier that
/// uses it once on its stack, and closes it.
pub fn has_atomic_cmpxchg() -> bool {
    const PROGRAM: [Insn; 7] = [
        Insn::new(MOV64_IMM, 1, 0, 0, 0), // r1 = 0
        Insn::new(0x7b, 10, 1, -8, 0),    // *(u64 *)(r10 - 8) = r1
        Insn::new(MOV64_IMM, 0, 0, 0, 0), // r0 = 0
        Insn::new(MOV64_IMM, 2, 0, 0, 1), // r2 = 1
        Insn::new(0xdb, 10, 2, -8, 0xf1), // r0 = cmpxchg(r10 - 8, r0, r2)
        Insn::new(MOV64_IMM, 0, 0, 0, 0), // r0 = 0
        Insn::new(BPF_EXIT, 0, 0, 0, 0),  // exit
    ];
    prog_load(BPF_PROG_TYPE_SCHED_CLS, &PROGRAM, "GPL", "flowlat_probe").is_ok()
}

/// What `BPF_PROG_TEST_RUN` returned: the `retval`, `duration` and
/// `data_out` of `bpf_attr`'s `test` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (for a classifier, `TC_ACT_*` as an unsigned int).
    pub retval: u32,
    /// The kernel's mean run time per repeat, in nanoseconds.
    pub duration_ns: u32,
    /// The packet as the program left it.
    pub data_out: Vec<u8>,
}

/// `BPF_PROG_TEST_RUN`: runs `prog` `repeat` times (0 counts as 1) on a copy of
/// `data`, optionally with a `struct __sk_buff` context `ctx`.
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ctx: Option<&[u8]>,
    repeat: u32,
) -> Result<TestRun, BpfError> {
    // Room for a program that grows the packet; ours never does, and tests check that.
    let mut out = vec![0u8; data.len() + 256];
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: short_len(data),
        data_size_out: short_len(&out),
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    if let Some(ctx) = ctx {
        a.ctx_size_in = short_len(ctx);
        a.ctx_in = ctx.as_ptr() as u64;
    }
    // SAFETY: the kernel reads data_size_in bytes of `data` and ctx_size_in of `ctx`,
    // and writes at most data_size_out bytes of `out`; ctx_out is null.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut a) }
        .map_err(|e| BpfError::sys("running a BPF program on a test packet", e))?;
    out.truncate(a.data_size_out as usize);
    Ok(TestRun {
        retval: a.retval,
        duration_ns: a.duration,
        data_out: out,
    })
}

/// `bpf_attr` for `BPF_PROG_GET_FD_BY_ID`: `prog_id`, `next_id`, `open_flags`.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`: `struct { __u32 bpf_fd; __u32
/// info_len; __u64 info; } info`.
#[repr(C)]
#[derive(Default)]
struct GetInfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info` (include/uapi/linux/bpf.h), as far as
/// the JIT image; the kernel fills as much of the struct as `info_len` asks.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a program: the head of its `struct
/// bpf_prog_info`, and as much of its JIT image as `image` holds.
fn prog_info(prog: BorrowedFd<'_>, image: &mut [u8], what: &str) -> Result<ProgInfoHead, BpfError> {
    let mut head = ProgInfoHead {
        jited_prog_len: short_len(image),
        jited_prog_insns: image.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut a = GetInfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfoHead>() as u32,
        info: &mut head as *mut ProgInfoHead as u64,
    };
    // SAFETY: the kernel writes info_len bytes to `head`, its size, and at most
    // jited_prog_len bytes to `image`, its length; xlated_prog_insns is null.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) }
        .map(|_| head)
        .map_err(|e| BpfError::sys(what, e))
}

/// The id of a loaded program (`struct bpf_prog_info`'s `id`, through
/// `BPF_OBJ_GET_INFO_BY_FD`): how `bpftool` and [`super::link::prog_query`]
/// name it.
pub fn prog_id(prog: BorrowedFd<'_>) -> Result<u32, BpfError> {
    prog_info(prog, &mut [], "reading the id of a BPF program").map(|head| head.id)
}

/// The machine code the JIT made of the loaded program `id` (the `prog_id`
/// of its fd's `/proc/PID/fdinfo`): `BPF_PROG_GET_FD_BY_ID`, then
/// `BPF_OBJ_GET_INFO_BY_FD`'s `jited_prog_insns`. For profiles: a sample at
/// `bpf_prog_TAG_NAME+OFFSET` is at `OFFSET` of it. Empty when the program
/// was not JIT-compiled, or when the kernel hides its code
/// (`kernel.kptr_restrict`).
pub fn prog_jited_image(id: u32) -> Result<Vec<u8>, BpfError> {
    let what = format!("reading the JIT image of BPF program {id}");
    let mut a = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    // SAFETY: `a` holds no pointers; the command returns a new program fd.
    let fd = unsafe { bpf_fd(BPF_PROG_GET_FD_BY_ID, &mut a) }
        .map_err(|e| BpfError::sys(what.clone(), e))?;
    let head = prog_info(fd.as_fd(), &mut [], &what)?;
    let mut image = vec![0u8; head.jited_prog_len as usize];
    if image.is_empty() {
        return Ok(image);
    }
    let head = prog_info(fd.as_fd(), &mut image, &what)?;
    // The kernel says how much it had; it copied no more than we asked.
    image.truncate((head.jited_prog_len as usize).min(image.len()));
    Ok(image)
}

/// `bpf_attr` for `BPF_ENABLE_STATS`: `struct { __u32 type; } enable_stats`.
#[repr(C)]
#[derive(Default)]
struct EnableStatsAttr {
    stats_type: u32,
}

/// `BPF_ENABLE_STATS` with `BPF_STATS_RUN_TIME`: while the returned fd is open,
/// the kernel times every run of every BPF program and adds it to the program's
/// `run_time_ns` and `run_cnt` (shown in `/proc/PID/fdinfo` of a program fd, and
/// by `bpftool prog`). Closing the fd turns the timing off again, even if the
/// process dies, unlike writing `kernel.bpf_stats_enabled`. For benchmarks: the
/// timing itself costs each run two clock reads.
pub fn enable_run_time_stats() -> Result<OwnedFd, BpfError> {
    let mut a = EnableStatsAttr {
        stats_type: BPF_STATS_RUN_TIME,
    };
    // SAFETY: `a` holds no pointers; the command returns a new fd.
    unsafe { bpf_fd(BPF_ENABLE_STATS, &mut a) }
        .map_err(|e| BpfError::sys("enabling BPF run-time statistics (BPF_ENABLE_STATS)", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_to_fifteen_bytes_and_sanitised() {
        let n = obj_name("flowlat_pending_table");
        assert_eq!(&n[..15], b"flowlat_pending");
        assert_eq!(n[15], 0);
        assert_eq!(&obj_name("a-b c")[..6], b"a_b_c\0");
    }

    #[test]
    fn attr_layouts_match_the_kernel_offsets() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(offset_of!(TestRunAttr, ctx_out), 56);
        assert_eq!(offset_of!(TestRunAttr, cpu), 68);
        assert_eq!(offset_of!(ProgInfoHead, jited_prog_len), 16);
        assert_eq!(offset_of!(ProgInfoHead, jited_prog_insns), 24);
        assert_eq!(size_of::<GetInfoAttr>(), 16);
        assert_eq!(size_of::<GetFdByIdAttr>(), 12);
    }

    /// A numeric field of a program fd's fdinfo in this process.
    fn fdinfo(prog: &OwnedFd, field: &str) -> u64 {
        let path = format!("/proc/self/fdinfo/{}", prog.as_raw_fd());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}: {text}"))
    }

    fn run_cnt(prog: &OwnedFd) -> u64 {
        fdinfo(prog, "run_cnt")
    }

    #[test]
    fn a_programs_jit_image_is_its_own_machine_code() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test loads BPF programs and needs root: run the suite as the README says"
        );
        let (mov0, exit) = (
            Insn::new(MOV64_IMM, 0, 0, 0, 0),
            Insn::new(BPF_EXIT, 0, 0, 0, 0),
        );
        // r0 = 0; exit, and the same with 64 more moves: a longer image.
        let short = vec![mov0, exit];
        let long: Vec<Insn> = std::iter::repeat_n(mov0, 65).chain([exit]).collect();
        // Without the JIT there is no image, nor where kptr_restrict 2 hides
        // kernel addresses (and so JIT code) even from root.
        let hidden = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
            .is_ok_and(|v| v.trim() == "2");
        let mut sizes = Vec::new();
        for insns in [&short, &long] {
            let prog = prog_load(BPF_PROG_TYPE_SCHED_CLS, insns, "GPL", "flowlat_jit")
                .unwrap_or_else(|e| panic!("{e}"));
            let id = u32::try_from(fdinfo(&prog, "prog_id")).expect("a 32-bit id");
            assert_eq!(prog_id(prog.as_fd()).unwrap_or_else(|e| panic!("{e}")), id);
            let image = prog_jited_image(id).unwrap_or_else(|e| panic!("{e}"));
            let jited = fdinfo(&prog, "prog_jited") == 1;
            assert_eq!(
                !image.is_empty(),
                jited && !hidden,
                "an image when JIT-compiled"
            );
            sizes.push(image.len());
        }
        if sizes[0] > 0 {
            assert!(
                sizes[1] > sizes[0],
                "64 moves more, a longer image: {sizes:?}"
            );
        }
        // An id no program has.
        assert!(prog_jited_image(u32::MAX).is_err());
    }

    #[test]
    fn run_time_stats_count_runs_while_enabled() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test loads a BPF program and needs root: run the suite as the README says"
        );
        // r0 = 0; exit
        let insns = [
            Insn::new(MOV64_IMM, 0, 0, 0, 0),
            Insn::new(BPF_EXIT, 0, 0, 0, 0),
        ];
        let prog = prog_load(BPF_PROG_TYPE_SCHED_CLS, &insns, "GPL", "flowlat_stats")
            .unwrap_or_else(|e| panic!("{e}"));
        let before = run_cnt(&prog);
        let stats = enable_run_time_stats().unwrap_or_else(|e| panic!("{e}"));
        prog_test_run(prog.as_fd(), &[0u8; 64], None, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            run_cnt(&prog),
            before + 5,
            "five runs counted while enabled"
        );
        drop(stats);
    }

    /// A program the verifier must reject (it returns an unset R0): the error
    /// carries the verifier's own words.
    #[test]
    fn verifier_rejection_carries_the_log() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test loads a BPF program and needs root: run the suite as the README says"
        );
        let exit_only = [Insn::new(BPF_EXIT, 0, 0, 0, 0)];
        match prog_load(BPF_PROG_TYPE_SCHED_CLS, &exit_only, "GPL", "flowlat_bad") {
            Err(BpfError::Verifier { program, log, .. }) => {
                assert_eq!(program, "flowlat_bad");
                assert!(log.contains("R0 !read_ok"), "log: {log}");
                let msg = BpfError::Verifier {
                    program,
                    source: io::Error::from_raw_os_error(libc::EACCES),
                    log,
                }
                .to_string();
                assert!(msg.contains("R0 !read_ok"), "{msg}");
            }
            other => panic!("expected a verifier rejection, got {other:?}"),
        }
    }
}
