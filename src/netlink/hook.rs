//! The two hooks of a `clsact` qdisc, the parents its filters hang from.
//! Both the requests of [`super::tc`] and the errors that name a hook use it.

use std::fmt;

/// `TC_H_CLSACT` (equal to `TC_H_INGRESS`, `include/uapi/linux/pkt_sched.h`): the
/// parent under which the clsact qdisc lives.
pub(super) const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// `TC_H_MIN_INGRESS` (`pkt_sched.h`).
const TC_H_MIN_INGRESS: u32 = 0xFFF2;
/// `TC_H_MIN_EGRESS` (`pkt_sched.h`).
const TC_H_MIN_EGRESS: u32 = 0xFFF3;

/// One of the two clsact hooks, i.e. the filter parent
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)` or `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Packets received by the interface (`tc filter … ingress`).
    Ingress,
    /// Packets sent by the interface (`tc filter … egress`).
    Egress,
}

impl Hook {
    /// Both hooks, ingress first.
    pub const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    /// The `tcm_parent` of filters on this hook: `ffff:fff2` or `ffff:fff3`.
    pub fn parent(self) -> u32 {
        let minor = match self {
            Hook::Ingress => TC_H_MIN_INGRESS,
            Hook::Egress => TC_H_MIN_EGRESS,
        };
        (TC_H_CLSACT & 0xFFFF_0000) | minor
    }

    /// The word `tc` uses for this hook.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
