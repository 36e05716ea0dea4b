//! Builds Ethernet frames with IPv4/IPv6 and TCP/UDP/ICMP headers, with valid
//! checksums, for test runs and for the raw-socket peer.

use std::net::IpAddr;

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const PSH: u8 = 0x08;

/// A TCP segment to build.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ip_options: Vec<u8>,
    /// TCP options (a multiple of 4 bytes, at most 40).
    pub tcp_options: Vec<u8>,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// VLAN tags after the MAC addresses, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    /// IPv6 extension headers before TCP, in order.
    pub ext: Vec<Ext>,
}

/// An IPv6 extension header.
#[derive(Clone, Debug)]
pub enum Ext {
    /// Hop-by-hop (0), routing (43) or destination options (60), with
    /// `units` × 8 bytes in all (at least 1).
    Options(u8, u8),
    /// A fragment header with this offset (in 8-byte units) and more-fragments flag.
    Fragment(u16, bool),
    /// An authentication header with `words` × 4 bytes in all (at least 3).
    Auth(u8),
}

impl Ext {
    fn kind(&self) -> u8 {
        match self {
            Ext::Options(t, _) => *t,
            Ext::Fragment(..) => 44,
            Ext::Auth(_) => 51,
        }
    }
    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Ext::Options(_, units) => {
                let mut b = vec![0u8; usize::from(*units) * 8];
                b[0] = next;
                b[1] = units - 1;
                b[2] = 1; // PadN
                b[3] = (b.len() - 4) as u8;
                b
            }
            Ext::Fragment(off, more) => {
                let v = (off << 3) | u16::from(*more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&v.to_be_bytes());
                b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                b
            }
            Ext::Auth(words) => {
                let mut b = vec![0u8; usize::from(*words) * 4];
                b[0] = next;
                b[1] = words - 2;
                b
            }
        }
    }
}

impl Tcp {
    pub fn new(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Tcp {
        Tcp {
            src: src.parse().expect("address"),
            dst: dst.parse().expect("address"),
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags,
            payload: Vec::new(),
            ip_options: Vec::new(),
            tcp_options: Vec::new(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlans: Vec::new(),
            ext: Vec::new(),
        }
    }
    pub fn seq(mut self, seq: u32) -> Tcp {
        self.seq = seq;
        self
    }
    pub fn ack(mut self, ack: u32) -> Tcp {
        self.ack = ack;
        self
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        let doff = (20 + self.tcp_options.len()) / 4;
        tcp.push((doff as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(&self.tcp_options);
        tcp.extend_from_slice(&self.payload);
        let mut f = l3(
            self.src,
            self.dst,
            6,
            &self.ip_options,
            tcp,
            16,
            self.src_mac,
            self.dst_mac,
        );
        if !self.ext.is_empty() {
            // Insert the chain between the IPv6 header and TCP, fixing the
            // next-header fields and the payload length.
            let mut chain = Vec::new();
            for (i, e) in self.ext.iter().enumerate() {
                let next = self.ext.get(i + 1).map_or(6, Ext::kind);
                chain.extend(e.bytes(next));
            }
            f[14 + 6] = self.ext[0].kind();
            let plen = u16::from_be_bytes([f[14 + 4], f[14 + 5]]) + chain.len() as u16;
            f[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
            f.splice(54..54, chain);
        }
        for &(tpid, tci) in self.vlans.iter().rev() {
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&tci.to_be_bytes());
            f.splice(12..12, tag);
        }
        f
    }

    /// The packet without its Ethernet header, as an L3 device carries it.
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut plain = self.clone();
        plain.vlans.clear();
        plain.frame()[14..].to_vec()
    }
}

pub fn udp(src: &str, dst: &str) -> Vec<u8> {
    let mut u = vec![0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, b'p', b'i', b'n', b'g'];
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    l3(
        src.parse().expect("addr"),
        dst.parse().expect("addr"),
        17,
        &[],
        u,
        6,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
    )
}

pub fn icmp_echo(src: &str, dst: &str) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4];
    let c = checksum(&m, 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    l3(
        src.parse().expect("addr"),
        dst.parse().expect("addr"),
        1,
        &[],
        m,
        usize::MAX,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
    )
}

pub fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    f.extend_from_slice(&[
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ]);
    f
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        acc += u32::from(w);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub fn checksum(data: &[u8], acc: u32) -> u16 {
    fold(sum16(data, acc))
}

/// Wraps an L4 payload in IP and Ethernet; `csum_at` is the offset of the L4
/// checksum that covers the pseudo-header (usize::MAX for none, e.g. ICMP).
#[allow(clippy::too_many_arguments)]
pub(crate) fn l3(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ip_options: &[u8],
    mut l4: Vec<u8>,
    csum_at: usize,
    smac: [u8; 6],
    dmac: [u8; 6],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if csum_at != usize::MAX {
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, proto]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                let c = fold(sum16(&l4, sum16(&pseudo, 0)));
                l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            }
            f.extend_from_slice(&[0x08, 0x00]);
            let ihl = 5 + ip_options.len() / 4;
            let total = ihl * 4 + l4.len();
            let mut ip = vec![0x40 | ihl as u8, 0];
            ip.extend_from_slice(&(total as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(ip_options);
            let c = checksum(&ip, 0);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if csum_at != usize::MAX {
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, proto]);
                let c = fold(sum16(&l4, sum16(&pseudo, 0)));
                l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            }
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    f.extend_from_slice(&l4);
    f
}
