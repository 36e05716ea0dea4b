//! Attaching programs to cgroups through BPF links, and asking what is
//! attached: `BPF_LINK_CREATE` and `BPF_PROG_QUERY` of `bpf(2)`, with the
//! `link_create` and `query` members of `union bpf_attr`
//! (`include/uapi/linux/bpf.h`).
//!
//! A link is the attachment as an fd: the program stays attached while some
//! process holds the fd (or a bpffs pin, which this layer never makes), and
//! is detached when the last one closes, also when its process is killed.
//! A program attached with `BPF_PROG_ATTACH` instead stays until someone
//! detaches it, which a process killed with `SIGKILL` never does. On a
//! cgroup, a link attaches as `BPF_F_ALLOW_MULTI` does: beside the programs
//! already there (unless one was attached exclusively, without a flag, in
//! which case the kernel refuses with `EPERM`), and below the programs of
//! the cgroup's descendants, which run first.
//!
//! The program must have been loaded for the attach type
//! ([`super::sys::prog_load_with_attach_type`]): the kernel refuses to link
//! it with any other (`EINVAL`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::sys::{bpf, bpf_fd};
use super::BpfError;

/// `BPF_CGROUP_INET4_CONNECT` (`enum bpf_attach_type`): a
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` program run by `connect()` on an
/// `AF_INET` socket of a process in the cgroup (or below it), before the
/// connection is begun. Returning 0 fails the `connect()` with `EPERM`,
/// 1 lets it go on.
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
/// `BPF_CGROUP_INET6_CONNECT`: as [`BPF_CGROUP_INET4_CONNECT`], for `AF_INET6` sockets.
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;

/// `BPF_CGROUP_INET4_POST_BIND`: a `BPF_PROG_TYPE_CGROUP_SOCK` program run
/// by `bind()` on an `AF_INET` socket of a process in the cgroup, once the
/// address is bound (not for sockets bound before the program was attached).
/// Returning 0 fails the call with `EPERM`, 1 lets it stand.
pub const BPF_CGROUP_INET4_POST_BIND: u32 = 12;
/// `BPF_CGROUP_INET6_POST_BIND`: as [`BPF_CGROUP_INET4_POST_BIND`], for `AF_INET6` sockets.
pub const BPF_CGROUP_INET6_POST_BIND: u32 = 13;

/// `BPF_F_ALLOW_MULTI`: an attach flag of `BPF_PROG_ATTACH` on a cgroup, and
/// the `attach_flags` a query reports for a cgroup with links: more than one
/// program may be attached, and all of them run.
pub const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// `BPF_F_QUERY_EFFECTIVE`: the `query_flags` that ask for the programs that
/// run for the cgroup (its own and those it inherits), not only those
/// attached to it.
const BPF_F_QUERY_EFFECTIVE: u32 = 1 << 0;

const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_LINK_CREATE: libc::c_int = 28;

/// How often [`prog_query`] asks again when more programs were attached
/// between its call for the count and its call for the ids.
const QUERY_TRIES: usize = 8;

/// `bpf_attr` for `BPF_LINK_CREATE`: `prog_fd`, `target_fd`, `attach_type`,
/// `flags`. The union that follows is for other link types, or (`cgroup`)
/// for placing the program relative to another, and is left zero.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf_attr` for `BPF_PROG_QUERY` (`struct { ... } query`), whole: the
/// kernel writes `attach_flags`, `prog_cnt` and (since Linux 6.6)
/// `revision` back into the caller's `bpf_attr` at their offsets, whatever
/// size the caller passed, so the struct must reach past `revision`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    /// `prog_cnt`: in, how many ids `prog_ids` holds; out, how many there are.
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// A program attached through a BPF link: the fd `BPF_LINK_CREATE` returned.
/// Dropping it closes the fd, which detaches the program unless another
/// process holds a copy of the fd (one forked without `exec`; the kernel
/// makes it close-on-exec). No pin is made, so when the process ends, however
/// it ends, the program is detached.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
}

