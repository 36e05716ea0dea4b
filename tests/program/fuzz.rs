//! Differential fuzzing of the classifier: random and mutated packets, in every
//! shape flowlat parses, go through the real program with `BPF_PROG_TEST_RUN`
//! and through a model of the measurement contract written here from the
//! docs (`docs/measurement.md`): handshakes, resets of both ends, and ICMP and
//! ICMPv6 errors quoting their segments. Every packet must pass unchanged with
//! TC_ACT_UNSPEC, and the records (result, reason and its sender), the
//! pending table, the aggregates and the failures by reason must be exactly
//! what the model says.
//!
//! The seed is fixed for CI; set FLOWLAT_FUZZ_SEED (and FLOWLAT_FUZZ_PACKETS)
//! to explore others. A failure prints the seed and the packet.

use std::collections::{BTreeMap, HashMap};

use flowlat::bpf::perf::PerfBuffers;
use flowlat::probe::{
    AggKey, AggValue, Aggregation, Dir, Event, Filter, Hook, Outcome, Probe, ProbeConfig, Record,
    Table,
};
use kit::cgroup;
use kit::icmp::{self, IcmpError};
use kit::packet::{Ext, Tcp, ACK, FIN, PSH, RST, SYN};
use kit::probe::TC_ACT_UNSPEC;

/// xorshift64*: small, fast and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---- The model ----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn,
    SynAck,
    Rst,
    Ack,
    /// An ICMP or ICMPv6 error quoting a TCP segment: the fields of the
    /// segment are the quoted one's.
    Icmp,
}

/// What an ICMP error would make of the attempt whose SYN it quotes: the
/// result, the reason's name, the error's sender.
#[derive(Debug, Clone)]
struct IcmpSays {
    outcome: Outcome,
    reason: &'static str,
    from: [u8; 16],
}

