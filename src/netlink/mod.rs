#![warn(missing_docs)]

//! A small layer over rtnetlink for what flowlat needs: resolving interfaces and
//! attaching `cls_bpf` filters to a `clsact` qdisc. It knows nothing of BPF
//! beyond "a program fd".

mod error;
mod hook;
pub mod link;
pub mod nsid;
pub mod tc;

pub use error::{NetlinkError, Operation};
