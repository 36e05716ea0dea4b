//! A raw-socket TCP peer that answers, or completes, handshakes after a set
//! delay: the test's stand-in for a slow network (these kernels have no netem).
//! It uses addresses that no namespace owns, reached through static neighbour
//! entries, so no kernel stack answers in its place.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::NetNs;
use crate::packet::{Tcp, ACK, RST, SYN};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;

/// A raw AF_PACKET socket bound to one interface.
pub struct Raw(OwnedFd);

impl Raw {
    pub fn open(dev: &str) -> Raw {
        let name = std::ffi::CString::new(dev).expect("name");
        // SAFETY: `name` is a valid C string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex != 0, "no interface {dev} in this namespace");
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a new socket nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set below make it a bind address.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a live sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert!(
            r == 0,
            "bind AF_PACKET: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: tv is a live timeval and its size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Raw(fd)
    }

    /// The next incoming frame, or None after the receive timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        // SAFETY: see above; sll and len are live locals sized for the kernel to fill.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buf is writable for its whole length; sll/len are valid out-pointers.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut sll as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n <= 0 || sll.sll_pkttype == PACKET_OUTGOING {
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame is readable for its whole length.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            n as usize,
            frame.len(),
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    fn dup(&self) -> Raw {
        Raw(self.0.try_clone().expect("dup"))
    }
}

/// The TCP fields of a frame the peer cares about.
#[derive(Debug, Clone)]
pub struct Seen {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

pub fn parse(f: &[u8]) -> Option<Seen> {
    let be16 = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    let be32 = |o: usize| u32::from_be_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
    if f.len() < 14 {
        return None;
    }
    let (src, dst, l4) = match be16(12) {
        0x0800 if f.len() >= 34 && f[23] == 6 => {
            let ihl = usize::from(f[14] & 0xf) * 4;
            let a: [u8; 4] = f[26..30].try_into().ok()?;
            let b: [u8; 4] = f[30..34].try_into().ok()?;
            (IpAddr::from(a), IpAddr::from(b), 14 + ihl)
        }
        0x86dd if f.len() >= 54 && f[20] == 6 => {
            let a: [u8; 16] = f[22..38].try_into().ok()?;
            let b: [u8; 16] = f[38..54].try_into().ok()?;
            (IpAddr::from(a), IpAddr::from(b), 54)
        }
        _ => return None,
    };
    if f.len() < l4 + 20 {
        return None;
    }
    Some(Seen {
        dst_mac: f[0..6].try_into().ok()?,
        src_mac: f[6..12].try_into().ok()?,
        src,
        dst,
        sport: be16(l4),
        dport: be16(l4 + 2),
        seq: be32(l4 + 4),
        ack: be32(l4 + 8),
        flags: f[l4 + 13],
    })
}

/// A running peer; stops (and joins) on drop.
pub struct Peer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server ISN the peer uses.
pub const SERVER_ISN: u32 = 0x5eed_0000;

impl Peer {
    /// On `dev` in `ns`, answers each SYN to `addr` with a SYN-ACK `delay` later,
    /// after letting the first `ignore` SYNs of each attempt go unanswered.
    pub fn slow_server(ns: &NetNs, dev: &str, addr: IpAddr, delay: Duration, ignore: u32) -> Peer {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let dev = dev.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let raw = Raw::open(&dev);
            let _ = ready_tx.send(());
            let mut seen: std::collections::HashMap<(u16, u32), u32> = Default::default();
            while !st.load(Ordering::Relaxed) {
                let Some(f) = raw.recv() else { continue };
                let Some(s) = parse(&f) else { continue };
                if s.dst != addr || s.flags & (SYN | ACK) != SYN {
                    continue;
                }
                let n = seen.entry((s.sport, s.seq)).or_insert(0);
                *n += 1;
                if *n <= ignore {
                    continue;
                }
                let mut reply = Tcp::new(
                    &s.dst.to_string(),
                    s.dport,
                    &s.src.to_string(),
                    s.sport,
                    SYN | ACK,
                )
                .seq(SERVER_ISN)
                .ack(s.seq.wrapping_add(1));
                reply.src_mac = s.dst_mac;
                reply.dst_mac = s.src_mac;
                let frame = reply.frame();
                let out = raw.dup();
                let at = Instant::now() + delay;
                std::thread::spawn(move || {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    out.send(&frame);
                });
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("peer started");
        Peer {
            stop,
            thread: Some(thread),
        }
    }
}

/// On `dev` in `ns`, opens one handshake from `src:sport` (an address nobody
/// owns) to `dst:dport`, sending the final ACK `delay` after the SYN-ACK
/// arrives; then resets the connection. Returns the client ISN, or panics if
/// no SYN-ACK came within 5 s.
#[allow(clippy::too_many_arguments)]
pub fn slow_client(
    ns: &NetNs,
    dev: &str,
    macs: ([u8; 6], [u8; 6]),
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    delay: Duration,
) -> u32 {
    let dev = dev.to_string();
    ns.enter(move || {
        let raw = Raw::open(&dev);
        let isn = 0x1000_0000 | u32::from(sport);
        let mk = |flags: u8, seq: u32, ack: u32| {
            let mut t = Tcp::new(&src.to_string(), sport, &dst.to_string(), dport, flags)
                .seq(seq)
                .ack(ack);
            t.src_mac = macs.0;
            t.dst_mac = macs.1;
            t.frame()
        };
        raw.send(&mk(SYN, isn, 0));
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let Some(f) = raw.recv() else { continue };
            let Some(s) = parse(&f) else { continue };
            if s.src == dst
                && s.sport == dport
                && s.dport == sport
                && s.flags & (SYN | ACK) == SYN | ACK
            {
                std::thread::sleep(delay);
                raw.send(&mk(ACK, isn.wrapping_add(1), s.seq.wrapping_add(1)));
                std::thread::sleep(Duration::from_millis(20));
                raw.send(&mk(RST | ACK, isn.wrapping_add(1), s.seq.wrapping_add(1)));
                return isn;
            }
        }
        panic!("no SYN-ACK from {dst}:{dport} within 5 s");
    })
}
