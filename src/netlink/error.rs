//! Errors of the netlink layer, worded for the person running flowlat: what was
//! being done, on which interface, what the kernel said, and what to check next.

use std::fmt;
use std::io;

use nix::errno::Errno;

use super::hook::Hook;

/// What the netlink layer was doing when a request failed, named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `RTM_GETLINK` by name.
    ResolveLink,
    /// `RTM_GETQDISC` dump, to see what holds the ingress/clsact slot.
    QueryQdisc,
    /// `RTM_NEWQDISC` of kind `clsact`.
    CreateClsact,
    /// `RTM_DELQDISC` of kind `clsact`.
    DeleteClsact,
    /// `RTM_GETTFILTER` dump on one clsact hook.
    ListFilters(Hook),
    /// `RTM_NEWTFILTER` of kind `bpf` on one clsact hook.
    AddFilter(Hook),
    /// `RTM_DELTFILTER` of our `bpf` filter on one clsact hook.
    DeleteFilter(Hook),
    /// `RTM_GETNSID` of a network namespace.
    GetNsid,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::ResolveLink => f.write_str("looking up the interface"),
            Operation::QueryQdisc => f.write_str("listing the qdiscs"),
            Operation::CreateClsact => f.write_str("creating the clsact qdisc"),
            Operation::DeleteClsact => f.write_str("deleting the clsact qdisc"),
            Operation::ListFilters(hook) => write!(f, "listing the {hook} filters"),
            Operation::AddFilter(hook) => write!(f, "adding the {hook} bpf filter"),
            Operation::DeleteFilter(hook) => write!(f, "deleting the {hook} bpf filter"),
            Operation::GetNsid => f.write_str("asking for a network namespace's id"),
        }
    }
}

/// An error of the netlink layer. Its `Display` is meant to be shown as is.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The `NETLINK_ROUTE` socket could not be opened.
    Socket(io::Error),
    /// [`crate::netlink::link::connect`] was called outside a tokio runtime.
    NoRuntime,
    /// No interface has this name (`RTM_GETLINK` answered `ENODEV`).
    NoSuchInterface {
        /// The name as given.
        name: String,
    },
    /// The kernel refused a request: an `NLMSG_ERROR` with a negative errno.
    Kernel {
        /// What was being done.
        op: Operation,
        /// The interface it was done on.
        ifname: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's own explanation (extended ack, `NLMSGERR_ATTR_MSG`), when it gave one.
        message: Option<String>,
    },
    /// The slot that `clsact` needs (parent `TC_H_INGRESS`, handle `ffff:`) is held
    /// by another qdisc, usually `ingress`.
    IngressSlotTaken {
        /// The interface.
        ifname: String,
        /// The kind of the qdisc in the slot (`TCA_KIND`).
        kind: String,
    },
    /// The name given to the filter cannot be sent as `TCA_BPF_NAME`.
    InvalidFilterName {
        /// The name as given.
        name: String,
        /// Why it cannot.
        reason: &'static str,
    },
    /// Every priority on the hook is taken, or kept being taken while we tried.
    NoFreePriority {
        /// The interface.
        ifname: String,
        /// The hook.
        hook: Hook,
    },
    /// The connection to the kernel failed or the kernel answered something
    /// we did not ask for.
    Protocol {
        /// What was being done.
        op: Operation,
        /// The interface it was done on.
        ifname: String,
        /// What went wrong.
        detail: String,
    },
    /// An attach failed half way and undoing its first half failed too, so
    /// something of ours may be left on the interface.
    Incomplete {
        /// Why the attach failed.
        error: Box<NetlinkError>,
        /// Why the cleanup failed.
        cleanup: Box<NetlinkError>,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if this error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Socket(e) => e.raw_os_error(),
            NetlinkError::Incomplete { error, .. } => error.errno(),
            _ => None,
        }
    }

    fn hint(op: Operation, ifname: &str, errno: Errno) -> Option<String> {
        let hint = match (errno, op) {
            (Errno::EPERM | Errno::EACCES, _) => {
                "this needs CAP_NET_ADMIN: run flowlat as root or grant it that capability".to_string()
            }
            (Errno::ENODEV, _) => {
                format!("interface {ifname} no longer exists (it may have been deleted); list interfaces with `ip link`")
            }
            (Errno::ENOENT | Errno::EOPNOTSUPP, Operation::CreateClsact) => {
                "the kernel seems to lack the clsact qdisc (CONFIG_NET_SCH_INGRESS, module sch_ingress)".to_string()
            }
            (Errno::ENOENT | Errno::EOPNOTSUPP, Operation::AddFilter(_)) => {
                "the kernel seems to lack the bpf classifier (CONFIG_NET_CLS_BPF, module cls_bpf)".to_string()
            }
            (Errno::EINVAL, Operation::AddFilter(_)) => {
                "cls_bpf takes only a loaded program of type BPF_PROG_TYPE_SCHED_CLS".to_string()
            }
            _ => return None,
        };
        Some(hint)
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Socket(e) => write!(f, "cannot open a netlink socket to the kernel: {e}"),
            NetlinkError::NoRuntime => f.write_str("the netlink connection needs a running tokio runtime"),
            NetlinkError::NoSuchInterface { name } => {
                write!(f, "no network interface is named {name:?}")?;
                // The kernel rejects such names before looking, with a less clear errno.
                if name.is_empty() {
                    f.write_str(" (the name is empty)")?;
                } else if name.len() >= libc::IFNAMSIZ {
                    write!(f, " (interface names are at most {} bytes)", libc::IFNAMSIZ - 1)?;
                }
                f.write_str("; list interfaces with `ip link`")
            }
            NetlinkError::Kernel {
                op,
                ifname,
                errno,
                message,
            } => {
                let e = Errno::from_raw(*errno);
                write!(f, "{op} on {ifname} failed: {} ({e:?})", e.desc())?;
                if let Some(m) = message {
                    write!(f, "; the kernel says: {m}")?;
                }
                if let Some(h) = Self::hint(*op, ifname, e) {
                    write!(f, "; {h}")?;
                }
                Ok(())
            }
            NetlinkError::IngressSlotTaken { ifname, kind } if kind == "ingress" => write!(
                f,
                "cannot attach to {ifname}: it has an `ingress` qdisc (handle ffff:), which takes the place \
                 the clsact qdisc needs; see it with `tc qdisc show dev {ifname}` and its filters with \
                 `tc filter show dev {ifname} ingress`, and remove it (`tc qdisc del dev {ifname} ingress`) \
                 only if nothing else relies on it"
            ),
            NetlinkError::IngressSlotTaken { ifname, kind } => write!(
                f,
                "cannot attach to {ifname}: a `{kind}` qdisc holds the ingress slot (parent ffff:fff1) \
                 that the clsact qdisc needs; see it with `tc qdisc show dev {ifname}`"
            ),
            NetlinkError::InvalidFilterName { name, reason } => {
                write!(f, "cannot name a tc filter {name:?}: {reason}")
            }
            NetlinkError::NoFreePriority { ifname, hook } => write!(
                f,
                "no free filter priority on the {hook} hook of {ifname}; see `tc filter show dev {ifname} {hook}`"
            ),
            NetlinkError::Protocol { op, ifname, detail } => {
                write!(f, "{op} on {ifname} failed: {detail}")
            }
            NetlinkError::Incomplete { error, cleanup } => write!(
                f,
                "{error}; undoing the partial attach failed too, so a filter or qdisc of ours may be \
                 left behind: {cleanup}"
            ),
        }
    }
}

impl std::error::Error for NetlinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetlinkError::Socket(e) => Some(e),
            NetlinkError::Incomplete { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}
