//! ICMP and ICMPv6 errors that quote a TCP segment, as a router on the way or
//! the peer sends them back (RFC 792, RFC 4443), checksummed; and what the
//! measurement contract makes of each type and code.

use std::net::IpAddr;

use flowlat::probe::Outcome;

use crate::packet::{checksum, l3, Tcp};

/// ICMP (IPv4) types.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    /// Destination unreachable, code 4: fragmentation needed (and DF set).
    pub const FRAG_NEEDED: u8 = 4;
}

/// ICMPv6 types.
pub mod v6 {
    pub const DEST_UNREACH: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// The names the contract gives ICMP destination unreachable's codes 0 to 15.
pub const V4_UNREACH_NAMES: [&str; 16] = [
    "net-unreachable",
    "host-unreachable",
    "protocol-unreachable",
    "port-unreachable",
    "frag-needed",
    "source-route-failed",
    "net-unknown",
    "host-unknown",
    "host-isolated",
    "net-prohibited",
    "host-prohibited",
    "net-tos-unreachable",
    "host-tos-unreachable",
    "admin-prohibited",
    "host-precedence-violation",
    "precedence-cutoff",
];

/// The names of time exceeded's codes 0 and 1 (ICMP type 11, ICMPv6 type 3).
pub const TIME_EXCEEDED_NAMES: [&str; 2] = ["ttl-exceeded", "reassembly-time-exceeded"];

/// The names of ICMPv6 destination unreachable's codes 0 to 7.
pub const V6_UNREACH_NAMES: [&str; 8] = [
    "no-route",
    "admin-prohibited",
    "beyond-scope",
    "address-unreachable",
    "port-unreachable",
    "source-policy",
    "reject-route",
    "source-route-error",
];

/// What an error of this family (4 or 6), type and code that quotes an
/// attempt's SYN makes of the attempt, by the contract: its result and its
/// reason's name. `None` for a message that answers no SYN (an echo, a
/// redirect, a packet too big, a code beyond the lists).
pub fn contract(family: u8, kind: u8, code: u8) -> Option<(Outcome, &'static str)> {
    let code = usize::from(code);
    let (name, refused) = match (family, kind) {
        (4, v4::DEST_UNREACH) => (*V4_UNREACH_NAMES.get(code)?, code == 2 || code == 3),
        (4, v4::TIME_EXCEEDED) => (*TIME_EXCEEDED_NAMES.get(code)?, false),
        (6, v6::DEST_UNREACH) => (*V6_UNREACH_NAMES.get(code)?, code == 4),
        (6, v6::TIME_EXCEEDED) => (*TIME_EXCEEDED_NAMES.get(code)?, false),
        _ => return None,
    };
    let result = if refused {
        Outcome::Refused
    } else {
        Outcome::Unreachable
    };
    Some((result, name))
}

/// Every type and code of `family` the contract names, with what it makes of
/// an attempt: the table the tests loop over.
pub fn errors(family: u8) -> Vec<(u8, u8, Outcome, &'static str)> {
    let types: &[u8] = if family == 4 {
        &[v4::DEST_UNREACH, v4::TIME_EXCEEDED]
    } else {
        &[v6::DEST_UNREACH, v6::TIME_EXCEEDED]
    };
    let mut out = Vec::new();
    for &kind in types {
        for code in 0..=255u8 {
            if let Some((result, name)) = contract(family, kind, code) {
                out.push((kind, code, result, name));
            }
        }
    }
    out
}

/// An ICMP or ICMPv6 message quoting a TCP segment. Built with
/// [`IcmpError::new`], which sends it back to the quoted segment's source; the
/// fields may be changed before [`IcmpError::frame`].
#[derive(Clone, Debug)]
pub struct IcmpError {
    /// The message's sender: a router on the way, or the quoted segment's
    /// destination (a host that rejects it).
    pub from: IpAddr,
    /// Its destination: the quoted segment's source, by default.
    pub to: IpAddr,
    /// ICMP or ICMPv6 type and code.
    pub kind: u8,
    pub code: u8,
    /// The header's second word: unused (0) for most errors, the next hop's
    /// MTU for frag-needed and packet too big, a pointer for a parameter
    /// problem.
    pub rest: u32,
    /// The quoted segment, as it was sent.
    pub quote: Tcp,
    /// How many bytes of the quoted segment's IP payload (the TCP header and
    /// on) the message carries: all of it by default, as Linux quotes (up to
    /// 576 bytes in all for IPv4, 1280 for IPv6); RFC 792 promises 8.
    pub quoted_tcp: usize,
    /// IPv4 options of the message's own IP header.
    pub ip_options: Vec<u8>,
    /// VLAN tags of the frame, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

impl IcmpError {
    /// An error of `kind` and `code` from `from` (the family of `quote`),
    /// quoting all of `quote`, to `quote`'s source.
    pub fn new(from: &str, kind: u8, code: u8, quote: &Tcp) -> IcmpError {
        let from: IpAddr = from.parse().expect("address");
        assert_eq!(
            from.is_ipv4(),
            quote.src.is_ipv4(),
            "an ICMP error comes in the family of what it quotes"
        );
        let is_v4 = from.is_ipv4();
        let rest = match (is_v4, kind, code) {
            (true, v4::DEST_UNREACH, v4::FRAG_NEEDED) => 1400,
            (false, v6::PACKET_TOO_BIG, _) => 1280,
            _ => 0,
        };
        IcmpError {
            from,
            to: quote.src,
            kind,
            code,
            rest,
            quote: quote.clone(),
            quoted_tcp: usize::MAX,
            ip_options: Vec::new(),
            vlans: Vec::new(),
            src_mac: [2, 0, 0, 0, 0, 9],
            dst_mac: [2, 0, 0, 0, 0, 1],
        }
    }

