//! A routed path of three namespaces, client – router – server, with IPv4 and
//! IPv6 on both links, and nftables rulesets loaded into any of them: for
//! tests of what a router on the way does to a handshake (rejects it with an
//! ICMP error, or lets it pass), as opposed to a peer on the same link.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::net::NetNs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Three namespaces, `client` (interface `c`), `router` (`rc` towards the
/// client, `rs` towards the server) and `server` (interface `s`), joined by
/// two veth pairs `c`–`rc` and `rs`–`s`; the router forwards IPv4 and IPv6,
/// the client and the server route everything through it. ICMP errors are not
/// rate-limited in any of them, so every rejection is answered. Everything
/// is removed on drop (the namespaces take their interfaces with them).
pub struct Routed {
    pub client: NetNs,
    pub router: NetNs,
    pub server: NetNs,
    /// The client's addresses, on `c`.
    pub client4: String,
    pub client6: String,
    /// The router's addresses on the client's link (`rc`): the source of the
    /// ICMP errors the router sends the client.
    pub router4: String,
    pub router6: String,
    /// The server's addresses, on `s`, in another subnet than the client's.
    pub server4: String,
    pub server6: String,
}

impl Routed {
    pub fn new(tag: &str) -> Routed {
        let client = NetNs::new(&format!("{tag}c"));
        let router = NetNs::new(&format!("{tag}r"));
        let server = NetNs::new(&format!("{tag}s"));
        // Subnets of this test process's own, as VethPair makes them (each
        // namespace routes on its own, so they only need to be readable).
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 120 + 1;
        let pid = std::process::id() % 200 + 20;
        let (cnet, snet) = (n, n + 128);
        client.ip(&[
            "link",
            "add",
            "name",
            "c",
            "type",
            "veth",
            "peer",
            "name",
            "rc",
            "netns",
            &router.name,
        ]);
        server.ip(&[
            "link",
            "add",
            "name",
            "s",
            "type",
            "veth",
            "peer",
            "name",
            "rs",
            "netns",
            &router.name,
        ]);
        let r = Routed {
            client4: format!("10.{pid}.{cnet}.2"),
            client6: format!("fd00:{pid}:{cnet:x}::2"),
            router4: format!("10.{pid}.{cnet}.1"),
            router6: format!("fd00:{pid}:{cnet:x}::1"),
            server4: format!("10.{pid}.{snet}.2"),
            server6: format!("fd00:{pid}:{snet:x}::2"),
            client,
            router,
            server,
        };
        let router_s4 = format!("10.{pid}.{snet}.1");
        let router_s6 = format!("fd00:{pid}:{snet:x}::1");
        for (ns, dev, a4, a6) in [
            (&r.client, "c", &r.client4, &r.client6),
            (&r.router, "rc", &r.router4, &r.router6),
            (&r.router, "rs", &router_s4, &router_s6),
            (&r.server, "s", &r.server4, &r.server6),
        ] {
            ns.ip(&["addr", "add", &format!("{a4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{a6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", "dev", dev, "up"]);
        }
        for (ns, via4, via6) in [
            (&r.client, &r.router4, &r.router6),
            (&r.server, &router_s4, &router_s6),
        ] {
            ns.ip(&["route", "add", "default", "via", via4]);
            ns.ip(&["-6", "route", "add", "default", "via", via6]);
        }
        r.router.exec(
            "sysctl",
            &[
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        );
        for ns in [&r.client, &r.router, &r.server] {
            ns.exec(
                "sysctl",
                &[
                    "-q",
                    "-w",
                    "net.ipv4.icmp_ratelimit=0",
                    "net.ipv6.icmp.ratelimit=0",
                ],
            );
        }
        r
    }
}

/// Loads an nftables ruleset (`nft -f` syntax) into `ns`; panics with nft's
/// complaint if it refuses it. The ruleset goes with the namespace.
pub fn nft(ns: &NetNs, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft (scripts/test.sh installs nftables)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ruleset.as_bytes())
        .expect("write the ruleset");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -f refused the ruleset in {}: {}\n{ruleset}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}
