//! `--summary`: handshake attempts grouped (`--by`), counted by result, with
//! rtt and local percentiles, per `--interval` or for the whole run, rendered
//! as aligned text tables or JSON lines.
//!
//! Memory is bounded twice over: each group's durations live in sketches of
//! bounded size ([`crate::sinks::histogram`]), and each table holds at most
//! `max_groups` groups, the attempts of any further group going into one
//! `other` row.

mod group;
mod json;
mod tables;
mod text;

pub use group::{network, GroupKey, Summary, SummaryConfig, Table, ALL_KEYS, KEYS_HELP};
pub use json::render_json;
pub use tables::Tables;
pub use text::render_text;