    /// The same, carrying only `n` bytes of the quoted TCP header (0: the
    /// quoted IP header alone).
    pub fn quoting(mut self, n: usize) -> IcmpError {
        self.quoted_tcp = n;
        self
    }

    /// The quoted packet, from its IP header on, cut as `quoted_tcp` says and
    /// to what fits the message's minimum MTU.
    fn quoted(&self) -> Vec<u8> {
        let mut plain = self.quote.clone();
        plain.vlans.clear();
        let mut q = plain.ip_packet();
        let ip_len = if self.quote.src.is_ipv4() {
            usize::from(q[0] & 0xf) * 4
        } else {
            40 + plain.ext.iter().map(ext_len).sum::<usize>()
        };
        let fits = if self.quote.src.is_ipv4() {
            576 - 20 - self.ip_options.len() - 8
        } else {
            1280 - 40 - 8
        };
        q.truncate(ip_len.saturating_add(self.quoted_tcp).min(fits));
        q
    }

    /// The whole Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut msg = vec![self.kind, self.code, 0, 0];
        msg.extend_from_slice(&self.rest.to_be_bytes());
        msg.extend(self.quoted());
        let mut f = if self.from.is_ipv4() {
            // ICMP's checksum covers the message alone.
            let c = checksum(&msg, 0);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            l3(
                self.from,
                self.to,
                1,
                &self.ip_options,
                msg,
                usize::MAX,
                self.src_mac,
                self.dst_mac,
            )
        } else {
            // ICMPv6's covers a pseudo-header too, as TCP's does.
            l3(
                self.from,
                self.to,
                58,
                &[],
                msg,
                2,
                self.src_mac,
                self.dst_mac,
            )
        };
        for &(tpid, tci) in self.vlans.iter().rev() {
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&tci.to_be_bytes());
            f.splice(12..12, tag);
        }
        f
    }
}

fn ext_len(e: &crate::packet::Ext) -> usize {
    use crate::packet::Ext;
    match e {
        Ext::Options(_, units) => usize::from(*units) * 8,
        Ext::Fragment(..) => 8,
        Ext::Auth(words) => usize::from(*words) * 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ACK, SYN};

    fn sum_ok(data: &[u8], acc: u32) -> bool {
        checksum(data, acc) == 0
    }

    #[test]
    fn icmp_checksums_and_quotes_are_right() {
        let syn = Tcp::new("10.0.0.5", 40000, "192.0.2.7", 443, SYN).seq(77);
        let e = IcmpError::new("10.0.0.1", v4::DEST_UNREACH, 13, &syn);
        let f = e.frame();
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14 + 9], 1, "ICMP");
        assert!(sum_ok(&f[14..34], 0), "IP header checksum");
        let icmp = &f[34..];
        assert!(sum_ok(icmp, 0), "ICMP checksum");
        assert_eq!((icmp[0], icmp[1]), (3, 13));
        assert_eq!(&icmp[8..], &syn.ip_packet()[..], "the whole SYN quoted");
        assert_eq!(&f[14 + 12..14 + 16], &[10, 0, 0, 1], "from the router");
        assert_eq!(&f[14 + 16..14 + 20], &[10, 0, 0, 5], "to the client");
        let short = e.clone().quoting(8).frame();
        assert_eq!(short.len(), 14 + 20 + 8 + 20 + 8);
        assert!(sum_ok(&short[34..], 0));
        assert_eq!(e.quoting(0).frame().len(), 14 + 20 + 8 + 20);

        let syn6 = Tcp::new("2001:db8::5", 40000, "2001:db8:9::1", 443, SYN | ACK).seq(1);
        let f = IcmpError::new("2001:db8::1", v6::DEST_UNREACH, 4, &syn6).frame();
        assert_eq!(f[14 + 6], 58, "ICMPv6");
        let icmp = &f[54..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        let acc: u32 = pseudo
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        assert!(sum_ok(icmp, acc), "ICMPv6 checksum with its pseudo-header");
        assert_eq!(&icmp[8..], &syn6.ip_packet()[..]);
    }

    #[test]
    fn the_contract_names_every_listed_code() {
        assert_eq!(errors(4).len(), 18);
        assert_eq!(errors(6).len(), 10);
        assert_eq!(
            contract(4, v4::DEST_UNREACH, 3),
            Some((Outcome::Refused, "port-unreachable"))
        );
        assert_eq!(
            contract(4, v4::DEST_UNREACH, v4::FRAG_NEEDED),
            Some((Outcome::Unreachable, "frag-needed"))
        );
        assert_eq!(contract(6, v6::PACKET_TOO_BIG, 0), None);
        assert_eq!(contract(4, v4::DEST_UNREACH, 16), None);
        assert_eq!(contract(4, v4::REDIRECT, 1), None);
        assert_eq!(
            contract(6, v6::DEST_UNREACH, 4),
            Some((Outcome::Refused, "port-unreachable"))
        );
    }
}