impl Link {
    /// `BPF_LINK_CREATE`: attaches `prog` to `target` at `attach_type`. For
    /// the cgroup attach types ([`BPF_CGROUP_INET4_CONNECT`], ...), `target`
    /// is an open cgroup v2 directory (`File::open` of it); the link keeps
    /// the cgroup, so the directory's fd may be closed afterwards. The
    /// `flags` are 0: the program is attached after those already there.
    pub fn create(
        prog: BorrowedFd<'_>,
        target: BorrowedFd<'_>,
        attach_type: u32,
    ) -> Result<Link, BpfError> {
        let mut a = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_fd: target.as_raw_fd() as u32,
            attach_type,
            flags: 0,
        };
        // SAFETY: `a` holds no pointers; the command returns a new link fd.
        let fd = unsafe { bpf_fd(BPF_LINK_CREATE, &mut a) }.map_err(|e| {
            BpfError::sys(
                format!("linking a BPF program at attach type {attach_type} (BPF_LINK_CREATE)"),
                e,
            )
        })?;
        Ok(Link { fd })
    }
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Which programs [`prog_query`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryScope {
    /// Those attached to the target itself, by links or `BPF_PROG_ATTACH`.
    Attached,
    /// Those that run for it (`BPF_F_QUERY_EFFECTIVE`): for a cgroup, its
    /// own and those of its ancestors that it inherits, in the order they run.
    Effective,
}

/// What [`prog_query`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgQuery {
    /// `attach_flags`: for [`QueryScope::Attached`] on a cgroup, the flags
    /// its programs were attached with ([`BPF_F_ALLOW_MULTI`] when links are
    /// among them; 0 when none is attached).
    pub attach_flags: u32,
    /// The ids of the programs (as [`super::sys::prog_id`] and `bpftool`
    /// give them), in the order the kernel lists them.
    pub prog_ids: Vec<u32>,
}

