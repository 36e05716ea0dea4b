//! End to end: which local workload each handshake belongs to. The test makes
//! cgroups of its own under the cgroup2 mount it finds, moves itself into
//! them to open sockets there (a socket belongs to the cgroup its creator was
//! in), and checks what flowlat at both ends says. One test only: moving the
//! test process moves every thread of it, and a test running beside it
//! would make its sockets (and start its processes) in those cgroups.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use kit::cgroup;
use kit::json::Rec;
use kit::net::{NetNs, VethPair};
use kit::run::Flowlat;

/// Cgroups made for the test; on drop the test process goes back where it
/// was and they are removed, whatever happened.
struct Cgroups {
    mount: PathBuf,
    /// This process's own cgroup.
    home: PathBuf,
    made: Vec<String>,
}

impl Cgroups {
    fn new() -> Cgroups {
        kit::require_root();
        Cgroups {
            mount: cgroup::mount(),
            home: cgroup::own(),
            made: Vec::new(),
        }
    }

    /// Makes `/flt-PID-name` and returns its path below the mount.
    fn make(&mut self, name: &str) -> String {
        let rel = format!("/flt-{}-{name}", std::process::id());
        std::fs::create_dir(self.dir(&rel)).expect("mkdir cgroup");
        self.made.push(rel.clone());
        rel
    }

    fn dir(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }

    fn id(&self, rel: &str) -> u64 {
        cgroup::id_of(&self.dir(rel))
    }

    /// Moves the whole test process into `rel` (`None`: back home).
    fn enter(&self, rel: Option<&str>) {
        let target = rel.map_or_else(|| self.home.clone(), |rel| self.dir(rel));
        std::fs::write(target.join("cgroup.procs"), std::process::id().to_string())
            .expect("move into the cgroup");
    }

    fn remove(&mut self, rel: &str) {
        self.enter(None);
        std::fs::remove_dir(self.dir(rel)).expect("rmdir cgroup");
        self.made.retain(|m| m != rel);
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for rel in &self.made {
            let _ = std::fs::remove_dir(self.dir(rel));
        }
    }
}

fn start(ns: &NetNs, args: &[&str]) -> Flowlat {
    Flowlat::start_net_only(ns, args)
}

fn connect(ns: &NetNs, addr: &str, port: u16) -> std::io::Result<SocketAddr> {
    let sa = SocketAddr::new(addr.parse().expect("address"), port);
    ns.enter(move || {
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(3))?;
        s.local_addr()
    })
}

fn by_port<'a>(recs: &'a [Rec], dir: &str, client: &SocketAddr) -> Vec<&'a Rec> {
    recs.iter()
        .filter(|r| r.s("dir") == dir && r.n("client_port") == Some(u64::from(client.port())))
        .filter(|r| r.s("client_ip") == client.ip().to_string())
        .collect()
}

fn one<'a>(recs: &'a [Rec], dir: &str, client: &SocketAddr) -> &'a Rec {
    let found = by_port(recs, dir, client);
    assert_eq!(found.len(), 1, "one {dir} record of {client}: {recs:?}");
    found[0]
}

