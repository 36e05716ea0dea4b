//! The kernel's filters: which attempts the classifier measures, written to
//! its globals and its `nets` trie before the programs are attached.

use std::mem::offset_of;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::abi::{
    as_bytes, ConfigGlobal, FilterGlobal, NetKey, CFG_MIN_RTT, DIR_IN, DIR_OUT, FILTER_CGROUP,
    FILTER_DIR, FILTER_NET, FILTER_PORT, FILTER_PROC, MAX_FILTER_CGROUPS, MAX_FILTER_NETS,
    MAX_FILTER_PROCS,
};
use super::record::{Comm, Dir, Process};
use super::state::Probe;
use crate::bpf::map::Update;
use crate::bpf::BpfError;

/// The `nets` trie's key of a network: the family byte, then the address
/// with its host bits cleared, and the prefix counted from the family byte.
pub(crate) fn net_key(addr: IpAddr, prefix: u8) -> Result<NetKey, BpfError> {
    let (family, octets, bits): (u8, Vec<u8>, u8) = match addr {
        IpAddr::V4(a) => (4, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (6, a.octets().to_vec(), 128),
    };
    if prefix > bits {
        return Err(BpfError::Invalid(format!(
            "network {addr}/{prefix}: an IPv{family} prefix is at most {bits} bits"
        )));
    }
    let mut k = NetKey {
        prefixlen: 8 + u32::from(prefix),
        family,
        ..NetKey::default()
    };
    for (i, (dst, src)) in k.addr.iter_mut().zip(&octets).enumerate() {
        let keep = (usize::from(prefix)).saturating_sub(8 * i).min(8);
        *dst = src & !(0xffu16 >> keep) as u8;
    }
    Ok(k)
}
/// Which attempts the classifier measures. An empty list (or `None`) does not
/// filter; several kinds must all match (AND), several values of one kind are
/// alternatives (OR). An attempt filtered out sends no record and, except
/// for the cgroup of an `in` attempt, takes no table entry: it is decided at
/// the client's SYN. The listener of an `in` attempt is known only at our
/// first SYN-ACK, so with `cgroups` set an `in` attempt is dropped there,
/// and one that is refused by this side or times out before any SYN-ACK of
/// ours (no listener to attribute it to) is dropped too. Dropped attempts are
/// counted in [`KernelStats::filtered`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The client's or the server's port is one of these.
    pub ports: Vec<u16>,
    /// The client's or the server's address is in one of these networks
    /// (address, prefix length); at most [`MAX_FILTER_NETS`].
    pub nets: Vec<(IpAddr, u8)>,
    /// Only this direction.
    pub dir: Option<Dir>,
    /// The local socket's cgroup is one of these (cgroup v2 id, level below
    /// the root: the number of path components under the cgroup2 mount) or a
    /// descendant of one; at most [`MAX_FILTER_CGROUPS`].
    pub cgroups: Vec<(u64, u32)>,
    /// `ok` attempts whose rtt (`out`: answer − last SYN; `in`: ACK − last
    /// SYN-ACK) is under this many nanoseconds send no record; they are
    /// counted in [`KernelStats::below_min_rtt`]. Other results are always sent.
    pub min_rtt_ns: Option<u64>,
    /// The process behind the local socket has one of these pids, or one of
    /// the names in `comms` (one kind: a process matching either is kept);
    /// at most [`MAX_FILTER_PROCS`] of each. Decided at the SYN for `out`
    /// (an attempt whose process is unknown is dropped), at our first
    /// SYN-ACK for `in` when the listener's process is known in the kernel;
    /// the other `in` attempts are left to user space, which knows more.
    pub pids: Vec<u32>,
    /// See `pids`.
    pub comms: Vec<Comm>,
}

impl Filter {
    /// Whether `--pid` or `--comm` keep an attempt of this process.
    pub fn keeps_process(&self, p: Option<&Process>) -> bool {
        if self.pids.is_empty() && self.comms.is_empty() {
            return true;
        }
        p.is_some_and(|p| self.pids.contains(&p.pid) || self.comms.contains(&p.comm))
    }
}

impl Probe {
    /// Stores a 64-bit field of the globals, `at` in words: two words, in the
    /// order they have in memory.
    pub(super) fn store_u64(&self, at: usize, v: u64) {
        let b = v.to_ne_bytes();
        let words = self.globals.words();
        for (i, half) in b.chunks_exact(4).enumerate() {
            let w = u32::from_ne_bytes(half.try_into().unwrap_or([0; 4]));
            words[at + i].store(w, Ordering::Relaxed);
        }
    }

