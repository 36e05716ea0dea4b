//! The packets of each class, and the handshakes, as flowlat sees them at a hook.

use flowlat::probe::Hook;

use kit::packet::{arp_request, udp, Tcp, ACK, PSH, RST, SYN};

/// Client and server of the measured connections. The table's other entries
/// (see [`filler`]) use other addresses, so nothing measured collides with them.
const C4: &str = "10.0.0.5";
const S4: &str = "93.184.216.34";
const C6: &str = "2001:db8::5";
const S6: &str = "2001:db8::1";

/// One packet class of the per-packet table.
pub struct Class {
    /// The key under `classes` in the JSON report.
    pub key: &'static str,
    pub hook: Hook,
    /// The measured packet, run `repeat` times.
    pub frame: Vec<u8>,
    /// Packets run once before, to put the table in the state `state` describes.
    pub setup: Vec<(Hook, Vec<u8>)>,
    /// What the classifier finds in its table, in words.
    pub state: &'static str,
    /// Not part of any handshake: the +5 ns target applies.
    pub bystander: bool,
    /// A layout this parser may not support yet; the bench says whether it does.
    pub needs_parser: Option<Layout>,
    /// The Go flowlat's cost for this class on this machine, where it was measured.
    pub go_ns: Option<u32>,
}

/// Packet layouts beyond plain Ethernet + IPv4/IPv6 + TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    Vlan,
    Ipv6ExtHeader,
}

/// Inserts an 802.1Q tag (VLAN 100) after the MAC addresses.
pub fn vlan(mut frame: Vec<u8>) -> Vec<u8> {
    frame.splice(12..12, [0x81, 0x00, 0x00, 100]);
    frame
}