/// What the contract needs of a packet.
#[derive(Debug, Clone)]
struct Seg {
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    kind: Kind,
    syn_len: u16,
    icmp: Option<IcmpSays>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MKey {
    dir: Dir,
    family: u8,
    client: [u8; 16],
    server: [u8; 16],
    cport: u16,
    sport: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Syn,
    SynAck,
    Reported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MEntry {
    isn: u32,
    server_isn: u32,
    syns: u16,
    synacks: u16,
    syn_len: u16,
    state: State,
    /// A tombstone whose client retried since it was reported.
    refreshed: bool,
    /// For a tombstone: the sweep (in seconds of fake time) that made it.
    reported_at: u64,
    /// The local socket's cgroup, once an egress packet showed it (0: none).
    cgroup: u64,
}

/// A record as far as the model can predict it (no timings).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MRec {
    dir: u8,
    outcome: u8,
    client: String,
    cport: u16,
    server: String,
    sport: u16,
    retrans: u32,
    synack_retrans: Option<u32>,
    cgroup_id: Option<u64>,
    reason: Option<String>,
    reason_from: Option<String>,
}

fn outcome_code(o: Outcome) -> u8 {
    match o {
        Outcome::Ok => 0,
        Outcome::Refused => 1,
        Outcome::Timeout => 2,
        Outcome::Abandoned => 3,
        Outcome::Unreachable => 4,
    }
}

fn ip_string(family: u8, a: &[u8; 16]) -> String {
    if family == 4 {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(*a).to_string()
    }
}

impl MRec {
    fn of(r: &Record) -> MRec {
        MRec {
            dir: (r.dir == Dir::In) as u8,
            outcome: outcome_code(r.outcome),
            client: r.client.to_string(),
            cport: r.client_port,
            server: r.server.to_string(),
            sport: r.server_port,
            retrans: r.retrans,
            synack_retrans: r.synack_retrans,
            cgroup_id: r.cgroup_id,
            reason: r.reason.map(|w| w.as_str().to_string()),
            reason_from: r.reason_from.map(|a| a.to_string()),
        }
    }
    /// The record of the attempt of `k` and `e` that ended with `outcome`,
    /// for `reason` ("" for none) named by its sender `from`.
    fn model(
        k: &MKey,
        e: &MEntry,
        outcome: Outcome,
        reason: &str,
        from: Option<&[u8; 16]>,
    ) -> MRec {
        MRec {
            dir: (k.dir == Dir::In) as u8,
            outcome: outcome_code(outcome),
            client: ip_string(k.family, &k.client),
            cport: k.cport,
            server: ip_string(k.family, &k.server),
            sport: k.sport,
            retrans: u32::from(e.syns.saturating_sub(1)),
            synack_retrans: (k.dir == Dir::In).then(|| u32::from(e.synacks.saturating_sub(1))),
            cgroup_id: (e.cgroup != 0).then_some(e.cgroup),
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            reason_from: from.map(|a| ip_string(k.family, a)),
        }
    }
}

const MAX_L4_OFF: usize = 1024;

/// The contract's parser, written from the README (not from probe.c).
fn parse(f: &[u8], ext_skipped: &mut u64) -> Option<Seg> {
    let has = |off: usize, len: usize| off <= MAX_L4_OFF && off + len <= f.len();
    let be16 = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    let be32 = |o: usize| u32::from_be_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
    if f.len() < 14 {
        return None;
    }
    let mut proto = be16(12);
    let mut off = 14;
    for _ in 0..2 {
        if proto != 0x8100 && proto != 0x88a8 {
            break;
        }
        if off + 4 > f.len() {
            return None;
        }
        proto = be16(off + 2);
        off += 4;
    }
    let (family, src, dst, l4, ip_payload) = match proto {
        0x0800 => {
            if !has(off, 20) || !matches!(f[off + 9], 1 | 6) {
                return None;
            }
            let ihl = usize::from(f[off] & 0xf) * 4;
            if f[off] >> 4 != 4 || ihl < 20 || be16(off + 6) & 0x1fff != 0 {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s[..4].copy_from_slice(&f[off + 12..off + 16]);
            d[..4].copy_from_slice(&f[off + 16..off + 20]);
            if f[off + 9] == 1 {
                return parse_icmp(f, 4, s, off + ihl);
            }
            let tot = usize::from(be16(off + 2));
            (4, s, d, off + ihl, tot.saturating_sub(ihl))
        }
        0x86dd => {
            if !has(off, 40) || f[off] >> 4 != 6 {
                return None;
            }
            let mut next = f[off + 6];
            let mut payload = usize::from(be16(off + 4));
            let s: [u8; 16] = f[off + 8..off + 24].try_into().ok()?;
            let d: [u8; 16] = f[off + 24..off + 40].try_into().ok()?;
            // ICMPv6 right after the fixed header, as errors are sent.
            if next == 58 {
                return parse_icmp(f, 6, s, off + 40);
            }
            let mut l4 = off + 40;
            for _ in 0..6 {
                if next == 6 {
                    break;
                }
                if !matches!(next, 0 | 43 | 60 | 44 | 51) || !has(l4, 8) {
                    return None;
                }
                let len = match next {
                    44 => {
                        if be16(l4 + 2) & 0xfff8 != 0 {
                            return None;
                        }
                        8
                    }
                    51 => (usize::from(f[l4 + 1]) + 2) * 4,
                    _ => (usize::from(f[l4 + 1]) + 1) * 8,
                };
                next = f[l4];
                l4 += len;
                payload = payload.saturating_sub(len);
            }
            if next != 6 {
                if matches!(next, 0 | 43 | 60 | 44 | 51) {
                    *ext_skipped += 1;
                }
                return None;
            }
            (6, s, d, l4, payload)
        }
        _ => return None,
    };
    if !has(l4, 16) {
        return None;
    }
    let flags = f[l4 + 13];
    let kind = if flags & RST != 0 {
        Kind::Rst
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            Kind::SynAck
        } else {
            Kind::Syn
        }
    } else if flags & ACK != 0 {
        Kind::Ack
    } else {
        return None;
    };
    let hlen = usize::from(f[l4 + 12] >> 4) * 4;
    if hlen < 20 || f.len() < l4 + hlen {
        return None;
    }
    Some(Seg {
        family,
        src,
        dst,
        sport: be16(l4),
        dport: be16(l4 + 2),
        seq: be32(l4 + 4),
        ack: be32(l4 + 8),
        flags,
        kind,
        syn_len: ip_payload.saturating_sub(hlen).min(0xffff) as u16,
        icmp: None,
    })
}

/// An ICMP (`family` 4) or ICMPv6 (6) message from `from` whose header starts
/// at `l4`: an error of the contract's list that quotes the IP header and
/// the first 8 bytes of a TCP segment (addresses, ports, sequence number).
fn parse_icmp(f: &[u8], family: u8, from: [u8; 16], l4: usize) -> Option<Seg> {
    let has = |off: usize, len: usize| off <= MAX_L4_OFF && off + len <= f.len();
    let be16 = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    if !has(l4, 8) {
        return None;
    }
    let (outcome, reason) = icmp::contract(family, f[l4], f[l4 + 1])?;
    let q = l4 + 8;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let tcp = if family == 4 {
        let ihl = usize::from(f.get(q)? & 0xf) * 4;
        if !has(q, 20) || f[q] >> 4 != 4 || ihl < 20 || f[q + 9] != 6 {
            return None;
        }
        src[..4].copy_from_slice(&f[q + 12..q + 16]);
        dst[..4].copy_from_slice(&f[q + 16..q + 20]);
        q + ihl
    } else {
        // A SYN behind extension headers is not looked for in a quote.
        if !has(q, 40) || f[q] >> 4 != 6 || f[q + 6] != 6 {
            return None;
        }
        src.copy_from_slice(&f[q + 8..q + 24]);
        dst.copy_from_slice(&f[q + 24..q + 40]);
        q + 40
    };
    if !has(tcp, 8) {
        return None;
    }
    Some(Seg {
        family,
        src,
        dst,
        sport: be16(tcp),
        dport: be16(tcp + 2),
        seq: u32::from_be_bytes(f[tcp + 4..tcp + 8].try_into().ok()?),
        ack: 0,
        flags: 0,
        kind: Kind::Icmp,
        syn_len: 0,
        icmp: Some(IcmpSays {
            outcome,
            reason,
            from,
        }),
    })
}

#[derive(Default)]
struct Model {
    table: HashMap<MKey, MEntry>,
    ext_skipped: u64,
    /// The cgroup test-run's dummy socket is charged to: this process's.
    own_cgroup: u64,
    filter: MFilter,
}

/// The filter as the README states it: kinds AND, values OR.
#[derive(Default)]
struct MFilter {
    ports: Vec<u16>,
    /// Family, network address bytes, prefix length.
    nets: Vec<(u8, [u8; 16], u8)>,
    dir: Option<Dir>,
    /// A cgroup filter is set, and whether this process's cgroup is under it.
    cgroup: Option<bool>,
}

impl MFilter {
    fn in_net(&self, family: u8, a: &[u8; 16]) -> bool {
        self.nets.iter().any(|(f, n, p)| {
            let p = usize::from(*p);
            *f == family && (0..p).all(|bit| (a[bit / 8] ^ n[bit / 8]) & (0x80 >> (bit % 8)) == 0)
        })
    }

