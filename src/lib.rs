//! flowlat: TCP handshake latency per connection, measured by a tc classifier.
//!
//! Layers, bottom up: [`bpf`] and [`netlink`] are generic kernel-ABI layers that
//! know nothing of each other or of flowlat; [`probe`] is our program (its maps,
//! its record and the measurement contract); [`owner`] tells whose filters are
//! on an interface and removes those of dead flowlat processes; [`privilege`]
//! checks the capabilities before anything is created; [`output`] formats
//! records; [`summary`] groups them into tables (its distributions in
//! [`histogram`], its names through [`labels`]); [`metrics`] counts them for
//! Prometheus and [`http`] serves that; the binary (`src/main.rs`) parses
//! arguments, prints, handles signals and exits.

pub mod attach;
pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod consume;
pub mod histogram;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod netlink;
pub mod output;
pub mod owner;
pub mod privilege;
pub mod probe;
pub mod run;
pub mod slots;
pub mod summary;