    /// Sets which attempts the classifier measures (see [`Filter`]). Meant to
    /// be called before the programs are attached; attempts already in the
    /// table are not judged again. A filter the maps cannot hold (too many
    /// networks or cgroups, a prefix longer than its family's address) is
    /// refused with [`BpfError::Invalid`] before anything changes.
    pub fn set_filter(&mut self, f: &Filter) -> Result<(), BpfError> {
        if f.nets.len() > MAX_FILTER_NETS {
            return Err(BpfError::Invalid(format!(
                "{} networks to filter on; the classifier holds at most {MAX_FILTER_NETS}",
                f.nets.len()
            )));
        }
        if f.cgroups.len() > MAX_FILTER_CGROUPS {
            return Err(BpfError::Invalid(format!(
                "{} cgroups to filter on; the classifier holds at most {MAX_FILTER_CGROUPS}",
                f.cgroups.len()
            )));
        }
        if f.pids.len() > MAX_FILTER_PROCS || f.comms.len() > MAX_FILTER_PROCS {
            return Err(BpfError::Invalid(format!(
                "{} pids and {} names to filter on; the classifier holds at most \
                 {MAX_FILTER_PROCS} of each",
                f.pids.len(),
                f.comms.len()
            )));
        }
        let nets = f
            .nets
            .iter()
            .map(|&(a, p)| net_key(a, p))
            .collect::<Result<Vec<NetKey>, BpfError>>()?;
        let words = self.globals.words();
        let fw = |off: usize| self.filter_word + off / 4;
        let flags = &words[self.config_word + offset_of!(ConfigGlobal, flags) / 4];
        // Off while it is rewritten: the classifier never applies half a filter.
        words[fw(offset_of!(FilterGlobal, kinds))].store(0, Ordering::SeqCst);
        flags.fetch_and(!CFG_MIN_RTT, Ordering::SeqCst);

        let trie = &self.nets;
        let mut old = [0u8; std::mem::size_of::<NetKey>()];
        while trie.next_key(None, &mut old)? {
            trie.delete(&old)?;
        }
        for k in &nets {
            trie.update(as_bytes(k), &[1], Update::Any)?;
        }
        let ports = fw(offset_of!(FilterGlobal, ports));
        for w in &words[ports..ports + 65536 / 32] {
            w.store(0, Ordering::Relaxed);
        }
        for &p in &f.ports {
            words[ports + usize::from(p) / 32].fetch_or(1 << (p % 32), Ordering::Relaxed);
        }
        let dirs = f.dir.map_or(0, |d| 1u32 << dir_code(d));
        words[fw(offset_of!(FilterGlobal, dirs))].store(dirs, Ordering::Relaxed);
        for (i, &(id, level)) in f.cgroups.iter().enumerate() {
            self.store_u64(fw(offset_of!(FilterGlobal, cgroup_id) + 8 * i), id);
            words[fw(offset_of!(FilterGlobal, cgroup_level) + 4 * i)]
                .store(level, Ordering::Relaxed);
        }
        words[fw(offset_of!(FilterGlobal, cgroups))]
            .store(f.cgroups.len() as u32, Ordering::Relaxed);
        for (i, &pid) in f.pids.iter().enumerate() {
            words[fw(offset_of!(FilterGlobal, pid) + 4 * i)].store(pid, Ordering::Relaxed);
        }
        words[fw(offset_of!(FilterGlobal, pids))].store(f.pids.len() as u32, Ordering::Relaxed);
        for (i, comm) in f.comms.iter().enumerate() {
            let at = fw(offset_of!(FilterGlobal, comm) + 16 * i);
            for (j, four) in comm.bytes().chunks_exact(4).enumerate() {
                let w = u32::from_ne_bytes([four[0], four[1], four[2], four[3]]);
                words[at + j].store(w, Ordering::Relaxed);
            }
        }
        words[fw(offset_of!(FilterGlobal, comms))].store(f.comms.len() as u32, Ordering::Relaxed);
        self.store_u64(
            fw(offset_of!(FilterGlobal, min_rtt_ns)),
            f.min_rtt_ns.unwrap_or(0),
        );

        let mut kinds = 0;
        for (set, bit) in [
            (!f.ports.is_empty(), FILTER_PORT),
            (!f.nets.is_empty(), FILTER_NET),
            (f.dir.is_some(), FILTER_DIR),
            (!f.cgroups.is_empty(), FILTER_CGROUP),
            (!f.pids.is_empty() || !f.comms.is_empty(), FILTER_PROC),
        ] {
            if set {
                kinds |= bit;
            }
        }
        words[fw(offset_of!(FilterGlobal, kinds))].store(kinds, Ordering::SeqCst);
        if f.min_rtt_ns.is_some() {
            flags.fetch_or(CFG_MIN_RTT, Ordering::SeqCst);
        }
        self.cgroup_filter = !f.cgroups.is_empty();
        Ok(())
    }
}

fn dir_code(d: Dir) -> u8 {
    match d {
        Dir::Out => DIR_OUT,
        Dir::In => DIR_IN,
    }
}
