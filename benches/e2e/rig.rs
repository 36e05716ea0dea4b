//! The measured setup (a veth pair, a server, the flowlat binary) and one
//! storm step with flowlat attached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::flowlat::{self, Flowlat};
use crate::storm;
use crate::Opts;
use kit::json::J;
use kit::net::VethPair;

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The median of each round's with/without ratio: the two runs of a round
/// are back to back, so a busy spell of the machine weighs on both.
pub fn paired_ratio(with: &[f64], without: &[f64]) -> f64 {
    let r: Vec<f64> = with.iter().zip(without).map(|(w, o)| w / o).collect();
    median(&r)
}

/// One step of the ramp.
pub struct Step {
    pub target: u32,
    pub storm: storm::Storm,
    pub summary: flowlat::Summary,
    pub cpu_ns: u64,
    pub peak_rss: u64,
    pub pages: u32,
}

impl Step {
    pub fn cpu_us_per_handshake(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.summary.ok.max(1) as f64
    }

    pub fn json(&self) -> J {
        J::obj(vec![
            ("target_per_s", J::Int(self.target.into())),
            ("handshakes_per_s", J::Num(self.storm.rate().round())),
            ("connects_ok", J::Int(self.storm.ok as i64)),
            ("connects_failed", J::Int(self.storm.failed as i64)),
            ("records_ok", J::Int(self.summary.ok as i64)),
            ("records_lost", J::Int(self.summary.lost as i64)),
            (
                "records_missing",
                J::Int(self.storm.ok as i64 - self.summary.ok as i64),
            ),
            ("cpu_us_per_handshake", J::Num(self.cpu_us_per_handshake())),
            ("peak_rss_bytes", J::Int(self.peak_rss as i64)),
            ("perf_pages", J::Int(self.pages.into())),
        ])
    }
}

pub struct Rig {
    pub net: VethPair,
    pub server: SocketAddr,
    /// Addresses beyond the server's end that nobody answers.
    pub silent: Vec<SocketAddr>,
    pub bin: PathBuf,
}

impl Rig {
    pub fn storm(&self, rate: u32, secs: f64, clients: usize) -> storm::Storm {
        let rate = (rate > 0).then_some(rate);
        storm::run(
            &self.net.a,
            self.server,
            rate,
            clients,
            Duration::from_secs_f64(secs),
        )
    }

    /// A storm at `rate` with flowlat (perf rings of `pages` pages) attached at the server's end.
    pub fn step(&self, rate: u32, o: &Opts, pages: u32) -> Step {
        let pages_arg = pages.to_string();
        self.step_with(
            rate,
            o,
            pages,
            &["--json", "--perf-pages", &pages_arg, "b"],
            |_| {},
        )
    }

    /// A storm at `rate` with flowlat run with `args`; `during` runs beside
    /// the storm, given flowlat's pid.
    pub fn step_with(
        &self,
        rate: u32,
        o: &Opts,
        pages: u32,
        args: &[&str],
        during: impl FnOnce(u32) + Send,
    ) -> Step {
        let f = Flowlat::start(&self.net.b, &self.bin, args);
        let cpu0 = f.cpu_ns();
        let pid = f.pid();
        let storm = std::thread::scope(|s| {
            s.spawn(|| during(pid));
            self.storm(rate, o.secs, o.clients)
        });
        // Let the reader catch up with what is still in the rings.
        std::thread::sleep(Duration::from_millis(300));
        let cpu_ns = f.cpu_ns().saturating_sub(cpu0);
        let peak_rss = f.peak_rss();
        let summary = f.stop();
        Step {
            target: rate,
            storm,
            summary,
            cpu_ns,
            peak_rss,
            pages,
        }
    }
}
