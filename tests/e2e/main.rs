//! End to end: the flowlat binary, as cargo built it for the tests, run in
//! network namespaces on veth pairs and other interfaces this test makes, with
//! real kernel clients and servers and raw-socket peers. Needs root.
//!
//! - `causes`: rejections by firewalls on the server and on a router, as
//!   real kernel clients see them and as both ends report them;
//! - `handshakes`: what both ends measure, slow peers, retransmissions,
//!   timeouts, exit and errors;
//! - `lifecycle`: sharing an interface, kills, detach, interfaces changing
//!   under flowlat, many starts, no privileges;
//! - `metrics`: the Prometheus endpoint;
//! - `processes`: the process behind each attempt, `--pid`/`--comm`, and
//!   the cgroup hooks left as found;
//! - `summary`: summaries, interval tables, in-kernel filters, bounded runs;
//! - `shapes`: loopback, TUN, VLAN tags, a SYN flood;
//! - `loss`: nginx and ab under random SYN and SYN-ACK loss, every attempt at
//!   both ends against tcpdump's packets, and the client's nstat counters.
//!
//! `cgroup_e2e` (moves this process between cgroups), `static_binary` (builds
//! the musl binary) and `readme_demo` (by hand) are binaries of their own.

mod causes;
mod handshakes;
mod lifecycle;
mod loss;
mod metrics;
mod node;
mod processes;
mod shapes;
mod summary;