/// Puts an 8-byte destination options header (one PadN option) between the
/// IPv6 header and TCP. The TCP checksum covers neither, so it stays valid.
pub fn v6_ext_header(mut frame: Vec<u8>) -> Vec<u8> {
    const NEXTHDR: usize = 14 + 6;
    const PAYLOAD_LEN: usize = 14 + 4;
    const DSTOPTS: u8 = 60;
    let inner = frame[NEXTHDR];
    frame[NEXTHDR] = DSTOPTS;
    let len = u16::from_be_bytes([frame[PAYLOAD_LEN], frame[PAYLOAD_LEN + 1]]) + 8;
    frame[PAYLOAD_LEN..PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
    frame.splice(54..54, [inner, 0, 1, 4, 0, 0, 0, 0]);
    frame
}

fn seg(c: &str, cport: u16, s: &str, flags: u8, seq: u32, ack: u32, to_server: bool) -> Tcp {
    if to_server {
        Tcp::new(c, cport, s, 443, flags).seq(seq).ack(ack)
    } else {
        Tcp::new(s, 443, c, cport, flags).seq(seq).ack(ack)
    }
}

/// A client's SYN.
pub fn syn(c: &str, cport: u16, s: &str, isn: u32) -> Vec<u8> {
    seg(c, cport, s, SYN, isn, 0, true).frame()
}

/// The server's SYN-ACK to it.
pub fn synack(c: &str, cport: u16, s: &str, isn: u32, server_isn: u32) -> Vec<u8> {
    seg(
        c,
        cport,
        s,
        SYN | ACK,
        server_isn,
        isn.wrapping_add(1),
        false,
    )
    .frame()
}

/// The client's ACK of the SYN-ACK, or any later segment of the client.
pub fn client_ack(c: &str, cport: u16, s: &str, isn: u32, server_isn: u32, len: usize) -> Vec<u8> {
    let mut t = seg(
        c,
        cport,
        s,
        ACK,
        isn.wrapping_add(1),
        server_isn.wrapping_add(1),
        true,
    );
    if len > 0 {
        t.flags |= PSH;
        t.payload = vec![0x5a; len];
    }
    t.frame()
}

fn rst(c: &str, cport: u16, s: &str, isn: u32) -> Vec<u8> {
    seg(c, cport, s, RST | ACK, 0, isn.wrapping_add(1), false).frame()
}

/// The per-packet classes, IPv4 then IPv6, then the layouts the parser may lack.
pub fn classes() -> Vec<Class> {
    let mut v = Vec::new();
    v.push(Class {
        key: "arp",
        hook: Hook::Ingress,
        frame: arp_request(),
        setup: vec![],
        state: "-",
        bystander: true,
        needs_parser: None,
        go_ns: None,
    });
    for (fam, c, s) in [("v4", C4, S4), ("v6", C6, S6)] {
        let v6 = fam == "v6";
        let pick = |a: &'static str, b: &'static str| if v6 { b } else { a };
        v.push(Class {
            key: pick("udp_v4", "udp_v6"),
            hook: Hook::Ingress,
            frame: udp(s, c),
            setup: vec![],
            state: "-",
            bystander: true,
            needs_parser: None,
            go_ns: if v6 { None } else { Some(50) },
        });
        // An established connection: nothing of it is in the table.
        for (key, hook, len, go) in [
            (pick("tcp_ack_v4", "tcp_ack_v6"), Hook::Ingress, 0, Some(41)),
            (
                pick("tcp_ack_v4_egress", "tcp_ack_v6_egress"),
                Hook::Egress,
                0,
                None,
            ),
            (
                pick("tcp_data_v4", "tcp_data_v6"),
                Hook::Ingress,
                1400,
                Some(42),
            ),
            (
                pick("tcp_data_v4_egress", "tcp_data_v6_egress"),
                Hook::Egress,
                1400,
                None,
            ),
        ] {
            v.push(Class {
                key,
                hook,
                frame: client_ack(c, 40001, s, 1000, 2000, len),
                setup: vec![],
                state: "established, no entry",
                bystander: true,
                needs_parser: None,
                go_ns: if v6 { None } else { go },
            });
        }
        v.push(Class {
            key: pick("syn_v4", "syn_v6"),
            hook: Hook::Egress,
            frame: syn(c, 40002, s, 3000),
            setup: vec![],
            state: "out SYN: 1st run inserts, then retransmissions",
            bystander: false,
            needs_parser: None,
            go_ns: Some(if v6 { 111 } else { 99 }),
        });
        v.push(Class {
            key: pick("synack_v4", "synack_v6"),
            hook: Hook::Egress,
            frame: synack(c, 40003, s, 4000, 5000),
            setup: vec![(Hook::Ingress, syn(c, 40003, s, 4000))],
            state: "in SYN pending: 1st run answers, then retransmissions",
            bystander: false,
            needs_parser: None,
            go_ns: if v6 { None } else { Some(103) },
        });
        v.push(Class {
            key: pick("synack_v4_ingress", "synack_v6_ingress"),
            hook: Hook::Ingress,
            frame: synack(c, 40004, s, 6000, 7000),
            setup: vec![],
            state: "no SYN pending (stray SYN-ACK)",
            bystander: false,
            needs_parser: None,
            go_ns: None,
        });
        v.push(Class {
            key: pick("rst_v4", "rst_v6"),
            hook: Hook::Ingress,
            frame: rst(c, 40005, s, 8000),
            setup: vec![],
            state: "no SYN pending (RST of a connection)",
            bystander: false,
            needs_parser: None,
            go_ns: None,
        });
    }
    v.push(Class {
        key: "tcp_ack_vlan_v4",
        hook: Hook::Ingress,
        frame: vlan(client_ack(C4, 40011, S4, 1000, 2000, 0)),
        setup: vec![],
        state: "established, no entry",
        bystander: true,
        needs_parser: Some(Layout::Vlan),
        go_ns: None,
    });
    v.push(Class {
        key: "syn_vlan_v4",
        hook: Hook::Egress,
        frame: vlan(syn(C4, 40012, S4, 3000)),
        setup: vec![],
        state: "out SYN: 1st run inserts, then retransmissions",
        bystander: false,
        needs_parser: Some(Layout::Vlan),
        go_ns: None,
    });
    v.push(Class {
        key: "tcp_ack_v6ext",
        hook: Hook::Ingress,
        frame: v6_ext_header(client_ack(C6, 40013, S6, 1000, 2000, 0)),
        setup: vec![],
        state: "established, no entry",
        bystander: true,
        needs_parser: Some(Layout::Ipv6ExtHeader),
        go_ns: None,
    });
    v.push(Class {
        key: "syn_v6ext",
        hook: Hook::Egress,
        frame: v6_ext_header(syn(C6, 40014, S6, 3000)),
        setup: vec![],
        state: "out SYN: 1st run inserts, then retransmissions",
        bystander: false,
        needs_parser: Some(Layout::Ipv6ExtHeader),
        go_ns: None,
    });
    v
}

/// A SYN that tells whether the probe parses `layout`: if it does, the SYN
/// leaves an entry in the table.
pub fn parser_probe(layout: Layout) -> Vec<u8> {
    match layout {
        Layout::Vlan => vlan(syn(C4, 40021, S4, 9000)),
        Layout::Ipv6ExtHeader => v6_ext_header(syn(C6, 40022, S6, 9000)),
    }
}

/// The SYN of the `i`th filler attempt: other clients' attempts in progress,
/// half "out" (egress), half "in" (ingress), a quarter IPv6.
pub fn filler(i: u32) -> (Hook, Vec<u8>) {
    let hook = if i.is_multiple_of(2) {
        Hook::Egress
    } else {
        Hook::Ingress
    };
    let port = 1024 + (i % 60000) as u16;
    let host = i / 60000;
    let frame = if i % 4 == 3 {
        syn(&format!("2001:db8:f::{:x}", host + 1), port, S6, i)
    } else {
        syn(
            &format!("10.200.{}.{}", host / 250, host % 250 + 1),
            port,
            S4,
            i,
        )
    };
    (hook, frame)
}

/// Direction of a measured handshake, named as in flowlat's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Out,
    In,
}

/// The packets of the `i`th handshake, in order, with the hook each passes.
/// out: SYN leaves, SYN-ACK arrives. in: SYN arrives, SYN-ACK leaves, ACK arrives.
pub fn handshake(dir: Dir, i: u32) -> Vec<(&'static str, Hook, Vec<u8>)> {
    let port = 1024 + (i % 60000) as u16;
    let c = format!("10.100.{}.{}", i / 60000 / 250, i / 60000 % 250 + 1);
    let (isn, server_isn) = (i.wrapping_mul(7919), i.wrapping_mul(104_729) ^ 0x5eed);
    match dir {
        Dir::Out => vec![
            ("SYN", Hook::Egress, syn(&c, port, S4, isn)),
            (
                "SYN-ACK",
                Hook::Ingress,
                synack(&c, port, S4, isn, server_isn),
            ),
        ],
        Dir::In => vec![
            ("SYN", Hook::Ingress, syn(&c, port, S4, isn)),
            (
                "SYN-ACK",
                Hook::Egress,
                synack(&c, port, S4, isn, server_isn),
            ),
            (
                "ACK",
                Hook::Ingress,
                client_ack(&c, port, S4, isn, server_isn, 0),
            ),
        ],
    }
}
