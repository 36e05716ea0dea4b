//! Bulk TCP throughput with iperf3 (Debian's package), server and client each
//! in their own namespace.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kit::json;
use kit::net::NetNs;

const PORT: &str = "5201";

/// An `iperf3 -s` in a namespace, stopped on drop.
pub struct Server(Child);

impl Server {
    pub fn start(ns: &NetNs, addr: &str) -> Server {
        let addr = addr.to_string();
        let child = ns.enter(move || {
            Command::new("iperf3")
                .args(["-s", "-B", &addr, "-p", PORT])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run iperf3 ({e}): scripts/bench-e2e.sh installs it")
                })
        });
        std::thread::sleep(Duration::from_millis(300));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `iperf3 -c` run of `secs` seconds: the receiver's bits per second.
pub fn run(ns: &NetNs, server: &str, secs: u32) -> f64 {
    let server = server.to_string();
    let out = ns.enter(move || {
        Command::new("iperf3")
            .args(["-c", &server, "-p", PORT, "-t", &secs.to_string(), "-J"])
            .output()
            .expect("run iperf3")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 failed: {text}");
    received_bps(&text).unwrap_or_else(|| panic!("no sum_received in iperf3's report: {text}"))
}

/// `"end": { "sum_received": { "bits_per_second": N } }` of `iperf3 -J`.
fn received_bps(report: &str) -> Option<f64> {
    let report = json::parse(report).ok()?;
    report
        .get("end")?
        .get("sum_received")?
        .get("bits_per_second")?
        .as_f64()
}
