//! The README's example output, made reproducible: scripted handshakes with
//! known delays through a veth pair, and flowlat run as the README shows.
//! Not part of the suite (it takes half a minute and prints); run it with
//! `sudo -E cargo test --test readme_demo -- --ignored --nocapture`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use kit::net::VethPair;
use kit::peer::{slow_client, Peer};
use kit::run::Flowlat;

fn show(title: &str, lines: &[String], stderr: &str) {
    println!("==== {title}");
    for l in lines {
        println!("{l}");
    }
    for l in stderr.lines().filter(|l| l.contains("stopped")) {
        println!("{l}");
    }
}

/// Upstreams of a client host: two slow servers, a fast one, a closed port
/// and one that never answers.
fn client_traffic(net: &VethPair) {
    let slow12 = net.unowned_beyond_b(false, 0x63);
    let slow48 = net.unowned_beyond_b(false, 0x64);
    let silent = net.unowned_beyond_b(false, 0x65);
    let _p1 = Peer::slow_server(
        &net.b,
        "b",
        slow12.parse().expect("address"),
        Duration::from_millis(12),
        0,
    );
    let _p2 = Peer::slow_server(
        &net.b,
        "b",
        slow48.parse().expect("address"),
        Duration::from_millis(48),
        1,
    );
    let _l = kit::net::listen(&net.b, &net.b4, 443);
    let connect = |addr: &str, port: u16, t: Duration| {
        let sa = SocketAddr::new(addr.parse().expect("address"), port);
        net.a
            .enter(move || TcpStream::connect_timeout(&sa, t).is_ok())
    };
    for i in 0..30 {
        assert!(connect(&net.b4, 443, Duration::from_secs(2)));
        if i % 2 == 0 {
            assert!(connect(&slow12, 443, Duration::from_secs(2)));
        }
        if i % 5 == 0 {
            // Its peer ignores the first SYN: one retransmission, a second later.
            assert!(connect(&slow48, 443, Duration::from_secs(3)));
        }
        if i % 10 == 0 {
            assert!(!connect(&net.b4, 8443, Duration::from_secs(2)));
            assert!(!connect(&silent, 80, Duration::from_millis(1200)));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
#[ignore = "makes the README's example output; run by hand"]
fn readme_examples() {
    let net = VethPair::new("demo");
    let run = |args: &[&str]| {
        let mut all = vec!["--syn-timeout", "3s"];
        all.extend_from_slice(args);
        all.push("a");
        Flowlat::start_net_only(&net.a, &all)
    };
    let sum = run(&["--summary"]);
    let hist = run(&["--summary", "--hist", "--by", "server-ip"]);
    let lines = run(&[]);
    let json = run(&["--json"]);
    let every = run(&["--summary", "--interval", "3s", "--by", "server"]);
    let port = format!("127.0.0.1:{}", 9464);
    let metrics = run(&["--metrics", &port, "--quiet"]);
    client_traffic(&net);
    // The silent server's last attempts time out 3 s after their SYN.
    std::thread::sleep(Duration::from_millis(3500));
    let addr: SocketAddr = port.parse().expect("address");
    let scrape = net.a.enter(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut t = String::new();
        s.read_to_string(&mut t).expect("read");
        t
    });
    for (title, f) in [
        ("summary", sum),
        ("hist", hist),
        ("lines", lines),
        ("json", json),
        ("interval", every),
        ("metrics", metrics),
    ] {
        let stopped = f.stop_text();
        assert!(stopped.status.success(), "{}", stopped.stderr);
        show(title, &stopped.lines, &stopped.stderr);
    }
    println!("==== scrape\n{scrape}");

    // A server's clients, from three networks at different distances: each
    // client's ACK comes its delay after our SYN-ACK.
    let net = VethPair::new("demoin");
    let _l = kit::net::listen(&net.b, &net.b4, 443);
    let amac = kit::net::mac_text(net.a.mac("a"));
    let nets = [("198.51.100", 31u64), ("203.0.113", 87), ("192.0.2", 4)];
    for (n, _) in nets {
        net.b
            .ip(&["route", "add", &format!("{n}.0/24"), "dev", "b"]);
        for host in 10..16 {
            net.b.neigh_permanent(&format!("{n}.{host}"), &amac, "b");
        }
    }
    let f = Flowlat::start_net_only(
        &net.b,
        &[
            "--summary",
            "--hist",
            "--by",
            "dir,client-net",
            "--duration",
            "4s",
            "b",
        ],
    );
    let macs = (net.a.mac("a"), net.b.mac("b"));
    let server: IpAddr = net.b4.parse().expect("address");
    let mut port = 41000;
    for round in 0..4u64 {
        std::thread::scope(|s| {
            for (n, ms) in nets {
                for host in 10..16u64 {
                    port += 1;
                    let src: IpAddr = format!("{n}.{host}").parse().expect("address");
                    let delay =
                        Duration::from_micros(ms * 1000 + (host * 7 + round * 13) % 10 * 300);
                    let (p, a) = (port, &net.a);
                    s.spawn(move || slow_client(a, "a", macs, src, p, server, 443, delay));
                }
            }
        });
    }
    let stopped = f.wait_exit(Duration::from_secs(10));
    show("clients", &stopped.lines, &stopped.stderr);
}
