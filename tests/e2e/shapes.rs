//! End to end on the interfaces and packet shapes that need a real device:
//! loopback (every packet crosses it twice), a TUN device (no Ethernet
//! header), VLAN-tagged frames through veth (no 802.1Q module here: the frames
//! are written with AF_PACKET; on ingress the kernel moves the outer tag into
//! the skb's metadata, on egress the tag stays in the packet, so both paths are
//! covered), and a SYN flood of spoofed sources against a bounded table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::json::Rec;
use kit::kernel::rss_kib;
use kit::net::{NetNs, VethPair};
use kit::packet::{Tcp, ACK, SYN};
use kit::peer::{parse, Raw};
use kit::run::Flowlat;

fn recs_for<'a>(recs: &'a [Rec], dir: &str, client: &str, cport: u16) -> Vec<&'a Rec> {
    recs.iter()
        .filter(|r| {
            r.s("dir") == dir
                && r.s("client_ip") == client
                && r.n("client_port") == Some(u64::from(cport))
        })
        .collect()
}

#[test]
fn loopback_reports_each_handshake_once_out_and_once_in() {
    let ns = NetNs::new("lo");
    let f = Flowlat::start(&ns, &["--json", "lo"]);
    let (ports, refused) = ns.enter(|| {
        let mut ports = Vec::new();
        for addr in ["127.0.0.1", "::1"] {
            let l = TcpListener::bind((addr, 0)).expect("listen");
            let target = l.local_addr().expect("addr");
            for _ in 0..2 {
                let c = TcpStream::connect(target).expect("connect");
                ports.push((c.local_addr().expect("addr"), target));
            }
        }
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = closed.local_addr().expect("addr");
        drop(closed);
        let err = TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect_err("closed");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        (ports, target)
    });
    f.wait_records(10, Duration::from_secs(5), |_| true);
    let out = f.stop();
    for (client, server) in &ports {
        for dir in ["out", "in"] {
            let r = recs_for(&out.records, dir, &client.ip().to_string(), client.port());
            assert_eq!(r.len(), 1, "{dir} for {client}: {:?}", out.lines);
            assert_eq!(r[0].s("result"), "ok");
            assert_eq!(r[0].s("server_ip"), server.ip().to_string());
            assert!(r[0].n("rtt_ns").expect("rtt") < 1_000_000_000);
        }
    }
    let refusals: Vec<_> = out
        .records
        .iter()
        .filter(|r| r.n("server_port") == Some(u64::from(refused.port())))
        .collect();
    assert_eq!(
        refusals.len(),
        2,
        "one refused out and one refused in: {:?}",
        out.lines
    );
    assert!(refusals.iter().all(|r| r.s("result") == "refused"));
    assert_eq!(out.records.len(), 10, "nothing else: {:?}", out.lines);
}

/// A TUN device `tun0` in `ns` with an IPv4 and an IPv6 address; the test
/// plays the network beyond it through the returned fd.
fn tun(ns: &NetNs) -> OwnedFd {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let fd = ns.enter(|| {
        let path = c"/dev/net/tun";
        // SAFETY: a plain open(2) of a constant path; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        assert!(
            fd >= 0,
            "open /dev/net/tun: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is new and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifr = [0u8; 40];
        ifr[..4].copy_from_slice(b"tun0");
        let flags: i16 = 0x0001 | 0x1000; // IFF_TUN | IFF_NO_PI
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: ifr is a live 40-byte struct ifreq for the duration of the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
        assert!(r == 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        fd
    });
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "tun0"]);
    ns.ip(&["addr", "add", "fd00:77::1/64", "dev", "tun0", "nodad"]);
    ns.ip(&["link", "set", "dev", "tun0", "up"]);
    let kind =
        String::from_utf8_lossy(&ns.ip(&["-d", "link", "show", "dev", "tun0"]).stdout).into_owned();
    assert!(kind.contains("link/none"), "tun0 is an L3 device: {kind}");
    fd
}

/// Reads IP packets from the TUN fd until `stop`, handing each to `on`.
fn tun_loop(
    fd: OwnedFd,
    stop: Arc<AtomicBool>,
    on: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(fd);
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = [nix::poll::PollFd::new(
                file.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16)).unwrap_or(0) == 0 {
                continue;
            }
            let Ok(n) = file.read(&mut buf) else { continue };
            if let Some(reply) = on(&buf[..n]) {
                let _ = file.write_all(&reply);
            }
        }
    })
}