#[test]
fn each_handshake_is_credited_to_the_cgroup_of_its_local_socket() {
    let mut cg = Cgroups::new();
    let client = cg.make("client");
    let server = cg.make("server");
    let gone = cg.make("gone");
    let net = VethPair::new("cg");
    let a_all = start(&net.a, &["--json", "a"]);
    let a_only = start(&net.a, &["--json", "--cgroup", &client, "a"]);
    let b_all = start(&net.b, &["--json", "b"]);
    let b_only = start(&net.b, &["--json", "--cgroup", &server, "b"]);
    let b_sum = start(&net.b, &["--json", "--summary", "--by", "cgroup", "b"]);
    let mport = net.b.enter(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    });
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().expect("address");
    let b_metrics = start(
        &net.b,
        &[
            "--metrics",
            &maddr.to_string(),
            "--metrics-by",
            "cgroup",
            "--quiet",
            "b",
        ],
    );

    // The listeners belong to the server cgroup.
    cg.enter(Some(&server));
    let _l4 = kit::net::listen(&net.b, &net.b4, 8080);
    let _l6 = kit::net::listen(&net.b, &net.b6, 8080);
    cg.enter(Some(&client));
    let c1 = connect(&net.a, &net.b4, 8080).expect("connect");
    let c2 = connect(&net.a, &net.b6, 8080).expect("connect");
    let refused = refused_from(
        &net.a,
        &net.a4,
        format!("{}:9", net.b4).parse().expect("address"),
    );
    cg.enter(None);
    let outside = connect(&net.a, &net.b4, 8080).expect("connect");
    // A cgroup removed before flowlat may have named it.
    cg.enter(Some(&gone));
    let g = connect(&net.a, &net.b4, 8080).expect("connect");
    let gone_id = cg.id(&gone);
    cg.remove(&gone);
    let after = connect(&net.a, &net.b4, 8080).expect("flowlat still measures");

    a_all.wait_records(6, Duration::from_secs(5), |_| true);
    b_all.wait_records(6, Duration::from_secs(5), |_| true);
    std::thread::sleep(Duration::from_millis(300));
    let exposition = net.b.enter(move || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(maddr).expect("connect to the endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        text
    });
    let (a_all, a_only, b_all, b_only) = (a_all.stop(), a_only.stop(), b_all.stop(), b_only.stop());
    let (b_sum, b_metrics) = (b_sum.stop(), b_metrics.stop());
    for s in [&a_all, &a_only, &b_all, &b_only, &b_sum, &b_metrics] {
        kit::run::assert_clean_stop(s);
    }

    let (client_id, server_id) = (cg.id(&client), cg.id(&server));
    // out: the connecting socket's cgroup, refused attempts included.
    for c in [&c1, &c2, &refused] {
        let r = one(&a_all.records, "out", c);
        assert_eq!(r.n("cgroup_id"), Some(client_id), "{r:?}");
        assert_eq!(r.opt_s("cgroup"), Some(client.as_str()), "{r:?}");
    }
    let r = one(&a_all.records, "out", &outside);
    assert_ne!(r.n("cgroup_id"), Some(client_id), "{r:?}");
    assert_ne!(r.n("cgroup_id"), Some(server_id), "{r:?}");
    let r = one(&a_all.records, "out", &g);
    assert_eq!(
        r.n("cgroup_id"),
        Some(gone_id),
        "a removed cgroup keeps its id: {r:?}"
    );
    assert!(
        r.opt_s("cgroup").is_none_or(|p| p == gone),
        "named, if at all, by its path: {r:?}"
    );
    assert_eq!(one(&a_all.records, "out", &after).s("result"), "ok");

    // --cgroup at the client's end keeps exactly that cgroup's attempts.
    let mut kept: Vec<u64> = a_only
        .records
        .iter()
        .map(|r| r.n("client_port").expect("port"))
        .collect();
    kept.sort_unstable();
    let mut want: Vec<u64> = [&c1, &c2, &refused]
        .iter()
        .map(|c| u64::from(c.port()))
        .collect();
    want.sort_unstable();
    assert_eq!(kept, want, "{:?}", a_only.lines);

    // in: the listener's cgroup, whoever the client; a kernel RST has none.
    for c in [&c1, &c2, &outside, &g, &after] {
        let r = one(&b_all.records, "in", c);
        assert_eq!(r.n("cgroup_id"), Some(server_id), "{r:?}");
        assert_eq!(r.opt_s("cgroup"), Some(server.as_str()), "{r:?}");
    }
    let r = one(&b_all.records, "in", &refused);
    assert_eq!(r.s("result"), "refused");
    assert_eq!((r.n("cgroup_id"), r.opt_s("cgroup")), (None, None), "{r:?}");
    // --cgroup at the server's end: every handshake with the listener, no refusal.
    assert_eq!(b_only.records.len(), 5, "{:?}", b_only.lines);
    assert!(b_only.records.iter().all(|r| r.s("result") == "ok"));
    assert!(
        b_only.stderr.contains("1 attempts dropped by the filters"),
        "{}",
        b_only.stderr
    );

    // Summaries and metrics group by it.
    let row = b_sum
        .records
        .iter()
        .find(|r| r.opt_s("cgroup") == Some(server.as_str()))
        .unwrap_or_else(|| panic!("a row for {server}: {:?}", b_sum.lines));
    assert_eq!(
        (row.n("handshakes"), row.n("ok")),
        (Some(5), Some(5)),
        "{row:?}"
    );
    let line = format!(
        "flowlat_handshakes_total{{iface=\"b\",dir=\"in\",cgroup=\"{server}\",result=\"ok\"}} 5"
    );
    assert!(exposition.contains(&line), "{line} in:\n{exposition}");

    drop(cg);
    forwarded_handshakes_have_no_cgroup();
    syn_cookies_have_no_cgroup();
}

