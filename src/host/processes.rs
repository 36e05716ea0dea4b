//! The processes behind `in` attempts whose listener no hook of flowlat's
//! saw being made (it was bound before flowlat started): named from a scan
//! of the host's listening sockets ([`Listeners`]), taken at start and again
//! when a record finds no listener in it, at most once every
//! [`RESCAN_EVERY`], never per record.

use std::time::{Duration, Instant};

use super::listeners::Listeners;
use crate::probe::{Comm, Dir, Process, Record};

/// The least time between two scans: a scan reads every process's fds.
pub const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// Names the listeners' processes of `in` records, from scans of the host.
#[derive(Debug, Default)]
pub struct ListenerProcesses {
    scan: Option<Listeners>,
    scanned: Option<Instant>,
    /// Why the last scan failed, once, for the caller to say.
    failed: Option<String>,
}

impl ListenerProcesses {
    /// Takes the first scan, so that the listeners already running are
    /// named from the first attempt on.
    pub fn new() -> ListenerProcesses {
        let mut l = ListenerProcesses::default();
        l.rescan(Instant::now());
        l
    }

    fn rescan(&mut self, now: Instant) {
        self.scanned = Some(now);
        match Listeners::scan() {
            Ok(scan) => self.scan = Some(scan),
            Err(e) => {
                self.failed.get_or_insert_with(|| {
                    format!("cannot list the listening sockets' processes ({e})")
                });
            }
        }
    }

    /// Why a scan failed, once.
    pub fn take_failure(&mut self) -> Option<String> {
        self.failed.take()
    }

    /// Names the process of each `in` record that reached a listener of
    /// this host (the kernel saw a local socket: it has a cgroup) and that
    /// the kernel could not name.
    pub fn name(&mut self, records: &mut [Record]) {
        let mut rescanned = false;
        for r in records.iter_mut() {
            if r.dir != Dir::In || r.process.is_some() || r.cgroup_id.is_none() {
                continue;
            }
            let mut found = self.lookup(r);
            if found.is_none() && !rescanned {
                let now = Instant::now();
                if self
                    .scanned
                    .is_none_or(|t| now.duration_since(t) >= RESCAN_EVERY)
                {
                    self.rescan(now);
                    rescanned = true;
                    found = self.lookup(r);
                }
            }
            r.process = found;
        }
    }

    fn lookup(&self, r: &Record) -> Option<Process> {
        let (pid, comm) = self.scan.as_ref()?.lookup(r.server, r.server_port)?;
        Some(Process {
            pid,
            comm: Comm::new(comm),
        })
    }
}
