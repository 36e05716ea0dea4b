//! Which process holds a listening TCP socket: for the handshakes that reach
//! listeners opened before flowlat started, whose processes no program of
//! flowlat's saw opening them.
//!
//! The kernel answers the question in two halves. sock_diag
//! (`NETLINK_SOCK_DIAG`, a `SOCK_DIAG_BY_FAMILY` dump with an
//! `inet_diag_req_v2` for the `TCP_LISTEN` state, once for `AF_INET` and once
//! for `AF_INET6`; `include/uapi/linux/inet_diag.h`) lists the listening
//! sockets with their local address, port and inode; `/proc/PID/fd/*`, whose
//! links read `socket:[INODE]`, tells which processes hold those inodes, and
//! `/proc/PID/comm` their names. A [`Listeners`] is one such scan, taken at
//! once; it does not follow sockets opened or closed later.
//!
//! What it can and cannot tell:
//! - Only the listeners of flowlat's own network namespace: sock_diag answers
//!   for the namespace of the netlink socket that asks. And only the
//!   processes that flowlat's `/proc` shows (its PID namespace and those
//!   below it), by their PIDs there. Reading another user's `/proc/PID/fd`
//!   takes root (or `CAP_SYS_PTRACE`); processes whose fds cannot be read are
//!   passed over.
//! - Several processes may hold one socket: pre-forked workers inherit the
//!   listener of the process that made it, and fds can be passed. Neither
//!   source says which process created it, so [`Listeners::lookup`] names
//!   the one with the lowest PID (often, not always, the parent that made it).
//! - Sockets bound to one device (`SO_BINDTODEVICE`) are taken as bound to
//!   their address on every device.
//! - The scan is bounded: at most [`MAX_SOCKETS`] listening sockets are
//!   kept, at most [`MAX_PROCESSES`] processes and [`MAX_FDS`] fds in all
//!   are looked at; past a bound the rest is left out and
//!   [`Listeners::complete`] is false.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

/// The most listening sockets a scan keeps: with their holders and names, a
/// few hundred bytes each at the most, so some 10 to 20 MiB in all.
pub const MAX_SOCKETS: usize = 65_536;
/// The most processes a scan looks into.
pub const MAX_PROCESSES: usize = 65_536;
/// The most fds, over all processes, whose links a scan reads: each is one
/// `readlink` of a few microseconds, so this bounds the time a scan takes
/// (a few seconds at the most).
pub const MAX_FDS: usize = 1_000_000;

/// `SOCK_DIAG_BY_FAMILY` (`include/uapi/linux/sock_diag.h`): the message type
/// of requests and replies.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` (`include/net/tcp_states.h`).
const TCP_LISTEN: u8 = 10;
/// `INET_DIAG_SKV6ONLY`: the attribute, sent for every listening `AF_INET6`
/// socket, that says whether it takes IPv6 connections only (`IPV6_V6ONLY`).
const INET_DIAG_SKV6ONLY: u16 = 11;
/// Room for one datagram of a dump: the kernel fills at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

// The structs of the protocol, of which only the layout is used: the fields'
// offsets (`offset_of!`) and sizes, at which the request is written and the
// replies are read as bytes. So no value of them is made, and no unsafe cast.

/// `struct nlmsghdr` (`include/uapi/linux/netlink.h`).
#[repr(C)]
#[allow(dead_code)]
struct NlMsgHdr {
    nlmsg_len: u32,
    nlmsg_type: u16,
    nlmsg_flags: u16,
    nlmsg_seq: u32,
    nlmsg_pid: u32,
}

