//! A handshake storm: client threads in one namespace connect to a server in
//! the other as fast as asked, and reset each connection at once (SO_LINGER 0),
//! so no TIME_WAIT state limits the rate.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::net::NetNs;

/// Accepts and closes connections on `addr` in `ns` for as long as the bench runs.
pub fn serve(ns: &NetNs, addr: SocketAddr, threads: usize) {
    let listener = ns.enter(move || TcpListener::bind(addr).expect("listen"));
    // A backlog deep enough for a burst of thousands; listen() again only resizes it.
    // SAFETY: the fd is a live listening socket owned by `listener`.
    let r = unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    assert_eq!(r, 0, "listen: {}", std::io::Error::last_os_error());
    for _ in 0..threads {
        let l = listener.try_clone().expect("clone the listener");
        std::thread::spawn(move || {
            for conn in l.incoming() {
                drop(conn);
            }
        });
    }
}

/// Closing with a zero linger time sends a RST and frees the port at once.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a live, correctly sized option value for SO_LINGER.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// What the clients did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Storm {
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
    /// CPU time of the client threads in user space: the storm's own code.
    pub user_ns: u64,
    /// CPU time of the client threads in the kernel: their connects, and the
    /// packet processing the kernel does in their context.
    pub sys_ns: u64,
    /// The share of the machine's CPU time that was busy (anyone's) during the storm.
    pub machine_busy: f64,
}

impl Storm {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// The client threads' CPU time in user space, as a share of one CPU
    /// over the storm: what says whether the storm's own code is what
    /// limits the rate.
    pub fn user_cpu_share(&self) -> f64 {
        self.user_ns as f64 / (self.secs * 1e9)
    }

    /// The client threads' CPU time, user and kernel, per handshake, in µs.
    pub fn cpu_us_per_handshake(&self) -> f64 {
        (self.user_ns + self.sys_ns) as f64 / 1000.0 / self.ok.max(1) as f64
    }
}

/// The machine's (busy, total) CPU time so far, in clock ticks, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// This thread's (user, system) CPU time so far, in ns.
fn thread_cpu_ns() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live rusage; RUSAGE_THREAD asks for this thread's times.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(r, 0, "getrusage: {}", std::io::Error::last_os_error());
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// `clients` threads in `ns` connect to `server` for `dur`, together at
/// `rate` handshakes a second (each paced on its own), or flat out when `None`.
pub fn run(
    ns: &NetNs,
    server: SocketAddr,
    rate: Option<u32>,
    clients: usize,
    dur: Duration,
) -> Storm {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let machine0 = machine_ticks();
    let start = Instant::now();
    let end = start + dur;
    let gap = rate.map(|r| Duration::from_secs_f64(clients as f64 / f64::from(r.max(1))));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (ok, failed) = (ok.clone(), failed.clone());
            ns.spawn(move || {
                let cpu0 = thread_cpu_ns();
                // Spread the clients' schedules over one gap.
                let mut next =
                    start + gap.map_or(Duration::ZERO, |g| g * i as u32 / clients as u32);
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    if let Some(g) = gap {
                        if next > now {
                            std::thread::sleep(next - now);
                        } else if now - next > Duration::from_millis(50) {
                            // Fell behind (the machine is at its limit): do not
                            // make up for it with a burst.
                            next = now;
                        }
                        next += g;
                    }
                    match TcpStream::connect(server) {
                        Ok(s) => {
                            reset_on_close(&s);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let cpu1 = thread_cpu_ns();
                (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1)
            })
        })
        .collect();
    let (mut user_ns, mut sys_ns) = (0, 0);
    for t in threads {
        let (u, s) = t.join().expect("client thread");
        user_ns += u;
        sys_ns += s;
    }
    let machine1 = machine_ticks();
    let (busy, total) = (machine1.0 - machine0.0, machine1.1 - machine0.1);
    Storm {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        user_ns,
        sys_ns,
        machine_busy: busy as f64 / total.max(1) as f64,
    }
}

/// Connections that wait for an answer that never comes: non-blocking
/// connects from `ns` to `targets` (addresses nobody owns beyond the other
/// end, whose SYNs cross the veth and are dropped there), spread round-robin,
/// each from its own ephemeral port. While they are open, both ends' flowlat
/// keep one attempt in progress for each, as a host with many handshakes in
/// flight at once does (a server answering clients far away: rate × round
/// trip). Closing them (dropping the fds) sends nothing.
pub fn waiting(ns: &NetNs, targets: &[SocketAddr], n: usize) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn};
    let targets = targets.to_vec();
    ns.enter(move || {
        (0..n)
            .map(|i| {
                let SocketAddr::V4(t) = targets[i % targets.len()] else {
                    panic!("waiting connections are IPv4");
                };
                let fd = sock::socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .expect("socket");
                let err = sock::connect(fd.as_raw_fd(), &SockaddrIn::from(t))
                    .expect_err("a connect to nobody does not complete at once");
                assert_eq!(
                    err,
                    nix::errno::Errno::EINPROGRESS,
                    "a waiting connect to {t}"
                );
                fd
            })
            .collect()
    })
}