    /// What the SYN alone decides: an arriving SYN has no socket of ours, so
    /// the cgroup of an `in` attempt is not known yet.
    fn keeps_syn(&self, k: &MKey) -> bool {
        (self.ports.is_empty() || self.ports.contains(&k.cport) || self.ports.contains(&k.sport))
            && (self.nets.is_empty()
                || self.in_net(k.family, &k.client)
                || self.in_net(k.family, &k.server))
            && self.dir.is_none_or(|d| d == k.dir)
            && (k.dir == Dir::In || self.cgroup != Some(false))
    }

    /// Whether an `in` attempt with no SYN-ACK of ours seen must be dropped
    /// rather than reported: the cgroup filter wants a listener.
    fn wants_listener(&self) -> bool {
        self.cgroup.is_some()
    }
}

impl Model {
    fn key(s: &Seg, dir: Dir, client_is_src: bool) -> MKey {
        let (client, server, cport, sport) = if client_is_src {
            (s.src, s.dst, s.sport, s.dport)
        } else {
            (s.dst, s.src, s.dport, s.sport)
        };
        MKey {
            dir,
            family: s.family,
            client,
            server,
            cport,
            sport,
        }
    }

    fn acks_syn(e: &MEntry, ack: u32) -> bool {
        ack.wrapping_sub(e.isn.wrapping_add(1)) <= u32::from(e.syn_len)
    }

    /// Applies one packet; returns the records it ends.
    fn step(&mut self, egress: bool, f: &[u8]) -> Vec<MRec> {
        let Some(s) = parse(f, &mut self.ext_skipped) else {
            return vec![];
        };
        let mut out = vec![];
        match (egress, s.kind) {
            (true, Kind::Ack) => {}
            (_, Kind::Syn) => {
                let k = Model::key(&s, if egress { Dir::Out } else { Dir::In }, true);
                if !self.filter.keeps_syn(&k) {
                    return out;
                }
                if let Some(e) = self.table.get_mut(&k) {
                    if e.isn == s.seq {
                        e.syns += 1;
                        e.syn_len = e.syn_len.max(s.syn_len);
                        e.refreshed |= e.state == State::Reported;
                        return out;
                    }
                    let old = self.table.remove(&k).expect("present");
                    let unattributed =
                        k.dir == Dir::In && old.state == State::Syn && self.filter.wants_listener();
                    if old.state != State::Reported && !unattributed {
                        let r =
                            MRec::model(&k, &old, Outcome::Abandoned, "new-isn", Some(&k.client));
                        out.push(r);
                    }
                }
                let e = MEntry {
                    isn: s.seq,
                    server_isn: 0,
                    syns: 1,
                    synacks: 0,
                    syn_len: s.syn_len,
                    state: State::Syn,
                    refreshed: false,
                    reported_at: 0,
                    // out: the SYN leaves from the connecting socket; in: the
                    // listener is known at our SYN-ACK.
                    cgroup: if egress { self.own_cgroup } else { 0 },
                };
                self.table.insert(k, e);
            }
            (true, Kind::SynAck) => {
                let k = Model::key(&s, Dir::In, false);
                if let Some(e) = self.table.get_mut(&k) {
                    if e.state != State::Reported && Model::acks_syn(e, s.ack) {
                        if e.synacks == 0 && self.filter.cgroup == Some(false) {
                            self.table.remove(&k);
                            return out;
                        }
                        if e.synacks == 0 {
                            e.server_isn = s.seq;
                            e.state = State::SynAck;
                            e.cgroup = self.own_cgroup;
                        }
                        e.synacks += 1;
                    }
                }
            }
            // Only a reset with sequence number 0 answers a SYN; any reset
            // arriving may be the client's of our SYN-ACK.
            (true, Kind::Rst) if s.seq != 0 => {}
            (true, Kind::Rst) => {
                let k = Model::key(&s, Dir::In, false);
                if let Some(e) = self.table.get(&k).copied() {
                    if s.flags & ACK != 0 && e.state == State::Syn && Model::acks_syn(&e, s.ack) {
                        self.table.remove(&k);
                        if !self.filter.wants_listener() {
                            let r = MRec::model(&k, &e, Outcome::Refused, "rst", Some(&k.server));
                            out.push(r);
                        }
                    }
                }
            }
            (false, Kind::SynAck | Kind::Rst) => {
                let k = Model::key(&s, Dir::Out, false);
                let answers = s.kind == Kind::SynAck || (s.seq == 0 && s.flags & ACK != 0);
                if let Some(e) = self.table.get(&k).copied().filter(|_| answers) {
                    if e.state == State::Syn && Model::acks_syn(&e, s.ack) {
                        self.table.remove(&k);
                        let done = MEntry { synacks: 1, ..e };
                        let r = if s.kind == Kind::Rst {
                            MRec::model(&k, &done, Outcome::Refused, "rst", Some(&k.server))
                        } else {
                            MRec::model(&k, &done, Outcome::Ok, "", None)
                        };
                        out.push(r);
                        return out;
                    }
                }
                if s.kind == Kind::Rst {
                    out.extend(self.client_reset(&s));
                }
            }
            (_, Kind::Icmp) => {
                // Arriving, it answers our SYN; leaving, this host rejects
                // the client's.
                let k = Model::key(&s, if egress { Dir::In } else { Dir::Out }, true);
                let says = s.icmp.as_ref().expect("an ICMP error says what it ends");
                if let Some(e) = self.table.get(&k).copied() {
                    if e.state == State::Syn && e.isn == s.seq {
                        if k.dir == Dir::In && self.filter.wants_listener() {
                            self.table.remove(&k);
                        } else {
                            let r =
                                MRec::model(&k, &e, says.outcome, says.reason, Some(&says.from));
                            out.push(r);
                            // Its tombstone, for the client's copies of the
                            // SYN after a soft error; its hold runs from now,
                            // in real time, long past at the next sweep's
                            // fake time (as for a retried tombstone).
                            let tomb = MEntry {
                                state: State::Reported,
                                refreshed: true,
                                ..e
                            };
                            self.table.insert(k, tomb);
                        }
                    }
                }
            }
            (false, Kind::Ack) => {
                let k = Model::key(&s, Dir::In, true);
                if let Some(e) = self.table.get(&k).copied() {
                    if e.state == State::SynAck && s.ack == e.server_isn.wrapping_add(1) {
                        self.table.remove(&k);
                        out.push(MRec::model(&k, &e, Outcome::Ok, "", None));
                    }
                }
            }
        }
        out
    }