/// Parses an IP packet by prefixing a dummy Ethernet header.
fn parse_ip(p: &[u8]) -> Option<kit::peer::Seen> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(if p.first()? >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(p);
    parse(&f)
}

#[test]
fn an_l3_tun_device_is_measured_from_the_ip_header() {
    let ns = NetNs::new("tun");
    let fd = tun(&ns);
    let injector = fd.try_clone().expect("dup the TUN fd");
    let stop = Arc::new(AtomicBool::new(false));
    // The far side: answers SYNs to .2 / ::2 with a SYN-ACK, and ACKs SYN-ACKs
    // to .3 (a client it plays itself).
    let worker = tun_loop(fd, stop.clone(), |p| {
        let s = parse_ip(p)?;
        if s.flags & (SYN | ACK) == SYN {
            let t = Tcp::new(
                &s.dst.to_string(),
                s.dport,
                &s.src.to_string(),
                s.sport,
                SYN | ACK,
            )
            .seq(77)
            .ack(s.seq.wrapping_add(1));
            return Some(t.ip_packet());
        }
        if s.flags & (SYN | ACK) == SYN | ACK && s.dst.to_string() == "10.77.0.3" {
            let t = Tcp::new("10.77.0.3", s.dport, &s.src.to_string(), s.sport, ACK)
                .seq(s.ack)
                .ack(s.seq.wrapping_add(1));
            return Some(t.ip_packet());
        }
        None
    });
    let f = Flowlat::start(&ns, &["--json", "tun0"]);
    let _l = ns.enter(|| TcpListener::bind("10.77.0.1:9000").expect("listen"));
    let clients = ns.enter(|| {
        ["10.77.0.2", "fd00:77::2"]
            .iter()
            .map(|a| {
                let sa = SocketAddr::new(a.parse().expect("addr"), 80);
                let c = TcpStream::connect_timeout(&sa, Duration::from_secs(3))
                    .expect("the far side answers");
                c.local_addr().expect("addr")
            })
            .collect::<Vec<_>>()
    });
    // The far side opens a connection to us: its SYN arrives through the device.
    let syn = Tcp::new("10.77.0.3", 5555, "10.77.0.1", 9000, SYN)
        .seq(1000)
        .ip_packet();
    std::fs::File::from(injector)
        .write_all(&syn)
        .expect("inject the SYN");
    f.wait_records(3, Duration::from_secs(5), |_| true);
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    let out = f.stop();
    for c in &clients {
        let r = recs_for(&out.records, "out", &c.ip().to_string(), c.port());
        assert_eq!(r.len(), 1, "{c}: {:?}", out.lines);
        assert_eq!((r[0].s("result"), r[0].s("iface")), ("ok", "tun0"));
    }
    let inbound = recs_for(&out.records, "in", "10.77.0.3", 5555);
    assert_eq!(inbound.len(), 1, "{:?}", out.lines);
    assert_eq!(inbound[0].s("result"), "ok");
    assert_eq!(inbound[0].s("server_ip"), "10.77.0.1");
}

fn with_last_octet(addr: &str, last: u8) -> String {
    let mut parts: Vec<String> = addr.split('.').map(str::to_string).collect();
    parts[3] = last.to_string();
    parts.join(".")
}

/// Sends a frame built from `t` with the given MACs and VLAN tags.
fn send(raw: &Raw, mut t: Tcp, macs: ([u8; 6], [u8; 6]), tags: &[(u16, u16)]) {
    t.src_mac = macs.0;
    t.dst_mac = macs.1;
    t.vlans = tags.to_vec();
    raw.send(&t.frame());
}