/// `BPF_PROG_QUERY`: the programs attached to `target` at `attach_type`; for
/// the cgroup attach types, `target` is an open cgroup v2 directory. The
/// kernel is asked first for the count, then for the ids; should programs be
/// attached in between, it is asked again, a few times at most.
pub fn prog_query(
    target: BorrowedFd<'_>,
    attach_type: u32,
    scope: QueryScope,
) -> Result<ProgQuery, BpfError> {
    let what = || format!("listing the BPF programs at attach type {attach_type} (BPF_PROG_QUERY)");
    let query_flags = match scope {
        QueryScope::Attached => 0,
        QueryScope::Effective => BPF_F_QUERY_EFFECTIVE,
    };
    let mut ids: Vec<u32> = Vec::new();
    for _ in 0..QUERY_TRIES {
        let mut a = QueryAttr {
            target_fd: target.as_raw_fd() as u32,
            attach_type,
            query_flags,
            prog_ids: if ids.is_empty() {
                0
            } else {
                ids.as_mut_ptr() as u64
            },
            prog_cnt: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        // SAFETY: the kernel writes at most prog_cnt ids (ids.len()) to `ids`, or
        // none when its pointer is null, and writes its outputs into `a`, which is
        // the whole `query` member; the other pointers are null.
        let done = match unsafe { bpf(BPF_PROG_QUERY, &mut a) } {
            Ok(_) => true,
            // More programs than `ids` holds: `prog_cnt` says how many now.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => false,
            Err(e) => return Err(BpfError::sys(what(), e)),
        };
        let count = a.prog_cnt as usize;
        if done && count <= ids.len() {
            ids.truncate(count);
            return Ok(ProgQuery {
                attach_flags: a.attach_flags,
                prog_ids: ids,
            });
        }
        ids = vec![0; count];
    }
    Err(BpfError::sys(
        what(),
        io::Error::other(format!(
            "programs kept being attached while they were listed ({QUERY_TRIES} tries)"
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::insn::{Insn, BPF_EXIT};
    use crate::bpf::sys::{self, BPF_PROG_TYPE_CGROUP_SOCK_ADDR};
    use crate::test_child::Child;
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::ffi::CString;
    use std::fs::{self, File};
    use std::net::{SocketAddr, TcpListener};
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn attr_layouts_match_the_kernel_offsets() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<LinkCreateAttr>(), 16);
        assert_eq!(offset_of!(QueryAttr, prog_ids), 16);
        assert_eq!(offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(offset_of!(QueryAttr, prog_attach_flags), 32);
        assert_eq!(offset_of!(QueryAttr, revision), 56);
        assert_eq!(size_of::<QueryAttr>(), 64);
    }

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test loads BPF programs and makes cgroups, and needs root: run the suite as \
             the README says"
        );
    }

    static CGROUPS: AtomicUsize = AtomicUsize::new(0);

    /// A cgroup made for a test right below the cgroup2 mount, open, and
    /// removed on drop (its processes have exited by then).
    struct TestCgroup {
        path: PathBuf,
        dir: File,
    }

    impl TestCgroup {
        fn new() -> TestCgroup {
            let cgroups = crate::host::cgroup::Cgroups::discover();
            let mount = cgroups
                .mount()
                .unwrap_or_else(|| panic!("{}", cgroups.why_unavailable().unwrap_or_default()));
            let path = mount.join(format!(
                "flowlat-link-test-{}-{}",
                std::process::id(),
                CGROUPS.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&path)
                .unwrap_or_else(|e| panic!("cannot make the cgroup {}: {e}", path.display()));
            let dir = File::open(&path)
                .unwrap_or_else(|e| panic!("cannot open the cgroup {}: {e}", path.display()));
            TestCgroup { path, dir }
        }

        fn query(&self, attach_type: u32, scope: QueryScope) -> ProgQuery {
            prog_query(self.dir.as_fd(), attach_type, scope).unwrap_or_else(|e| panic!("{e}"))
        }

        fn attached(&self, attach_type: u32) -> Vec<u32> {
            let mut ids = self.query(attach_type, QueryScope::Attached).prog_ids;
            ids.sort_unstable();
            ids
        }

        /// Waits until the programs attached are `ids` (sorted), for a
        /// detachment to show. A closed link is detached when the last copy
        /// of its fd is closed, and a child that another test forks on
        /// another thread holds copies of this process's fds for a moment
        /// (until it closes them, or execs); hence a deadline, not one look.
        fn wait_attached(&self, attach_type: u32, ids: &[u32], why: &str) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let now = self.attached(attach_type);
                if now == ids {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{why}: attached {now:?}, not {ids:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// `connect()` to `to` from a child process moved into this cgroup:
        /// what the program(s) attached here decided, and then the kernel.
        fn connect(&self, to: SocketAddr) -> Result<(), Errno> {
            /// Exit codes of the child that are no errno of `connect()`.
            const MOVE_FAILED: i32 = 200;
            const SOCKET_FAILED: i32 = 201;
            let procs = CString::new(self.path.join("cgroup.procs").into_os_string().into_vec())
                .expect("a path without NUL");
            let addr = SockaddrStorage::from(to);
            let family = match to {
                SocketAddr::V4(_) => AddressFamily::Inet,
                SocketAddr::V6(_) => AddressFamily::Inet6,
            };
            let code = Child::spawn(&[], move || {
                // Writing 0 to cgroup.procs moves the writer.
                let moved = nix::fcntl::open(
                    procs.as_c_str(),
                    OFlag::O_WRONLY,
                    nix::sys::stat::Mode::empty(),
                )
                .and_then(|procs| nix::unistd::write(procs, b"0"));
                if moved.is_err() {
                    return MOVE_FAILED;
                }
                let Ok(sock) =
                    socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
                else {
                    return SOCKET_FAILED;
                };
                match socket::connect(sock.as_raw_fd(), &addr) {
                    Ok(()) => 0,
                    Err(e) => e as i32,
                }
            })
            .wait();
            match code {
                0 => Ok(()),
                MOVE_FAILED => panic!("the child could not move into {}", self.path.display()),
                SOCKET_FAILED => panic!("the child could not make a socket"),
                errno => Err(Errno::from_raw(errno)),
            }
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.path);
        }
    }

    /// A `cgroup/connect4` or `cgroup/connect6` program (as `attach_type`
    /// says) that refuses connections to `port` and lets all others go on.
    fn refusing(attach_type: u32, port: u16) -> OwnedFd {
        let insns = [
            // r2 = *(u32 *)(r1 + 24): bpf_sock_addr.user_port, in network byte order
            Insn::new(0x61, 2, 1, 24, 0),
            Insn::new(0xb7, 0, 0, 0, 1), // r0 = 1
            // if r2 != port goto +1
            Insn::new(0x55, 2, 0, 1, i32::from(port.to_be())),
            Insn::new(0xb7, 0, 0, 0, 0), // r0 = 0
            Insn::new(BPF_EXIT, 0, 0, 0, 0),
        ];
        sys::prog_load_with_attach_type(
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            attach_type,
            &insns,
            "GPL",
            "flowlat_refuse",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn id(prog: &OwnedFd) -> u32 {
        sys::prog_id(prog.as_fd()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn listener(addr: &str) -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let at = l.local_addr().expect("local_addr");
        (l, at)
    }

    /// One address family's connect hook: a linked program decides the
    /// `connect()` of a process in the cgroup, a query lists it, and dropping
    /// the link detaches it.
    fn a_link_decides_connect(attach_type: u32, loopback: &str) {
        require_root();
        let cgroup = TestCgroup::new();
        let (_refused, refused) = listener(loopback);
        let (_open, open) = listener(loopback);
        assert_eq!(cgroup.connect(refused), Ok(()), "nothing attached yet");
        assert!(cgroup.attached(attach_type).is_empty());

        let prog = refusing(attach_type, refused.port());
        let link = Link::create(prog.as_fd(), cgroup.dir.as_fd(), attach_type)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cgroup.connect(refused), Err(Errno::EPERM));
        assert_eq!(cgroup.connect(open), Ok(()), "other ports go on");

        let attached = cgroup.query(attach_type, QueryScope::Attached);
        assert_eq!(attached.prog_ids, vec![id(&prog)]);
        assert_eq!(
            attached.attach_flags, BPF_F_ALLOW_MULTI,
            "a link attaches as multi"
        );
        let effective = cgroup.query(attach_type, QueryScope::Effective).prog_ids;
        assert!(effective.contains(&id(&prog)), "{effective:?}");

        drop(link);
        cgroup.wait_attached(attach_type, &[], "gone with the link");
        assert_eq!(cgroup.connect(refused), Ok(()));
    }

    #[test]
    fn a_link_decides_connect4_until_dropped() {
        a_link_decides_connect(BPF_CGROUP_INET4_CONNECT, "127.0.0.1:0");
    }

    #[test]
    fn a_link_decides_connect6_until_dropped() {
        a_link_decides_connect(BPF_CGROUP_INET6_CONNECT, "[::1]:0");
    }

    /// `bpf_attr` for `BPF_PROG_ATTACH` and `BPF_PROG_DETACH`, as far as
    /// `attach_flags`: the older way, which a test needs beside a link.
    #[repr(C)]
    #[derive(Default)]
    struct ProgAttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
    }

    fn prog_attach_or_detach(cmd: libc::c_int, cgroup: &TestCgroup, prog: &OwnedFd, flags: u32) {
        let mut a = ProgAttachAttr {
            target_fd: cgroup.dir.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_INET4_CONNECT,
            attach_flags: flags,
        };
        // SAFETY: `a` holds no pointers.
        unsafe { bpf(cmd, &mut a) }.unwrap_or_else(|e| panic!("bpf({cmd}): {e}"));
    }

    const BPF_PROG_ATTACH: libc::c_int = 8;
    const BPF_PROG_DETACH: libc::c_int = 9;

    #[test]
    fn a_link_runs_beside_a_program_attached_with_allow_multi() {
        require_root();
        let cgroup = TestCgroup::new();
        let (_a, a) = listener("127.0.0.1:0");
        let (_b, b) = listener("127.0.0.1:0");
        let (_c, c) = listener("127.0.0.1:0");
        let (linked, attached) = (
            refusing(BPF_CGROUP_INET4_CONNECT, a.port()),
            refusing(BPF_CGROUP_INET4_CONNECT, b.port()),
        );
        prog_attach_or_detach(BPF_PROG_ATTACH, &cgroup, &attached, BPF_F_ALLOW_MULTI);
        let link = Link::create(linked.as_fd(), cgroup.dir.as_fd(), BPF_CGROUP_INET4_CONNECT)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut both = vec![id(&linked), id(&attached)];
        both.sort_unstable();
        assert_eq!(cgroup.attached(BPF_CGROUP_INET4_CONNECT), both);
        assert_eq!(
            cgroup.connect(a),
            Err(Errno::EPERM),
            "the linked program ran"
        );
        assert_eq!(cgroup.connect(b), Err(Errno::EPERM), "the attached one ran");
        assert_eq!(cgroup.connect(c), Ok(()));

        drop(link);
        cgroup.wait_attached(
            BPF_CGROUP_INET4_CONNECT,
            &[id(&attached)],
            "the link's program gone with it",
        );
        assert_eq!(cgroup.connect(a), Ok(()));
        assert_eq!(cgroup.connect(b), Err(Errno::EPERM), "the other stays");

        prog_attach_or_detach(BPF_PROG_DETACH, &cgroup, &attached, 0);
        assert!(cgroup.attached(BPF_CGROUP_INET4_CONNECT).is_empty());
    }

    #[test]
    fn a_killed_holder_takes_its_link_with_it() {
        require_root();
        let cgroup = TestCgroup::new();
        let prog = refusing(BPF_CGROUP_INET4_CONNECT, 1);
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        let keep = [
            prog.as_raw_fd(),
            cgroup.dir.as_raw_fd(),
            ready_w.as_raw_fd(),
        ];
        let (prog_fd, dir_fd, ready) = (prog.as_fd(), cgroup.dir.as_fd(), ready_w.as_fd());
        let holder = Child::spawn(&keep, move || {
            let Ok(_link) = Link::create(prog_fd, dir_fd, BPF_CGROUP_INET4_CONNECT) else {
                return 1;
            };
            let _ = nix::unistd::write(ready, b"!");
            loop {
                nix::unistd::pause();
            }
        });
        drop(ready_w);
        let mut byte = [0u8];
        assert_eq!(
            nix::unistd::read(&ready_r, &mut byte),
            Ok(1),
            "the child linked the program"
        );
        assert_eq!(cgroup.attached(BPF_CGROUP_INET4_CONNECT), vec![id(&prog)]);
        holder.kill();
        cgroup.wait_attached(BPF_CGROUP_INET4_CONNECT, &[], "gone with its killed holder");
    }

    #[test]
    fn the_attach_type_must_be_the_one_loaded_for() {
        require_root();
        let insns = [Insn::new(0xb7, 0, 0, 0, 1), Insn::new(BPF_EXIT, 0, 0, 0, 0)];
        // A connect program must say which hook it is for.
        let unsaid = sys::prog_load(
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            &insns,
            "GPL",
            "flowlat_unsaid",
        );
        assert!(unsaid.is_err(), "loaded without an expected attach type");

        let cgroup = TestCgroup::new();
        let prog = refusing(BPF_CGROUP_INET4_CONNECT, 1);
        match Link::create(prog.as_fd(), cgroup.dir.as_fd(), BPF_CGROUP_INET6_CONNECT) {
            Err(BpfError::Sys { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL))
            }
            other => panic!("linked a connect4 program as connect6: {other:?}"),
        }
        // A directory that is no cgroup.
        let tmp = File::open(std::env::temp_dir()).expect("the temporary directory");
        assert!(Link::create(prog.as_fd(), tmp.as_fd(), BPF_CGROUP_INET4_CONNECT).is_err());
        assert!(cgroup.attached(BPF_CGROUP_INET4_CONNECT).is_empty());
    }
}