    /// An arriving RST from an `in` attempt's client after our SYN-ACK: its
    /// plain, its sequence number is what our SYN-ACK acknowledged (the
    /// client's ISN+1, RFC 9293 3.10.7.1: a reset takes its number from the
    /// segment's ACK); with an ACK, it acknowledges our SYN-ACK.
    fn client_reset(&mut self, s: &Seg) -> Option<MRec> {
        let k = Model::key(s, Dir::In, true);
        let e = self.table.get(&k).copied()?;
        let next = e.server_isn.wrapping_add(1);
        let fits = if s.flags & ACK != 0 {
            s.ack == next
        } else {
            Model::acks_syn(&e, s.seq)
        };
        if e.state != State::SynAck || !fits {
            return None;
        }
        self.table.remove(&k);
        Some(MRec::model(
            &k,
            &e,
            Outcome::Abandoned,
            "client-reset",
            Some(&k.client),
        ))
    }

    /// A sweep at `now_s` (seconds of fake time, an hour ahead of the real
    /// clock): every attempt times out and leaves a tombstone; tombstones go
    /// when their client's last SYN is REPORTED_HOLD old: those whose client
    /// retried (in real time, an hour before) and those made by a sweep that
    /// long ago.
    fn sweep_all(&mut self, now_s: u64) -> Vec<MRec> {
        let hold = flowlat::probe::REPORTED_HOLD.as_secs();
        let mut out = vec![];
        self.table.retain(|_, e| {
            !(e.state == State::Reported && (e.refreshed || now_s - e.reported_at >= hold))
        });
        let wants_listener = self.filter.wants_listener();
        for (k, e) in self.table.iter_mut() {
            if e.state != State::Reported {
                if !(k.dir == Dir::In && e.synacks == 0 && wants_listener) {
                    // Which half never came: our SYN-ACK's ACK, or any answer.
                    let why = if k.dir == Dir::In && e.synacks > 0 {
                        "no-ack"
                    } else {
                        "no-answer"
                    };
                    out.push(MRec::model(k, e, Outcome::Timeout, why, None));
                }
                e.state = State::Reported;
                e.reported_at = now_s;
            }
        }
        out
    }
}

// ---- The generator ------------------------------------------------------

const CLIENTS4: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const SERVERS4: [&str; 2] = ["10.9.0.1", "10.9.0.2"];
const CLIENTS6: [&str; 2] = ["2001:db8::1", "2001:db8::2"];
const SERVERS6: [&str; 2] = ["2001:db8:9::1", "2001:db8:9::2"];
const ROUTERS4: [&str; 2] = ["10.0.0.254", "10.9.0.254"];
const ROUTERS6: [&str; 2] = ["2001:db8::fe", "2001:db8:9::fe"];
const ISNS: [u32; 3] = [1000, 2000, u32::MAX];
const SERVER_ISNS: [u32; 2] = [5000, 6000];

/// The ends of some handshake between a few endpoints, and its ISNs.
struct Ends {
    v6: bool,
    c: &'static str,
    s: &'static str,
    cport: u16,
    sport: u16,
    isn: u32,
    sisn: u32,
}

fn ends(rng: &mut Rng) -> Ends {
    let v6 = rng.chance(40);
    let (c, s) = if v6 {
        (*rng.pick(&CLIENTS6), *rng.pick(&SERVERS6))
    } else {
        (*rng.pick(&CLIENTS4), *rng.pick(&SERVERS4))
    };
    Ends {
        v6,
        c,
        s,
        cport: *rng.pick(&[40000u16, 40001]),
        sport: *rng.pick(&[80u16, 443]),
        isn: *rng.pick(&ISNS),
        sisn: *rng.pick(&SERVER_ISNS),
    }
}

/// One to three VLAN tags, the outermost sometimes 802.1ad.
fn vlans(rng: &mut Rng) -> Vec<(u16, u16)> {
    let n = 1 + rng.below(3) as usize;
    (0..n)
        .map(|i| {
            (
                if i == 0 && rng.chance(50) {
                    0x88a8
                } else {
                    0x8100
                },
                i as u16,
            )
        })
        .collect()
}

/// A packet of some real handshake between a few endpoints, in a random shape.
fn handshake_packet(rng: &mut Rng) -> Tcp {
    let Ends {
        v6,
        c,
        s,
        cport,
        sport,
        isn,
        sisn,
    } = ends(rng);
    let data = rng.chance(15);
    let mut t = match rng.below(9) {
        0 | 1 => Tcp::new(c, cport, s, sport, SYN).seq(isn),
        2 | 3 => {
            let ack = if rng.chance(85) {
                isn.wrapping_add(1)
            } else {
                isn.wrapping_add(rng.below(12) as u32)
            };
            Tcp::new(s, sport, c, cport, SYN | ACK).seq(sisn).ack(ack)
        }
        4 | 5 => {
            let ack = if rng.chance(85) {
                sisn.wrapping_add(1)
            } else {
                rng.next() as u32
            };
            Tcp::new(c, cport, s, sport, ACK | if data { PSH } else { 0 })
                .seq(isn.wrapping_add(1))
                .ack(ack)
        }
        6 => {
            let flags = if rng.chance(80) { RST | ACK } else { RST };
            // Mostly the reset a stack sends for a SYN (sequence number 0),
            // sometimes one of a connection.
            let seq = if rng.chance(80) {
                0
            } else {
                rng.next() as u32 | 1
            };
            Tcp::new(s, sport, c, cport, flags)
                .seq(seq)
                .ack(isn.wrapping_add(1))
        }
        7 => {
            // The client's reset of our SYN-ACK: its sequence number our
            // ISN+1, or acknowledging that; sometimes numbers that fit nothing.
            let (flags, seq, ack) = match rng.below(4) {
                0 | 1 => (RST, sisn.wrapping_add(1), 0),
                2 => (RST | ACK, isn.wrapping_add(1), sisn.wrapping_add(1)),
                _ => (
                    *rng.pick(&[RST, RST | ACK]),
                    sisn.wrapping_add(rng.below(3) as u32),
                    rng.next() as u32,
                ),
            };
            Tcp::new(c, cport, s, sport, flags).seq(seq).ack(ack)
        }
        _ => Tcp::new(
            c,
            cport,
            s,
            sport,
            *rng.pick(&[FIN | ACK, FIN, 0, SYN | FIN, SYN | RST]),
        )
        .seq(isn),
    };
    if data || rng.chance(10) {
        t.payload = vec![0x5a; rng.below(40) as usize];
    }
    if rng.chance(20) {
        t.tcp_options = vec![1; 4 * rng.below(11) as usize];
    }
    if !v6 && rng.chance(20) {
        t.ip_options = vec![1; 4 * rng.below(11) as usize];
    }
    if rng.chance(20) {
        t.vlans = vlans(rng);
    }
    if v6 && rng.chance(30) {
        let n = 1 + rng.below(8) as usize;
        t.ext = (0..n)
            .map(|_| match rng.below(5) {
                0 => Ext::Options(0, 1 + rng.below(3) as u8),
                1 => Ext::Options(43, 1 + rng.below(3) as u8),
                2 => Ext::Options(60, 1 + rng.below(3) as u8),
                3 => Ext::Fragment(
                    if rng.chance(70) {
                        0
                    } else {
                        1 + rng.below(100) as u16
                    },
                    rng.chance(50),
                ),
                _ => Ext::Auth(3 + rng.below(3) as u8),
            })
            .collect();
    }
    t
}

/// An ICMP or ICMPv6 message quoting a segment of some handshake between
/// the same endpoints: mostly an error of the contract's list quoting a
/// client's SYN (whose ISN may or may not be its attempt's), sometimes
/// another segment, a message that is no such error, a quote cut short.
fn icmp_packet(rng: &mut Rng) -> IcmpError {
    let e = ends(rng);
    let mut quote = match rng.below(10) {
        0..=6 => Tcp::new(e.c, e.cport, e.s, e.sport, SYN).seq(e.isn),
        7 => {
            let seq = if rng.chance(50) {
                e.isn.wrapping_add(1)
            } else {
                rng.next() as u32
            };
            Tcp::new(e.c, e.cport, e.s, e.sport, SYN).seq(seq)
        }
        8 => Tcp::new(e.c, e.cport, e.s, e.sport, ACK | PSH)
            .seq(e.isn.wrapping_add(1))
            .ack(e.sisn.wrapping_add(1)),
        _ => Tcp::new(e.s, e.sport, e.c, e.cport, SYN | ACK)
            .seq(e.sisn)
            .ack(e.isn.wrapping_add(1)),
    };
    if rng.chance(10) {
        quote.payload = vec![0x5a; rng.below(40) as usize];
    }
    if rng.chance(20) {
        quote.tcp_options = vec![1; 4 * rng.below(11) as usize];
    }
    if !e.v6 && rng.chance(20) {
        quote.ip_options = vec![1; 4 * rng.below(11) as usize];
    }
    let family = if e.v6 { 6 } else { 4 };
    let (kind, code) = if rng.chance(85) {
        let (kind, code, ..) = *rng.pick(&icmp::errors(family));
        (kind, code)
    } else if rng.chance(50) {
        // Echoes, a source quench, a redirect, a parameter problem, a packet
        // too big, codes beyond the lists, the other family's numbers.
        let other: &[(u8, u8)] = if e.v6 {
            &[(2, 0), (4, 1), (128, 0), (129, 0), (1, 8), (3, 2), (11, 0)]
        } else {
            &[
                (0, 0),
                (8, 0),
                (4, 0),
                (5, 1),
                (12, 0),
                (3, 16),
                (11, 2),
                (1, 0),
            ]
        };
        *rng.pick(other)
    } else {
        (rng.next() as u8, rng.next() as u8)
    };
    let routers = if e.v6 { ROUTERS6 } else { ROUTERS4 };
    let from = *rng.pick(&[routers[0], routers[1], e.s, e.c]);
    let mut m = IcmpError::new(from, kind, code, &quote);
    m.quoted_tcp = match rng.below(10) {
        0 => rng.below(8) as usize,
        1 => 8,
        _ => usize::MAX,
    };
    if !e.v6 && rng.chance(10) {
        m.ip_options = vec![1; 4 * rng.below(11) as usize];
    }
    if rng.chance(20) {
        m.vlans = vlans(rng);
    }
    m
}

fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(f.len() as u64) as usize;
                f[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(f.len() as u64) as usize;
            f[i] = rng.next() as u8;
        }
        2 => {
            let keep = 15 + rng.below(f.len().saturating_sub(15).max(1) as u64) as usize;
            f.truncate(keep.min(f.len()));
        }
        3 => {
            // A header field at a typical offset: lengths, IHL, data offset.
            let i = *rng.pick(&[14usize, 16, 17, 18, 19, 20, 23, 46, 58, 66, 78]);
            if i < f.len() {
                f[i] = rng.next() as u8;
            }
        }
        _ => {
            let extra = rng.below(64) as usize;
            f.extend((0..extra).map(|_| rng.next() as u8));
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn classifier_matches_the_contract_on_random_and_mutated_packets() {
    let n = env_u64("FLOWLAT_FUZZ_PACKETS", 100_000);
    let ended = fuzz(n, &Filter::default(), MFilter::default());
    // The generator must have made every way an attempt ends, the failure
    // causes too.
    if n >= 10_000 {
        for why in [
            "new-isn",
            "rst",
            "client-reset",
            "port-unreachable",
            "protocol-unreachable",
            "admin-prohibited",
            "ttl-exceeded",
            "no-route",
        ] {
            assert!(
                ended.get(why).is_some_and(|&k| k > 0),
                "no {why} in {ended:?}"
            );
        }
    }
}

/// The same with the LRU table, which kernels without compare-and-exchange
/// in BPF run (this one runs the slot table by default).
#[test]
fn the_lru_table_matches_the_contract_too() {
    let n = env_u64("FLOWLAT_FUZZ_PACKETS", 100_000) / 2;
    fuzz_table(n, &Filter::default(), MFilter::default(), Some(Table::Lru));
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("literal").octets()
}

/// The same under filters of every kind, each with values the generator's
/// endpoints do and do not match; the cgroup filter once with a cgroup this
/// process is under (the root) and once with one it is not.
#[test]
fn filtered_classifier_matches_the_contract() {
    let n = env_u64("FLOWLAT_FUZZ_PACKETS", 100_000) / 4;
    let root = cgroup::id_of(&cgroup::mount());
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("literal");
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&[10, 9, 0, 0]);
    fuzz(
        n,
        &Filter {
            ports: vec![80, 40001],
            nets: vec![(ip("10.9.0.0"), 31), (ip("2001:db8::2"), 128)],
            ..Filter::default()
        },
        MFilter {
            ports: vec![80, 40001],
            nets: vec![(4, v4, 31), (6, v6("2001:db8::2"), 128)],
            ..MFilter::default()
        },
    );
    fuzz(
        n,
        &Filter {
            dir: Some(Dir::In),
            cgroups: vec![(0xdead_beef, 1)],
            ..Filter::default()
        },
        MFilter {
            dir: Some(Dir::In),
            cgroup: Some(false),
            ..MFilter::default()
        },
    );
    fuzz(
        n,
        &Filter {
            cgroups: vec![(0xdead_beef, 1), (root, 0)],
            nets: vec![(ip("2001:db8:9::"), 48)],
            ..Filter::default()
        },
        MFilter {
            cgroup: Some(true),
            nets: vec![(6, v6("2001:db8:9::"), 48)],
            ..MFilter::default()
        },
    );
}

/// `n` packets through the classifier with `filter` set and through the
/// model with the same filter, `mfilter`.
fn fuzz(n: u64, filter: &Filter, mfilter: MFilter) -> BTreeMap<&'static str, u64> {
    fuzz_table(n, filter, mfilter, None)
}