#[test]
fn vlan_tagged_handshakes_in_packet_and_in_metadata() {
    let net = VethPair::new("vlan");
    let (amac, bmac) = (net.a.mac("a"), net.b.mac("b"));
    let ra = net.a.enter(|| Raw::open("a"));
    let rb = net.b.enter(|| Raw::open("b"));
    let f = Flowlat::start(&net.a, &["--json", "a"]);
    // Addresses nobody owns: no stack answers in our place.
    let far = with_last_octet(&net.b4, 98);
    let near = with_last_octet(&net.a4, 99);
    let single = [(0x8100u16, 100u16)];
    let qinq = [(0x88a8u16, 10u16), (0x8100u16, 100u16)];
    for (port, tags) in [(6001u16, &single[..]), (6002, &qinq[..])] {
        // in: the far client's SYN and ACK arrive (outer tag moved to metadata by
        // the kernel); our SYN-ACK leaves with its tags in the packet.
        send(
            &rb,
            Tcp::new(&far, port, &near, 80, SYN).seq(1000),
            (bmac, amac),
            tags,
        );
        send(
            &ra,
            Tcp::new(&near, 80, &far, port, SYN | ACK)
                .seq(5000)
                .ack(1001),
            (amac, bmac),
            tags,
        );
        send(
            &rb,
            Tcp::new(&far, port, &near, 80, ACK).seq(1001).ack(5001),
            (bmac, amac),
            tags,
        );
        // out: our SYN leaves tagged, the SYN-ACK arrives tagged.
        send(
            &ra,
            Tcp::new(&near, port, &far, 443, SYN).seq(7000),
            (amac, bmac),
            tags,
        );
        send(
            &rb,
            Tcp::new(&far, 443, &near, port, SYN | ACK).seq(9).ack(7001),
            (bmac, amac),
            tags,
        );
    }
    f.wait_records(4, Duration::from_secs(5), |_| true);
    let out = f.stop();
    for port in [6001u16, 6002] {
        let inbound = recs_for(&out.records, "in", &far, port);
        assert_eq!(inbound.len(), 1, "in, port {port}: {:?}", out.lines);
        assert_eq!(inbound[0].s("result"), "ok");
        let outbound = recs_for(&out.records, "out", &near, port);
        assert_eq!(outbound.len(), 1, "out, port {port}: {:?}", out.lines);
        assert_eq!(outbound[0].s("result"), "ok");
    }
}