/// Connects from `ns` to a closed port; the address the refused attempt came
/// from (std gives none for a failed connect, so the socket is bound first).
fn refused_from(ns: &NetNs, own: &str, dst: SocketAddr) -> SocketAddr {
    use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let own: std::net::Ipv4Addr = own.parse().expect("address");
    let port = ns.enter(move || {
        let fd = sock::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        sock::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(std::net::SocketAddrV4::new(own, 0)),
        )
        .expect("bind");
        let local: SockaddrIn = sock::getsockname(fd.as_raw_fd()).expect("getsockname");
        let SocketAddr::V4(dst) = dst else {
            panic!("an IPv4 destination")
        };
        let err = sock::connect(fd.as_raw_fd(), &SockaddrIn::from(dst)).expect_err("a closed port");
        assert_eq!(err, nix::errno::Errno::ECONNREFUSED);
        local.port()
    });
    SocketAddr::new(own.into(), port)
}

/// Packets this host forwards have no local socket.
fn forwarded_handshakes_have_no_cgroup() {
    let net = VethPair::new("fwd");
    // b routes between a and a third namespace, s.
    let s = NetNs::new("fwds");
    let n = std::process::id() % 250;
    let (r1, s1) = (format!("172.31.{n}.1"), format!("172.31.{n}.2"));
    net.b.ip(&[
        "link", "add", "name", "r1", "type", "veth", "peer", "name", "s1", "netns", &s.name,
    ]);
    net.b.ip(&["addr", "add", &format!("{r1}/24"), "dev", "r1"]);
    net.b.ip(&["link", "set", "r1", "up"]);
    s.ip(&["addr", "add", &format!("{s1}/24"), "dev", "s1"]);
    s.ip(&["link", "set", "s1", "up"]);
    s.ip(&["route", "add", "default", "via", &r1]);
    net.a
        .ip(&["route", "add", &format!("172.31.{n}.0/24"), "via", &net.b4]);
    net.b.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let _l = kit::net::listen(&s, &s1, 8080);
    let f = Flowlat::start(&net.b, &["--json", "r1"]);
    let c = connect(&net.a, &s1, 8080).expect("connect through b");
    f.wait_records(1, Duration::from_secs(5), |_| true);
    let st = f.stop();
    kit::run::assert_clean_stop(&st);
    let r = one(&st.records, "out", &c);
    assert_eq!(r.s("result"), "ok");
    assert_eq!((r.n("cgroup_id"), r.opt_s("cgroup")), (None, None), "{r:?}");
}

/// A SYN-ACK sent as a SYN cookie carries no socket of the listener.
fn syn_cookies_have_no_cgroup() {
    let net = VethPair::new("cookie");
    // 2: a cookie for every SYN, whether or not the queue is full.
    net.b.exec("sysctl", &["-qw", "net.ipv4.tcp_syncookies=2"]);
    let _l = kit::net::listen(&net.b, &net.b4, 8080);
    let f = start(&net.b, &["--json", "b"]);
    let c = connect(&net.a, &net.b4, 8080).expect("connect with a cookie");
    f.wait_records(1, Duration::from_secs(5), |_| true);
    let st = f.stop();
    kit::run::assert_clean_stop(&st);
    let r = one(&st.records, "in", &c);
    assert_eq!(r.s("result"), "ok", "{r:?}");
    assert_eq!((r.n("cgroup_id"), r.opt_s("cgroup")), (None, None), "{r:?}");
}