/// The same with the given table; returns how many records the classifier
/// sent for each reason.
fn fuzz_table(
    n: u64,
    filter: &Filter,
    mfilter: MFilter,
    table: Option<Table>,
) -> BTreeMap<&'static str, u64> {
    kit::require_root();
    // The model expects the cgroup this process is in on every record.
    let _stay = cgroup::stay();
    let seed = env_u64("FLOWLAT_FUZZ_SEED", 0x00f1_0a7c_0ffe_e001);
    // Large enough that nothing is evicted: eviction is tested elsewhere.
    let mut probe = Probe::load(&ProbeConfig {
        table,
        ..ProbeConfig::new(1 << 18)
    })
    .expect("load");
    // The model cannot see the kernel's clock, which decides whether an
    // answer is late (a program test covers late answers).
    probe.set_late_answer(None);
    probe.set_filter(filter).expect("set the filter");
    // The classifier aggregates too, which must come to what the records say.
    probe.set_aggregation(&Aggregation {
        enabled: true,
        no_records: false,
        by_server_port: true,
        by_cgroup: true,
    });
    let mut from_records: HashMap<AggKey, AggValue> = HashMap::new();
    // The failures the records say, as the classifier counts them.
    let mut failures: HashMap<(u32, Dir, u8), u64> = HashMap::new();
    let mut ended: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut perf: PerfBuffers = probe.open_perf(16).expect("perf rings");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let fake_start = flowlat::sinks::clock::monotonic_ns() + 3_600_000_000_000;
    let mut sweeps = 0u64;
    let mut model = Model {
        own_cgroup: cgroup::id_of(&cgroup::own()),
        filter: mfilter,
        ..Model::default()
    };
    let (mut ran, mut refused, mut records) = (0u64, 0u64, 0u64);
    for i in 0..n {
        let egress = rng.chance(50);
        let hook = if egress { Hook::Egress } else { Hook::Ingress };
        let mut frame = if rng.chance(3) {
            let len = 15 + rng.below(150) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else if rng.chance(12) {
            icmp_packet(&mut rng).frame()
        } else {
            handshake_packet(&mut rng).frame()
        };
        if rng.chance(30) {
            mutate(&mut rng, &mut frame);
        }
        let what = || format!("seed {seed:#x}, packet {i}, {hook:?}: {frame:02x?}");
        let result = match probe.test_run(hook, &frame, 1) {
            Ok(r) => r,
            Err(_) => {
                // The kernel refuses some frames outright (e.g. an IP header cut
                // short): the program never ran, so nothing may change.
                refused += 1;
                continue;
            }
        };
        ran += 1;
        assert_eq!(result.retval, TC_ACT_UNSPEC, "{}", what());
        assert_eq!(result.data_out, frame, "packet changed: {}", what());
        let mut want = model.step(egress, &frame);
        let mut got = Vec::new();
        probe.drain(&mut perf, |ev| {
            let r = Record::from_event(ev).expect("well-formed record");
            let key = AggKey {
                ifindex: r.ifindex,
                dir: r.dir,
                server_port: Some(r.server_port).filter(|&p| p != 0),
                cgroup_id: r.cgroup_id,
                other: false,
            };
            from_records.entry(key).or_default().add_record(&r);
            if let Some(why) = r.reason {
                *failures.entry((r.ifindex, r.dir, why.code())).or_default() += 1;
                *ended.entry(why.as_str()).or_default() += 1;
            }
            got.push(MRec::of(&r));
        });
        want.sort();
        got.sort();
        records += got.len() as u64;
        assert_eq!(got, want, "records differ from the contract: {}", what());
        if rng.chance(1) && rng.chance(20) {
            // Every attempt times out, once.
            // Sweeps are 7 s of fake time apart, so tombstones age out too.
            sweeps += 1;
            let fake_now = fake_start + sweeps * 7_000_000_000;
            let sw = probe
                .sweep(fake_now, std::time::Duration::from_millis(1))
                .expect("sweep");
            let mut got: Vec<MRec> = sw.expired.iter().map(MRec::of).collect();
            let mut want = model.sweep_all(sweeps * 7);
            got.sort();
            want.sort();
            assert_eq!(
                got, want,
                "timeouts differ from the contract: seed {seed:#x}, sweep after packet {i}"
            );
        }
        if i % 997 == 0 || i + 1 == n {
            let mut kernel: Vec<String> = probe
                .pending_entries()
                .expect("walk")
                .iter()
                .map(|(k, p)| {
                    let (c, s) = (k.client, k.server);
                    let ports = (u16::from_be(k.client_port), u16::from_be(k.server_port));
                    format!(
                        "{} {c:?} {s:?} {ports:?} {} {} {} {}",
                        k.dir, p.client_isn, p.syns, p.synacks, p.state
                    )
                })
                .collect();
            let mut modeled: Vec<String> = model
                .table
                .iter()
                .map(|(k, e)| {
                    let state = match e.state {
                        State::Syn => 0,
                        State::SynAck => 1,
                        State::Reported => 2,
                    };
                    let (c, s) = (k.client, k.server);
                    let ports = (k.cport, k.sport);
                    format!(
                        "{} {c:?} {s:?} {ports:?} {} {} {} {}",
                        (k.dir == Dir::In) as u8,
                        e.isn,
                        e.syns,
                        e.synacks,
                        state
                    )
                })
                .collect();
            kernel.sort();
            modeled.sort();
            let only_kernel: Vec<&String> = kernel
                .iter()
                .filter(|k| modeled.binary_search(k).is_err())
                .collect();
            let only_model: Vec<&String> = modeled
                .iter()
                .filter(|k| kernel.binary_search(k).is_err())
                .collect();
            assert!(
                only_kernel.is_empty() && only_model.is_empty(),
                "pending table differs after {}:\nonly in the kernel: {only_kernel:?}\nonly in the model: {only_model:?}",
                what()
            );
        }
    }
    let ks = probe.kernel_stats().expect("stats");
    assert_eq!(
        ks.ext_skipped, model.ext_skipped,
        "long IPv6 chains counted"
    );
    let kernel: HashMap<AggKey, AggValue> = probe
        .aggregates()
        .expect("aggregates")
        .into_iter()
        .collect();
    assert_eq!(
        kernel, from_records,
        "the kernel's aggregates differ from the records': seed {seed:#x}"
    );
    let kernel: HashMap<(u32, Dir, u8), u64> = probe
        .failures()
        .expect("failures")
        .into_iter()
        .map(|((ifindex, dir, why), k)| ((ifindex, dir, why.code()), k))
        .collect();
    assert_eq!(
        kernel, failures,
        "the kernel's failures by reason differ from the records': seed {seed:#x}"
    );
    assert_eq!(ks.send_failed, 0);
    // The run must have exercised the contract, not just the parser's exits.
    assert!(
        ran > n * 9 / 10,
        "only {ran} of {n} packets ran ({refused} refused)"
    );
    // Under a filter that keeps nothing, the drops are what is exercised.
    assert!(
        records + ks.filtered > n / 50,
        "only {records} records and {} filtered in {n} packets: the generator is too weak",
        ks.filtered
    );
    assert!(sweeps > 0 || n < 10_000, "no timeout sweep was exercised");
    eprintln!(
        "fuzz: seed {seed:#x}: {ran} packets ran, {refused} refused by test-run, {records} records, \
         {} filtered, {sweeps} sweeps, {} long IPv6 chains; failures by reason: {ended:?}",
        ks.filtered, model.ext_skipped
    );
    ended
}