/// `struct inet_diag_sockid`: ports and addresses in network byte order.
#[repr(C)]
#[allow(dead_code)]
struct InetDiagSockId {
    idiag_sport: [u8; 2],
    idiag_dport: [u8; 2],
    idiag_src: [u8; 16],
    idiag_dst: [u8; 16],
    idiag_if: u32,
    idiag_cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`: the request of a dump.
#[repr(C)]
#[allow(dead_code)]
struct InetDiagReqV2 {
    sdiag_family: u8,
    sdiag_protocol: u8,
    idiag_ext: u8,
    pad: u8,
    /// A bit per TCP state to dump (`1 << TCP_LISTEN`).
    idiag_states: u32,
    id: InetDiagSockId,
}

/// `struct inet_diag_msg`: one socket of the reply, followed by attributes.
#[repr(C)]
#[allow(dead_code)]
struct InetDiagMsg {
    idiag_family: u8,
    idiag_state: u8,
    idiag_timer: u8,
    idiag_retrans: u8,
    id: InetDiagSockId,
    idiag_expires: u32,
    idiag_rqueue: u32,
    idiag_wqueue: u32,
    idiag_uid: u32,
    idiag_inode: u32,
}

const HDR_LEN: usize = std::mem::size_of::<NlMsgHdr>();
const REQ_LEN: usize = HDR_LEN + std::mem::size_of::<InetDiagReqV2>();
const MSG_LEN: usize = std::mem::size_of::<InetDiagMsg>();

/// `NLMSG_ALIGN`: netlink messages and attributes start at multiples of 4.
fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Why a scan failed.
#[derive(Debug)]
pub enum ScanError {
    /// A call on the sock_diag socket failed, or the kernel answered the dump
    /// with an error.
    SockDiag {
        /// What was being done.
        what: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// A reply that is not what `include/uapi/linux/inet_diag.h` describes.
    Reply(String),
    /// `/proc` could not be listed.
    Proc(io::Error),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::SockDiag { what, source } => {
                write!(f, "listing listening sockets (sock_diag): {what}: {source}")
            }
            ScanError::Reply(why) => {
                write!(
                    f,
                    "listing listening sockets (sock_diag): a malformed reply: {why}"
                )
            }
            ScanError::Proc(e) => write!(f, "listing the processes in /proc: {e}"),
        }
    }
}

impl std::error::Error for ScanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScanError::SockDiag { source, .. } | ScanError::Proc(source) => Some(source),
            ScanError::Reply(_) => None,
        }
    }
}

/// A listening socket as sock_diag reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listening {
    addr: IpAddr,
    port: u16,
    inode: u64,
    /// `IPV6_V6ONLY`; false for `AF_INET` sockets.
    v6only: bool,
}

/// A listening socket, by the key of [`Listeners`]'s table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Socket {
    inode: u64,
    v6only: bool,
}

/// The listening TCP sockets of this network namespace and the processes
/// that hold them, as one scan found them (see the module docs).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The sockets by local address and port (several share one with
    /// `SO_REUSEPORT`).
    sockets: HashMap<(IpAddr, u16), Vec<Socket>>,
    holders: Holders,
    /// Whether the dump stayed within [`MAX_SOCKETS`] and the walk of
    /// `/proc` within its bounds.
    complete: bool,
}

/// What a walk of `/proc` found ([`find_holders`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct Holders {
    /// The lowest PID that holds each socket, by inode.
    lowest: HashMap<u64, u32>,
    /// `/proc/PID/comm` of each PID in `lowest`.
    comms: HashMap<u32, String>,
    /// Whether the walk stayed within [`MAX_PROCESSES`] and [`MAX_FDS`].
    complete: bool,
}

impl Listeners {
    /// Scans: a sock_diag dump of the listening TCP sockets of both families,
    /// then `/proc` for their holders.
    pub fn scan() -> Result<Listeners, ScanError> {
        let mut listening = Vec::new();
        let dumped_all = dump_listening(&mut listening)?;
        let wanted: HashSet<u64> = listening.iter().map(|l| l.inode).collect();
        let holders = find_holders(Path::new("/proc"), &wanted)?;
        Ok(Listeners::from_parts(listening, holders, dumped_all))
    }

    fn from_parts(listening: Vec<Listening>, holders: Holders, dumped_all: bool) -> Listeners {
        let mut sockets: HashMap<(IpAddr, u16), Vec<Socket>> = HashMap::new();
        for l in listening {
            sockets.entry((l.addr, l.port)).or_default().push(Socket {
                inode: l.inode,
                v6only: l.v6only,
            });
        }
        Listeners {
            complete: dumped_all && holders.complete,
            sockets,
            holders,
        }
    }

    /// The process (PID and `comm`) that holds the listener a connection to
    /// `addr`:`port` reaches: one bound to that address, else a wildcard one
    /// (`0.0.0.0`, or `::` unless it takes IPv6 only, for an IPv4 address;
    /// `::` for an IPv6 one), as the kernel prefers them. An IPv4-mapped IPv6
    /// address is taken as the IPv4 one. Of several sockets there
    /// (`SO_REUSEPORT`) and their holders, the lowest PID. The `comm` is
    /// empty where it could not be read. `None` when no listener is there,
    /// or none of its holders was found.
    pub fn lookup(&self, addr: IpAddr, port: u16) -> Option<(u32, &str)> {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        // The places a connection may land, most specific first, each with
        // whether a socket there must accept IPv4.
        let (for_v4, for_v6);
        let places: &[(IpAddr, bool)] = match addr.to_canonical() {
            IpAddr::V4(v4) => {
                for_v4 = [
                    (IpAddr::V4(v4), false),
                    (IpAddr::V6(v4.to_ipv6_mapped()), true),
                    (any4, false),
                    (any6, true),
                ];
                &for_v4
            }
            v6 => {
                for_v6 = [(v6, false), (any6, false)];
                &for_v6
            }
        };
        for &(place, needs_v4) in places {
            let Some(sockets) = self.sockets.get(&(place, port)) else {
                continue;
            };
            let mut takers = sockets
                .iter()
                .filter(|s| !(needs_v4 && s.v6only))
                .peekable();
            if takers.peek().is_none() {
                continue;
            }
            // The kernel hands the connection to a socket here; which holder
            // is known (if any) decides the answer, not a less specific place.
            let pid = takers
                .filter_map(|s| self.holders.lowest.get(&s.inode))
                .min()?;
            let comm = self.holders.comms.get(pid).map_or("", String::as_str);
            return Some((*pid, comm));
        }
        None
    }

    /// How many listening sockets the scan found.
    pub fn len(&self) -> usize {
        self.sockets.values().map(Vec::len).sum()
    }

    /// Whether the scan found no listening socket.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Whether the scan saw everything: false when a bound ([`MAX_SOCKETS`],
    /// [`MAX_PROCESSES`], [`MAX_FDS`]) left sockets or processes out.
    pub fn complete(&self) -> bool {
        self.complete
    }
}

/// The request of a dump of the listening TCP sockets of `family`: an
/// `nlmsghdr` and an `inet_diag_req_v2` whose socket id stays zero.
fn dump_request(family: u8, seq: u32) -> [u8; REQ_LEN] {
    use std::mem::offset_of;
    let mut out = [0u8; REQ_LEN];
    let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    put(
        offset_of!(NlMsgHdr, nlmsg_len),
        &(REQ_LEN as u32).to_ne_bytes(),
    );
    put(
        offset_of!(NlMsgHdr, nlmsg_type),
        &SOCK_DIAG_BY_FAMILY.to_ne_bytes(),
    );
    put(offset_of!(NlMsgHdr, nlmsg_flags), &flags.to_ne_bytes());
    put(offset_of!(NlMsgHdr, nlmsg_seq), &seq.to_ne_bytes());
    // nlmsg_pid 0: to the kernel.
    let req = HDR_LEN;
    put(req + offset_of!(InetDiagReqV2, sdiag_family), &[family]);
    put(
        req + offset_of!(InetDiagReqV2, sdiag_protocol),
        &[libc::IPPROTO_TCP as u8],
    );
    let states = 1u32 << TCP_LISTEN;
    put(
        req + offset_of!(InetDiagReqV2, idiag_states),
        &states.to_ne_bytes(),
    );
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One `inet_diag_msg` and its attributes; `None` for a socket that is not
/// a TCP listener of a known family.
fn parse_socket(msg: &[u8]) -> Result<Option<Listening>, ScanError> {
    use std::mem::offset_of;
    if msg.len() < MSG_LEN {
        return Err(ScanError::Reply(format!(
            "an inet_diag_msg of {} bytes, not {MSG_LEN}",
            msg.len()
        )));
    }
    let id = offset_of!(InetDiagMsg, id);
    let src = id + offset_of!(InetDiagSockId, idiag_src);
    let sport = id + offset_of!(InetDiagSockId, idiag_sport);
    let addr = match i32::from(msg[offset_of!(InetDiagMsg, idiag_family)]) {
        libc::AF_INET => IpAddr::from(<[u8; 4]>::try_from(&msg[src..src + 4]).unwrap()),
        libc::AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(&msg[src..src + 16]).unwrap()),
        _ => return Ok(None),
    };
    if msg[offset_of!(InetDiagMsg, idiag_state)] != TCP_LISTEN {
        return Ok(None);
    }
    let mut v6only = false;
    // The attributes: struct rtattr { u16 rta_len; u16 rta_type; } and payload.
    let mut at = align4(MSG_LEN);
    while at + 4 <= msg.len() {
        let (len, kind) = (usize::from(u16_at(msg, at)), u16_at(msg, at + 2));
        if len < 4 || at + len > msg.len() {
            return Err(ScanError::Reply(format!(
                "an attribute of {len} bytes at {at}"
            )));
        }
        if kind == INET_DIAG_SKV6ONLY && len > 4 {
            v6only = msg[at + 4] != 0;
        }
        at += align4(len);
    }
    Ok(Some(Listening {
        addr,
        port: u16::from_be_bytes([msg[sport], msg[sport + 1]]),
        inode: u64::from(u32_at(msg, offset_of!(InetDiagMsg, idiag_inode))),
        v6only,
    }))
}

/// The netlink messages of one datagram of the reply to request `seq`: the
/// sockets go to `found`; true once the dump is done.
fn parse_datagram(
    buf: &[u8],
    seq: u32,
    found: &mut dyn FnMut(Listening),
) -> Result<bool, ScanError> {
    let mut at = 0;
    while at + HDR_LEN <= buf.len() {
        let len = u32_at(buf, at) as usize;
        if len < HDR_LEN || at + len > buf.len() {
            return Err(ScanError::Reply(format!(
                "a netlink message of {len} bytes at {at}"
            )));
        }
        let (kind, msg_seq) = (u16_at(buf, at + 4), u32_at(buf, at + 8));
        let payload = &buf[at + HDR_LEN..at + len];
        at += align4(len);
        if msg_seq != seq {
            continue;
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                // struct nlmsgerr { int error; struct nlmsghdr msg; }
                let errno = if payload.len() >= 4 {
                    (u32_at(payload, 0) as i32).wrapping_neg()
                } else {
                    0
                };
                if errno != 0 {
                    return Err(ScanError::SockDiag {
                        what: "the kernel refused the dump",
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
                return Ok(true);
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if let Some(l) = parse_socket(payload)? {
                    found(l);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Dumps the listening TCP sockets of both families into `out`, at most
/// [`MAX_SOCKETS`]; false when some were left out.
fn dump_listening(out: &mut Vec<Listening>) -> Result<bool, ScanError> {
    let sys = |what| {
        move |e: nix::Error| ScanError::SockDiag {
            what,
            source: io::Error::from(e),
        }
    };
    let sock: OwnedFd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(sys("opening a NETLINK_SOCK_DIAG socket"))?;
    let mut complete = true;
    let mut buf = vec![0u8; RECV_BUF];
    for (seq, family) in [(1, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        socket::send(
            sock.as_raw_fd(),
            &dump_request(family, seq),
            MsgFlags::empty(),
        )
        .map_err(sys("sending the dump request"))?;
        loop {
            // MSG_TRUNC: the datagram's whole length, even past the buffer.
            let n = socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC)
                .map_err(sys("receiving the dump"))?;
            if n > buf.len() {
                return Err(ScanError::Reply(format!(
                    "a datagram of {n} bytes, more than {RECV_BUF}"
                )));
            }
            let done = parse_datagram(&buf[..n], seq, &mut |l| {
                if out.len() < MAX_SOCKETS {
                    out.push(l);
                } else {
                    complete = false;
                }
            })?;
            if done {
                break;
            }
        }
    }
    Ok(complete)
}

/// The inode of an fd's link `socket:[INODE]`.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Walks `proc` (a procfs mount) for the processes holding the sockets
/// `wanted`. Processes that vanish or whose fds cannot be read are passed
/// over.
fn find_holders(proc: &Path, wanted: &HashSet<u64>) -> Result<Holders, ScanError> {
    let mut holders: HashMap<u64, u32> = HashMap::new();
    let mut complete = true;
    if !wanted.is_empty() {
        let (mut processes, mut fds) = (0usize, 0usize);
        'processes: for (pid, dir) in super::netns::processes(proc).map_err(ScanError::Proc)? {
            if processes == MAX_PROCESSES {
                complete = false;
                break;
            }
            processes += 1;
            let Ok(fd_dir) = fs::read_dir(dir.join("fd")) else {
                continue;
            };
            for fd in fd_dir {
                if fds == MAX_FDS {
                    complete = false;
                    break 'processes;
                }
                fds += 1;
                let Ok(fd) = fd else { continue };
                let Some(inode) = fs::read_link(fd.path()).ok().and_then(|l| socket_inode(&l))
                else {
                    continue;
                };
                if wanted.contains(&inode) {
                    let lowest = holders.entry(inode).or_insert(pid);
                    *lowest = (*lowest).min(pid);
                }
            }
        }
    }
    let mut comms = HashMap::new();
    for &pid in holders.values() {
        comms.entry(pid).or_insert_with(|| {
            fs::read_to_string(proc.join(pid.to_string()).join("comm"))
                .map(|c| c.trim_end_matches('\n').to_string())
                .unwrap_or_default()
        });
    }
    Ok(Holders {
        lowest: holders,
        comms,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_child::Child;
    use nix::sys::socket::{Backlog, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage};
    use std::ffi::{CStr, CString};
    use std::net::{SocketAddr, TcpListener};
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn struct_sizes_match_the_kernel() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<NlMsgHdr>(), 16);
        assert_eq!(size_of::<InetDiagSockId>(), 48);
        assert_eq!(size_of::<InetDiagReqV2>(), 56);
        assert_eq!(size_of::<InetDiagMsg>(), 72);
        assert_eq!(offset_of!(InetDiagReqV2, id), 8);
        assert_eq!(offset_of!(InetDiagMsg, id), 4);
        assert_eq!(offset_of!(InetDiagMsg, idiag_inode), 68);
        assert_eq!(offset_of!(InetDiagSockId, idiag_src), 4);
    }

    #[test]
    fn the_request_asks_for_tcp_listeners_of_one_family() {
        let r = dump_request(libc::AF_INET6 as u8, 7);
        assert_eq!(u32_at(&r, 0) as usize, REQ_LEN);
        assert_eq!(u16_at(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16_at(&r, 6), 0x301, "NLM_F_REQUEST | NLM_F_DUMP");
        assert_eq!(u32_at(&r, 8), 7);
        assert_eq!(
            &r[16..20],
            &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 0, 0]
        );
        assert_eq!(u32_at(&r, 20), 1 << 10);
        assert!(r[24..].iter().all(|&b| b == 0), "a dump: no socket id");
    }

    /// A reply message: `nlmsghdr` of `kind` and `seq`, then `payload`, padded.
    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HDR_LEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    /// An `inet_diag_msg` of a socket in `state`, with a `INET_DIAG_SKV6ONLY`
    /// attribute when `v6only` is given.
    fn socket_msg(state: u8, addr: IpAddr, port: u16, inode: u32, v6only: Option<bool>) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[1] = state;
        m[4..6].copy_from_slice(&port.to_be_bytes());
        match addr {
            IpAddr::V4(a) => {
                m[0] = libc::AF_INET as u8;
                m[8..12].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                m[0] = libc::AF_INET6 as u8;
                m[8..24].copy_from_slice(&a.octets());
            }
        }
        m[68..72].copy_from_slice(&inode.to_ne_bytes());
        // An attribute flowlat ignores (INET_DIAG_SHUTDOWN), then the one it reads.
        m.extend_from_slice(&[5, 0, 8, 0, 0, 0, 0, 0]);
        if let Some(v6only) = v6only {
            m.extend_from_slice(&5u16.to_ne_bytes());
            m.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
            m.extend_from_slice(&[u8::from(v6only), 0, 0, 0]);
        }
        m
    }

    #[test]
    fn replies_are_read_to_their_end() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::".parse().unwrap();
        let mut datagram = message(20, 1, &socket_msg(10, v4, 8080, 11, None));
        datagram.extend(message(20, 1, &socket_msg(10, v6, 443, 12, Some(true))));
        datagram.extend(message(20, 1, &socket_msg(1, v4, 80, 13, None))); // established
        datagram.extend(message(20, 9, &socket_msg(10, v4, 81, 14, None))); // another request
        let mut found = Vec::new();
        assert!(!parse_datagram(&datagram, 1, &mut |l| found.push(l)).unwrap());
        assert_eq!(
            found,
            vec![
                Listening {
                    addr: v4,
                    port: 8080,
                    inode: 11,
                    v6only: false
                },
                Listening {
                    addr: v6,
                    port: 443,
                    inode: 12,
                    v6only: true
                },
            ]
        );
        let done = message(libc::NLMSG_DONE as u16, 1, &0i32.to_ne_bytes());
        assert!(parse_datagram(&done, 1, &mut |_| panic!("no socket")).unwrap());

        let refused = message(libc::NLMSG_ERROR as u16, 1, &(-libc::EINVAL).to_ne_bytes());
        match parse_datagram(&refused, 1, &mut |_| {}) {
            Err(ScanError::SockDiag { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL))
            }
            other => panic!("{other:?}"),
        }
        let mut cut = message(20, 1, &socket_msg(10, v4, 1, 1, None));
        cut.truncate(40);
        assert!(matches!(
            parse_datagram(&cut, 1, &mut |_| {}),
            Err(ScanError::Reply(_))
        ));
        let short = message(20, 1, &[0u8; 20]);
        assert!(matches!(
            parse_datagram(&short, 1, &mut |_| {}),
            Err(ScanError::Reply(_))
        ));
    }

    fn listening(addr: &str, port: u16, inode: u64, v6only: bool) -> Listening {
        Listening {
            addr: addr.parse().unwrap(),
            port,
            inode,
            v6only,
        }
    }

    /// A table of listeners and their holders, as a scan would make it.
    fn table(sockets: &[Listening], holders: &[(u64, u32)]) -> Listeners {
        let comms = holders
            .iter()
            .map(|&(_, pid)| (pid, format!("p{pid}")))
            .collect();
        let holders = Holders {
            lowest: holders.iter().copied().collect(),
            comms,
            complete: true,
        };
        Listeners::from_parts(sockets.to_vec(), holders, true)
    }

    fn at(l: &Listeners, addr: &str, port: u16) -> Option<(u32, String)> {
        l.lookup(addr.parse().unwrap(), port)
            .map(|(pid, comm)| (pid, comm.to_string()))
    }

    #[test]
    fn lookup_prefers_the_bound_address_to_a_wildcard() {
        let l = table(
            &[
                listening("127.0.0.1", 80, 1, false),
                listening("0.0.0.0", 80, 2, false),
                listening("::", 80, 3, false),
                listening("::1", 80, 4, false),
            ],
            &[(1, 10), (2, 20), (3, 30), (4, 40)],
        );
        assert_eq!(at(&l, "127.0.0.1", 80), Some((10, "p10".into())));
        assert_eq!(at(&l, "10.1.2.3", 80), Some((20, "p20".into())));
        assert_eq!(at(&l, "::1", 80), Some((40, "p40".into())));
        assert_eq!(at(&l, "2001:db8::1", 80), Some((30, "p30".into())));
        assert_eq!(
            at(&l, "::ffff:127.0.0.1", 80),
            Some((10, "p10".into())),
            "mapped"
        );
        assert_eq!(at(&l, "127.0.0.1", 81), None);
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn an_ipv6_wildcard_takes_ipv4_unless_v6only() {
        let dual = table(&[listening("::", 22, 1, false)], &[(1, 5)]);
        assert_eq!(at(&dual, "192.0.2.1", 22), Some((5, "p5".into())));
        let only = table(&[listening("::", 22, 1, true)], &[(1, 5)]);
        assert_eq!(at(&only, "192.0.2.1", 22), None);
        assert_eq!(at(&only, "2001:db8::1", 22), Some((5, "p5".into())));
    }

    #[test]
    fn of_several_holders_the_lowest_pid_and_no_guess_past_an_unknown_one() {
        // Two SO_REUSEPORT sockets on one port, one held by two processes.
        let l = table(
            &[
                listening("0.0.0.0", 80, 1, false),
                listening("0.0.0.0", 80, 2, false),
            ],
            &[(1, 300), (2, 200)],
        );
        assert_eq!(at(&l, "192.0.2.1", 80), Some((200, "p200".into())));
        // A bound socket whose holder was not found: the wildcard's holder
        // does not get the connection, so it is not named.
        let l = table(
            &[
                listening("192.0.2.1", 80, 1, false),
                listening("0.0.0.0", 80, 2, false),
            ],
            &[(2, 200)],
        );
        assert_eq!(at(&l, "192.0.2.1", 80), None);
        assert_eq!(at(&l, "192.0.2.2", 80), Some((200, "p200".into())));
    }

    static TREES: AtomicUsize = AtomicUsize::new(0);

    /// A directory laid out as /proc: a `PID/fd/N` link per (pid, link
    /// target), and `PID/comm`; removed on drop.
    struct FakeProc(std::path::PathBuf);

    impl FakeProc {
        fn new(fds: &[(u32, &str)]) -> FakeProc {
            let root = std::env::temp_dir().join(format!(
                "flowlat-proc-test-{}-{}",
                std::process::id(),
                TREES.fetch_add(1, Ordering::Relaxed)
            ));
            for (n, &(pid, target)) in fds.iter().enumerate() {
                let dir = root.join(pid.to_string());
                fs::create_dir_all(dir.join("fd")).unwrap();
                fs::write(dir.join("comm"), format!("c{pid}\n")).unwrap();
                std::os::unix::fs::symlink(target, dir.join("fd").join(n.to_string())).unwrap();
            }
            fs::create_dir_all(root.join("self")).unwrap();
            FakeProc(root)
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn holders_are_found_by_their_socket_links() {
        let proc = FakeProc::new(&[
            (40, "socket:[7]"),
            (12, "socket:[7]"),
            (12, "socket:[8]"),
            (30, "socket:[9]"),
            (31, "pipe:[7]"),
            (32, "/dev/null"),
        ]);
        let wanted: HashSet<u64> = [7, 8, 10].into();
        let found = find_holders(&proc.0, &wanted).unwrap();
        assert_eq!(found.lowest, [(7, 12), (8, 12)].into(), "9 is not wanted");
        assert_eq!(found.comms, [(12, "c12".to_string())].into());
        assert!(found.complete);
        assert!(find_holders(&proc.0.join("absent"), &wanted).is_err());
        let none = find_holders(&proc.0, &HashSet::new()).unwrap();
        assert!(none.lowest.is_empty(), "nothing wanted, nothing walked");
    }

    static NAMES: AtomicUsize = AtomicUsize::new(0);

    /// A process of its own name that listens on `addr` (port 0: any) until
    /// dropped, perhaps with a pre-forked worker of another name that holds
    /// the socket too; and the port it got.
    struct ListeningChild {
        child: Child,
        name: String,
        port: u16,
        /// The worker's pid and name, if it has one.
        worker: Option<(u32, String)>,
        _stop: OwnedFd,
    }

    impl ListeningChild {
        fn new(addr: &str, v6only: bool) -> ListeningChild {
            ListeningChild::spawn(addr, v6only, false)
        }

        fn spawn(addr: &str, v6only: bool, with_worker: bool) -> ListeningChild {
            let addr: SocketAddr = addr.parse().unwrap();
            let n = NAMES.fetch_add(1, Ordering::Relaxed);
            let (name, worker_name) = (format!("fl-lst-{n}"), format!("fl-wrk-{n}"));
            let c_name = CString::new(name.clone()).unwrap();
            let c_worker = CString::new(worker_name.clone()).unwrap();
            let worker = with_worker.then_some(c_worker.as_c_str());
            let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let (ready, stop) = (ready_w.as_fd(), stop_r.as_fd());
            let child = Child::spawn(&[ready_w.as_raw_fd(), stop_r.as_raw_fd()], || {
                let body = Listen {
                    name: &c_name,
                    addr,
                    v6only,
                    worker,
                    ready,
                    stop,
                };
                match body.run() {
                    Ok(()) => 0,
                    Err(e) => e as i32,
                }
            });
            drop((ready_w, stop_r));
            let mut said = [0u8; 6];
            assert_eq!(
                nix::unistd::read(&ready_r, &mut said),
                Ok(6),
                "the child listens on {addr}"
            );
            let port = u16::from_ne_bytes([said[0], said[1]]);
            let pid = u32::from_ne_bytes([said[2], said[3], said[4], said[5]]);
            ListeningChild {
                child,
                name,
                port,
                worker: with_worker.then_some((pid, worker_name)),
                _stop: stop_w,
            }
        }

        fn pid(&self) -> u32 {
            self.child.pid().as_raw() as u32
        }

        /// What a lookup of its listener should give.
        fn holder(&self) -> Option<(u32, &str)> {
            Some((self.pid(), self.name.as_str()))
        }
    }

    /// What a [`ListeningChild`] does: names itself, listens, forks its
    /// worker if it has one (which names itself in turn), writes the port
    /// and the pid of the last process made to `ready`, and returns when
    /// `stop` is closed. Only async-signal-safe calls, as it runs in a fork.
    struct Listen<'a> {
        name: &'a CStr,
        addr: SocketAddr,
        v6only: bool,
        worker: Option<&'a CStr>,
        ready: std::os::fd::BorrowedFd<'a>,
        stop: std::os::fd::BorrowedFd<'a>,
    }

    impl Listen<'_> {
        fn run(&self) -> nix::Result<()> {
            nix::sys::prctl::set_name(self.name)?;
            let at = SockaddrStorage::from(self.addr);
            let family = at.family().ok_or(nix::Error::EAFNOSUPPORT)?;
            let sock = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            if self.addr.is_ipv6() {
                socket::setsockopt(&sock, socket::sockopt::Ipv6V6Only, &self.v6only)?;
            }
            socket::bind(sock.as_raw_fd(), &at)?;
            socket::listen(&sock, Backlog::new(8)?)?;
            let bound: SockaddrStorage = socket::getsockname(sock.as_raw_fd())?;
            let port = bound
                .as_sockaddr_in()
                .map(SockaddrIn::port)
                .or_else(|| bound.as_sockaddr_in6().map(SockaddrIn6::port))
                .unwrap_or(0);
            let worker = match self.worker {
                // SAFETY: both sides go on with async-signal-safe calls only.
                Some(name) => match unsafe { nix::unistd::fork() }? {
                    nix::unistd::ForkResult::Child => {
                        nix::sys::prctl::set_name(name)?;
                        None
                    }
                    nix::unistd::ForkResult::Parent { child } => Some(child),
                },
                None => None,
            };
            if worker.is_none() {
                let mut said = [0u8; 6];
                said[..2].copy_from_slice(&port.to_ne_bytes());
                said[2..].copy_from_slice(&(nix::unistd::getpid().as_raw() as u32).to_ne_bytes());
                nix::unistd::write(self.ready, &said)?;
            }
            let mut byte = [0u8];
            while nix::unistd::read(self.stop, &mut byte)? > 0 {}
            if let Some(worker) = worker {
                nix::sys::wait::waitpid(worker, None)?;
            }
            drop(sock);
            Ok(())
        }
    }

    fn scan() -> Listeners {
        let l = Listeners::scan().unwrap_or_else(|e| panic!("{e}"));
        assert!(l.complete(), "a test host is within every bound");
        l
    }

    #[test]
    fn a_named_listener_is_found_with_its_pid_and_comm() {
        let child = ListeningChild::new("127.0.0.1:0", false);
        let found = scan();
        assert_eq!(
            found.lookup("127.0.0.1".parse().unwrap(), child.port),
            child.holder()
        );
        assert_eq!(
            found.lookup("127.0.0.2".parse().unwrap(), child.port),
            None,
            "bound to .1"
        );
    }

    #[test]
    fn wildcard_listeners_take_every_address() {
        let v4 = ListeningChild::new("0.0.0.0:0", false);
        let dual = ListeningChild::new("[::]:0", false);
        let v6only = ListeningChild::new("[::]:0", true);
        let found = scan();
        let lookup = |addr: &str, port| found.lookup(addr.parse().unwrap(), port);
        assert_eq!(lookup("127.0.0.1", v4.port), v4.holder());
        assert_eq!(lookup("127.0.0.1", dual.port), dual.holder());
        assert_eq!(lookup("::1", dual.port), dual.holder());
        assert_eq!(lookup("::1", v6only.port), v6only.holder());
        assert_eq!(lookup("127.0.0.1", v6only.port), None, "IPv6 only");
    }

    #[test]
    fn a_listener_shared_with_a_worker_names_the_lower_pid() {
        let pre = ListeningChild::spawn("127.0.0.1:0", false, true);
        let (worker, worker_name) = pre.worker.clone().expect("a worker");
        let found = scan();
        // Normally the parent; the worker when pids wrapped between them.
        let lowest = if pre.pid() < worker {
            (pre.pid(), pre.name.as_str())
        } else {
            (worker, worker_name.as_str())
        };
        assert_eq!(
            found.lookup("127.0.0.1".parse().unwrap(), pre.port),
            Some(lowest)
        );
    }

    #[test]
    fn a_port_nobody_listens_on_has_no_holder() {
        // A port that was free a moment ago: bound, then closed.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let found = scan();
        assert_eq!(found.lookup("127.0.0.1".parse().unwrap(), port), None);
        assert_eq!(found.lookup("::1".parse().unwrap(), port), None);
    }

    #[test]
    fn a_listener_of_this_process_is_found_too() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = scan();
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(
            found.lookup("127.0.0.1".parse().unwrap(), port),
            Some((std::process::id(), comm.trim_end()))
        );
    }
}