#[test]
fn a_syn_flood_stays_bounded_and_real_handshakes_are_still_measured() {
    const FLOOD: u32 = 1_000_000;
    const TABLE: u32 = 4096;
    let net = VethPair::new("flood");
    let _l = net.b.enter({
        let addr: SocketAddr = format!("{}:8080", net.b4).parse().expect("addr");
        move || {
            let l = TcpListener::bind(addr).expect("listen");
            let l2 = l.try_clone().expect("clone");
            std::thread::spawn(move || {
                for c in l2.incoming().flatten() {
                    drop(c)
                }
            });
            l
        }
    });
    let table = TABLE.to_string();
    let f = Flowlat::start(
        &net.b,
        &[
            "--json",
            "--max-pending",
            &table,
            "--syn-timeout",
            "1s",
            "b",
        ],
    );
    let rss_before = rss_kib(f.pid());
    let (amac, bmac) = (net.a.mac("a"), net.b.mac("b"));
    let target = with_last_octet(&net.b4, 99);
    let raw = net.a.enter(|| Raw::open("a"));
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        let mut t = Tcp::new("10.0.0.1", 1, &target, 80, SYN).seq(1);
        t.src_mac = amac;
        t.dst_mac = bmac;
        let mut frame = t.frame();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut x: u32 = 0x1234_5678;
            for i in 0..FLOOD {
                // Spoofed source address and port, a new ISN each time.
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                frame[26..30].copy_from_slice(&(0x0a00_0000 | (x & 0x00ff_ffff)).to_be_bytes());
                frame[34..36].copy_from_slice(&((x >> 8) as u16 | 1024).to_be_bytes());
                frame[38..42].copy_from_slice(&i.to_be_bytes());
                raw.send(&frame);
            }
            flooding.store(false, Ordering::Relaxed);
            started.elapsed()
        })
    };
    // Real handshakes while the flood runs.
    let mut legit = Vec::new();
    let dst: SocketAddr = format!("{}:8080", net.b4).parse().expect("addr");
    while flooding.load(Ordering::Relaxed) {
        let c = net
            .a
            .enter(move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)));
        if let Ok(c) = c {
            legit.push(c.local_addr().expect("addr"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = flood.join().expect("flood thread");
    // Let the survivors time out and be swept.
    std::thread::sleep(Duration::from_millis(2500));
    let rss_after = rss_kib(f.pid());
    let out = f.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let rate = f64::from(FLOOD) / took.as_secs_f64();
    eprintln!("flood: {FLOOD} SYNs in {took:?} ({rate:.0}/s); {} real handshakes; RSS {rss_before} -> {rss_after} KiB", legit.len());
    assert!(
        legit.len() >= 5,
        "too few real handshakes during the flood: {}",
        legit.len()
    );
    let measured = legit
        .iter()
        .filter(|c| {
            recs_for(&out.records, "in", &c.ip().to_string(), c.port())
                .iter()
                .any(|r| r.s("result") == "ok")
        })
        .count();
    assert!(
        measured * 10 >= legit.len() * 9,
        "only {measured} of {} real handshakes measured during the flood",
        legit.len()
    );
    // The summary counts what the bounded table had to drop.
    let evicted: u64 = out
        .stderr
        .split(';')
        .find_map(|part| part.trim().strip_suffix(" table-full evictions"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no eviction count in {}", out.stderr));
    let timeouts = out
        .records
        .iter()
        .filter(|r| r.s("result") == "timeout")
        .count() as u64;
    // The slot table holds its front's attempts besides --max-pending. The
    // front gives up no attempt to a newer one (a full front bucket sends
    // the newer one on to the main table), so a way a real handshake frees
    // there may take a flood SYN that stays until it times out.
    let room = u64::from(TABLE) + flowlat::probe::slots::FRONT_WAYS as u64;
    assert!(
        timeouts <= room + legit.len() as u64,
        "{timeouts} timeouts from a table of room for {room} and {} real handshakes",
        legit.len()
    );
    assert!(
        evicted + timeouts + room >= u64::from(FLOOD),
        "{evicted} evictions and {timeouts} timeouts do not account for {FLOOD} SYNs"
    );
    assert!(out.stderr.contains(" 0 records lost"), "{}", out.stderr);
    assert!(
        rss_after < rss_before + 8 * 1024,
        "user-space memory grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn hostile_frames_on_a_real_interface_are_passed_and_never_measured() {
    let net = VethPair::new("hostile");
    net.a.ip(&["link", "set", "dev", "a", "mtu", "65535"]);
    net.b.ip(&["link", "set", "dev", "b", "mtu", "65535"]);
    let (amac, bmac) = (net.a.mac("a"), net.b.mac("b"));
    let rb = net.b.enter(|| Raw::open("b"));
    let _l = net.b.enter({
        let addr: SocketAddr = format!("{}:8080", net.b4).parse().expect("addr");
        move || TcpListener::bind(addr).expect("listen")
    });
    let f = Flowlat::start(&net.a, &["--json", "a"]);
    let far = with_last_octet(&net.b4, 98);
    let near = with_last_octet(&net.a4, 99);
    let mut shapes = Vec::new();
    for (c, s) in [
        (&far, &near),
        (&"2001:db8::98".to_string(), &"2001:db8::99".to_string()),
    ] {
        let mut t = Tcp::new(c, 4444, s, 80, SYN).seq(1);
        t.src_mac = bmac;
        t.dst_mac = amac;
        shapes.push(t.clone());
        t.vlans = vec![(0x88a8, 5), (0x8100, 6)];
        shapes.push(t);
    }
    let mut sent = 0;
    // Every truncation of SYNs in several shapes: the IP and TCP headers cut
    // at every offset, which test-run cannot produce.
    for t in &shapes {
        let frame = t.frame();
        for len in 14..frame.len() {
            rb.send(&frame[..len]);
            sent += 1;
        }
    }
    // An IPv6 SYN behind more extension headers than are walked: counted.
    let mut long = Tcp::new("2001:db8::98", 4446, "2001:db8::99", 80, SYN).seq(1);
    long.src_mac = bmac;
    long.dst_mac = amac;
    long.ext = vec![kit::packet::Ext::Options(60, 1); 7];
    rb.send(&long.frame());
    // A maximum-size frame and random garbage.
    let mut big = Tcp::new(&far, 4445, &near, 80, ACK).seq(1).ack(1);
    big.src_mac = bmac;
    big.dst_mac = amac;
    big.payload = vec![0xee; 65535 - 40];
    rb.send(&big.frame());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..2000usize {
        let mut frame = amac.to_vec();
        frame.extend_from_slice(&bmac);
        let kind: &[u8] = [
            &[0x08u8, 0x00][..],
            &[0x86, 0xdd],
            &[0x81, 0x00],
            &[0x88, 0xa8],
        ][i % 4];
        frame.extend_from_slice(kind);
        for _ in 0..(i % 120) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            frame.push(x as u8);
        }
        rb.send(&frame);
        sent += 1;
    }
    // flowlat still measures a real handshake afterwards, and only that.
    let dst: SocketAddr = format!("{}:8080", net.b4).parse().expect("addr");
    let c = net
        .a
        .enter(move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
        .expect("connect");
    let client = c.local_addr().expect("addr");
    f.wait_records(1, Duration::from_secs(5), |_| true);
    std::thread::sleep(Duration::from_millis(200));
    let out = f.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.records.len(),
        1,
        "after {sent} hostile frames: {:?}",
        out.lines
    );
    assert_eq!(
        recs_for(&out.records, "out", &client.ip().to_string(), client.port()).len(),
        1
    );
}