/// User space's side: whatever bytes arrive as a record (a corrupt ring, a
/// probe of another version), decoding and both output formats never panic,
/// JSON lines stay valid, and malformed records are rejected, not printed.
#[test]
fn record_decoding_and_formatting_never_fail_on_random_bytes() {
    use flowlat::sinks::{clock::WallClock, lines::Formatter};
    let seed = env_u64("FLOWLAT_FUZZ_SEED", 0x00f1_0a7c_0ffe_e001);
    let n = env_u64("FLOWLAT_FUZZ_RECORDS", 200_000);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let size = std::mem::size_of::<Event>();
    let names = flowlat::sinks::labels::FixedNames {
        ifaces: [(1, "eth0".to_string()), (2, "we\"ird\\name".to_string())].into(),
        ..Default::default()
    };
    // Cgroup paths are whatever directory names someone made.
    let cgroups = [
        None,
        Some("/system.slice/a.service"),
        Some("/we\"ird\\\n\t/x"),
        Some(""),
    ];
    let mut text = Formatter::new(false, WallClock::now(), 12).with_utc_offset(3600);
    let mut json = Formatter::new(true, WallClock::with_offset(i128::from(i64::MAX)), 12);
    let (mut valid, mut rejected) = (0u64, 0u64);
    let start = std::time::Instant::now();
    for _ in 0..n {
        // Mostly the right size (what the perf reader hands over), with fields
        // steered towards valid values so that formatting is exercised too.
        let len = if rng.chance(95) {
            size
        } else {
            rng.below(2 * size as u64) as usize
        };
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len == size && rng.chance(70) {
            b[40] = *rng.pick(&[4u8, 6]); // family
            b[41] = rng.below(3) as u8; // dir
            b[size - 8] = rng.below(5) as u8; // result
        }
        let Some(ev) = Event::decode(&b) else {
            assert_ne!(len, size, "a record of the right size always decodes");
            continue;
        };
        match Record::from_event(&ev) {
            Some(r) => {
                valid += 1;
                let cg = *rng.pick(&cgroups);
                // A workload's name is read from the host (a container's
                // name from its config): anything at all.
                let local = flowlat::sinks::lines::Local {
                    cgroup: cg,
                    workload: *rng.pick(&cgroups),
                };
                let line = text.format(&r, &names, local);
                assert!(!line.contains('\n'), "{line}");
                let j = json.format(&r, &names, local);
                kit::json::record(&j).unwrap_or_else(|e| panic!("invalid JSON line: {e}"));
            }
            None => rejected += 1,
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "record fuzzing took over a minute"
        );
    }
    assert!(
        valid > n / 4 && rejected > n / 10,
        "{valid} valid, {rejected} rejected"
    );
}
