//! Attaching a direct-action `cls_bpf` filter to both hooks of an interface's
//! `clsact` qdisc, and removing exactly what we attached.
//!
//! Everything here is built as raw `struct tcmsg` requests (`RTM_NEWQDISC`,
//! `RTM_NEWTFILTER`, …) because rtnetlink has no builder for `clsact` or
//! `cls_bpf`. The rules that keep us from disturbing other users of tc:
//! an existing `clsact` is reused and never deleted; our filters are added with
//! an explicit handle and `NLM_F_EXCL`, so they never replace anyone's; deletes
//! name the priority, protocol, handle and kind of our filter and first check
//! that the program there is still ours.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, BorrowedFd};

use futures_util::stream::StreamExt;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHeader, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{
    parse_string, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::Handle;

use super::error::{NetlinkError, Operation};
use super::hook::TC_H_CLSACT;
// Hook lives apart so that the errors can name one without depending on this module.
pub use super::hook::Hook;
use super::link::Link;

/// The clsact qdisc's own handle, `ffff:`; the kernel gives it no other.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// `TCA_KIND` of the clsact qdisc.
const CLSACT_KIND: &str = "clsact";

/// `ETH_P_ALL` (`include/uapi/linux/if_ether.h`) in host order: our filters see
/// every protocol.
pub const ETH_P_ALL: u16 = 0x0003;

/// The handle of our filters. Any non-zero value works: a handle is only unique
/// within one (chain, priority, protocol), and we take a priority nobody uses.
/// A zero handle would make a delete remove every filter at that priority.
const FILTER_HANDLE: u32 = 1;
/// The priority taken on an empty hook: the middle of the range, so that others
/// can still place filters before or after ours.
const EMPTY_HOOK_PRIO: u16 = 0x4000;
/// How often a lost race (a priority taken between our dump and our add, a dump
/// interrupted by a change) is retried before giving up.
const ATTEMPTS: usize = 8;
/// `CLS_BPF_NAME_LEN` (`net/sched/cls_bpf.c`): the longest `TCA_BPF_NAME`, NUL included.
const CLS_BPF_NAME_LEN: usize = 256;
/// `NLMSGERR_ATTR_MSG` (`include/uapi/linux/netlink.h`): the text of an extended ack.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// One filter on a clsact hook, as an `RTM_GETTFILTER` dump reports it
/// (`struct tcmsg` plus `TCA_KIND`, `TCA_CHAIN` and, for `bpf`, `TCA_OPTIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterInfo {
    /// `TCA_CHAIN`; packets enter at chain 0, other chains only by `goto chain`.
    pub chain: u32,
    /// The priority (`tc … pref`), the high half of `tcm_info`: lower runs first.
    pub prio: u16,
    /// `tcm_handle`.
    pub handle: u32,
    /// The protocol matched (`ETH_P_*`, host order), the low half of `tcm_info`.
    pub protocol: u16,
    /// `TCA_KIND`: `bpf`, `u32`, …
    pub kind: String,
    /// `TCA_BPF_NAME`, for `bpf` filters that have one.
    pub bpf_name: Option<String>,
    /// `TCA_BPF_ID`: the program's id, for `bpf` filters running an eBPF program.
    pub bpf_prog_id: Option<u32>,
    /// Whether `TCA_BPF_FLAGS` holds `TCA_BPF_FLAG_ACT_DIRECT` (`tc … da`).
    pub direct_action: bool,
}

/// One of our two filters, identified the way `RTM_DELTFILTER` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFilter {
    /// The priority it was added at.
    pub prio: u16,
    /// Its `tcm_handle`.
    pub handle: u32,
    /// Its protocol (`ETH_P_*`, host order).
    pub protocol: u16,
    /// The id of the program it ran when added (`TCA_BPF_ID`), to tell it from
    /// a filter someone put in its place since; `None` if the kernel did not say.
    pub prog_id: Option<u32>,
    /// Some filter on the hook already ran before ours when it was added (one at
    /// priority 1 left no room in front), so it may act on packets first.
    pub behind_others: bool,
}

/// What [`attach`] did to an interface: enough for [`detach`] to undo exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `ifindex` of the interface.
    pub ifindex: u32,
    /// Its name, for messages.
    pub ifname: String,
    /// Whether we created the clsact qdisc.
    pub created_qdisc: bool,
    /// Whether [`detach`] deletes the clsact qdisc once no filter is left on
    /// it: we created it, or the caller of [`attach_with`] adopted it. Any
    /// other existing qdisc is never deleted.
    pub owns_qdisc: bool,
    /// Our filter on the ingress hook.
    pub ingress: HookFilter,
    /// Our filter on the egress hook.
    pub egress: HookFilter,
}

impl Attachment {
    /// Our filter on `hook`.
    pub fn filter(&self, hook: Hook) -> &HookFilter {
        match hook {
            Hook::Ingress => &self.ingress,
            Hook::Egress => &self.egress,
        }
    }
}

/// Attaches the programs `ingress` and `egress` (fds of loaded
/// `BPF_PROG_TYPE_SCHED_CLS` programs) as direct-action `cls_bpf` filters
/// (`TCA_BPF_FD`, `TCA_BPF_NAME` = `name`, `TCA_BPF_FLAG_ACT_DIRECT`, protocol
/// `ETH_P_ALL`) on the two hooks of `link`'s clsact qdisc.
///
/// The clsact qdisc is created if absent and reused if present. Each filter
/// goes just ahead of the filters already on its hook when there is room
/// (see [`HookFilter::behind_others`]). Both filters are attached or neither:
/// on failure whatever was added is removed again before the error returns.
///
/// Fails with [`NetlinkError::IngressSlotTaken`] if an `ingress` qdisc is
/// there, since it and clsact exclude each other.
pub async fn attach(
    handle: &Handle,
    link: &Link,
    ingress: BorrowedFd<'_>,
    egress: BorrowedFd<'_>,
    name: &str,
) -> Result<Attachment, NetlinkError> {
    attach_with(handle, link, ingress, egress, false, |_| name.to_string()).await
}

/// [`attach`], for a caller that records in the filters' names whether the
/// clsact qdisc is theirs to delete, so that whoever lists the filters later
/// (say, after the caller died) can tell. `name(owns_qdisc)` gives the
/// `TCA_BPF_NAME`. With `adopt_qdisc`, an existing clsact is treated as ours to
/// delete once empty (see [`Attachment::owns_qdisc`]): for a caller that knows
/// a predecessor of its own kind created it.
pub async fn attach_with(
    handle: &Handle,
    link: &Link,
    ingress: BorrowedFd<'_>,
    egress: BorrowedFd<'_>,
    adopt_qdisc: bool,
    name: impl Fn(bool) -> String,
) -> Result<Attachment, NetlinkError> {
    check_filter_name(&name(false))?;
    check_filter_name(&name(true))?;
    let created_qdisc = ensure_clsact(handle, link).await?;
    let owns_qdisc = created_qdisc || adopt_qdisc;
    let name = name(owns_qdisc);

    let ingress_filter = match add_filter(handle, link, Hook::Ingress, ingress, &name).await {
        Ok(f) => f,
        Err(error) => return Err(undo(handle, link, created_qdisc, None, error).await),
    };
    let egress_filter = match add_filter(handle, link, Hook::Egress, egress, &name).await {
        Ok(f) => f,
        Err(error) => {
            let added = Some((Hook::Ingress, &ingress_filter));
            return Err(undo(handle, link, created_qdisc, added, error).await);
        }
    };
    Ok(Attachment {
        ifindex: link.index,
        ifname: link.name.clone(),
        created_qdisc,
        owns_qdisc,
        ingress: ingress_filter,
        egress: egress_filter,
    })
}

/// Removes the two filters of `att` (`RTM_DELTFILTER` by parent, priority,
/// protocol, handle and kind), skipping one that is gone or now runs another
/// program; then deletes the clsact qdisc if it is ours
/// ([`Attachment::owns_qdisc`]) and no filter of anyone is left on either hook. An interface that vanished in the
/// meantime is not an error.
///
/// Between the emptiness check and the qdisc delete someone could add a filter,
/// which the delete would take along: tc offers no conditional delete.
pub async fn detach(handle: &Handle, att: &Attachment) -> Result<(), NetlinkError> {
    // Without a clsact there are no filters of ours left; and a qdisc that took
    // its place (say `ingress`) holds nothing of ours either.
    if slot_kind(handle, att.ifindex, &att.ifname)
        .await?
        .as_deref()
        != Some(CLSACT_KIND)
    {
        return Ok(());
    }
    let mut first_error = None;
    for hook in Hook::BOTH {
        if let Err(e) =
            remove_filter(handle, att.ifindex, &att.ifname, hook, att.filter(hook)).await
        {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if att.owns_qdisc {
        remove_clsact_if_unused(handle, att.ifindex, &att.ifname).await?;
    }
    Ok(())
}

/// [`list_filters`] for a resolved interface, whose name then appears in errors.
pub async fn list_link_filters(
    handle: &Handle,
    link: &Link,
    hook: Hook,
) -> Result<Vec<FilterInfo>, NetlinkError> {
    let entries = dump_hook(handle, link.index, &link.name, hook).await?;
    Ok(entries.iter().filter_map(filter_info).collect())
}

/// Deletes a `bpf` filter found by [`list_filters`] (`RTM_DELTFILTER` by
/// parent, priority, protocol, handle and kind) if it is still there and still
/// runs the program it ran when listed. Returns whether it was deleted by this
/// call (`false`: gone already, or replaced).
pub async fn remove_listed(
    handle: &Handle,
    link: &Link,
    hook: Hook,
    filter: &FilterInfo,
) -> Result<bool, NetlinkError> {
    if filter.kind != TcFilterBpf::KIND || filter.chain != 0 {
        return Ok(false);
    }
    let target = HookFilter {
        prio: filter.prio,
        handle: filter.handle,
        protocol: filter.protocol,
        prog_id: filter.bpf_prog_id,
        behind_others: false,
    };
    delete_filter(handle, link.index, &link.name, hook, &target).await
}

/// Deletes the clsact qdisc of `link` (`RTM_DELQDISC`, kind `clsact`) if
/// neither hook holds any filter, in any chain. Returns whether it was deleted
/// by this call.
pub async fn remove_unused_clsact(handle: &Handle, link: &Link) -> Result<bool, NetlinkError> {
    remove_clsact_if_unused(handle, link.index, &link.name).await
}

/// Lists the filters on one clsact hook of interface `ifindex` (`RTM_GETTFILTER`
/// dump), all chains, in the kernel's order. The per-priority header entries of
/// the dump (handle 0, no `TCA_OPTIONS`) are left out. An interface without a
/// clsact qdisc has none; on one with an `ingress` qdisc the kernel answers
/// with that qdisc's filters for either hook.
pub async fn list_filters(
    handle: &Handle,
    ifindex: u32,
    hook: Hook,
) -> Result<Vec<FilterInfo>, NetlinkError> {
    let ifname = format!("interface #{ifindex}");
    let entries = dump_hook(handle, ifindex, &ifname, hook).await?;
    Ok(entries.iter().filter_map(filter_info).collect())
}

/// Whether interface `ifindex` has a clsact qdisc (`RTM_GETQDISC` dump).
pub async fn has_clsact(handle: &Handle, ifindex: u32) -> Result<bool, NetlinkError> {
    let ifname = format!("interface #{ifindex}");
    Ok(slot_kind(handle, ifindex, &ifname).await?.as_deref() == Some(CLSACT_KIND))
}

fn check_filter_name(name: &str) -> Result<(), NetlinkError> {
    let reason = if name.contains('\0') {
        "it holds a NUL byte"
    } else if name.len() >= CLS_BPF_NAME_LEN {
        "cls_bpf takes names of at most 255 bytes"
    } else {
        return Ok(());
    };
    Err(NetlinkError::InvalidFilterName {
        name: name.to_string(),
        reason,
    })
}

/// Makes sure a clsact qdisc is on `link`; returns whether we created it.
async fn ensure_clsact(handle: &Handle, link: &Link) -> Result<bool, NetlinkError> {
    for _ in 0..ATTEMPTS {
        match slot_kind(handle, link.index, &link.name).await? {
            Some(kind) if kind == CLSACT_KIND => return Ok(false),
            Some(kind) => {
                return Err(NetlinkError::IngressSlotTaken {
                    ifname: link.name.clone(),
                    kind,
                })
            }
            None => {}
        }
        let header = TcHeader {
            index: tc_ifindex(link.index),
            handle: CLSACT_HANDLE.into(),
            parent: TC_H_CLSACT.into(),
            ..Default::default()
        };
        let message =
            TcMessage::from_parts(header, vec![TcAttribute::Kind(CLSACT_KIND.to_string())]);
        match send_ack(
            handle,
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        {
            Ok(()) => return Ok(true),
            // Someone else put a qdisc there since we looked: look again.
            Err(f) if f.errno() == Some(libc::EEXIST) => continue,
            Err(f) => return Err(f.into_error(Operation::CreateClsact, &link.name)),
        }
    }
    Err(NetlinkError::Protocol {
        op: Operation::CreateClsact,
        ifname: link.name.clone(),
        detail: "the qdiscs kept changing while we tried".to_string(),
    })
}

/// Adds our filter to `hook` at a free priority chosen from a fresh dump,
/// retrying when someone takes that priority first.
async fn add_filter(
    handle: &Handle,
    link: &Link,
    hook: Hook,
    prog: BorrowedFd<'_>,
    name: &str,
) -> Result<HookFilter, NetlinkError> {
    let op = Operation::AddFilter(hook);
    for _ in 0..ATTEMPTS {
        let taken = chain0_prios(&dump_hook(handle, link.index, &link.name, hook).await?);
        let Some((prio, behind_others)) = choose_prio(&taken) else {
            break;
        };
        let options = vec![
            // A BorrowedFd is never negative, so the cast keeps its value.
            TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_string())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ];
        let mut message = filter_message(link.index, hook, prio, FILTER_HANDLE, ETH_P_ALL);
        message
            .attributes
            .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
        message.attributes.push(TcAttribute::Options(options));
        let result = send_ack(
            handle,
            RouteNetlinkMessage::NewTrafficFilter(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await;
        let mut ours = HookFilter {
            prio,
            handle: FILTER_HANDLE,
            protocol: ETH_P_ALL,
            prog_id: None,
            behind_others,
        };
        match result {
            Ok(()) => {
                let entries = dump_hook(handle, link.index, &link.name, hook).await?;
                ours.prog_id = entries
                    .iter()
                    .find(|m| is_ours(m, &ours))
                    .and_then(|m| filter_info(m)?.bpf_prog_id);
                return Ok(ours);
            }
            // Our handle at that priority exists: someone took the priority.
            Err(f) if f.errno() == Some(libc::EEXIST) => continue,
            // Someone took the priority with another protocol or kind, which the
            // kernel refuses as invalid; any other EINVAL is ours to report.
            Err(f) if f.errno() == Some(libc::EINVAL) => {
                let now = chain0_prios(&dump_hook(handle, link.index, &link.name, hook).await?);
                if !now.contains(&prio) {
                    return Err(f.into_error(op, &link.name));
                }
            }
            Err(f) => return Err(f.into_error(op, &link.name)),
        }
    }
    Err(NetlinkError::NoFreePriority {
        ifname: link.name.clone(),
        hook,
    })
}

/// Picks a priority not in `taken` (chain 0 of one hook) and says whether some
/// existing filter runs before it: just ahead of the first filter if there is
/// room, else just after the last, else in any gap.
fn choose_prio(taken: &BTreeSet<u16>) -> Option<(u16, bool)> {
    let (Some(&first), Some(&last)) = (taken.first(), taken.last()) else {
        return Some((EMPTY_HOOK_PRIO, false));
    };
    // Priority 0 asks the kernel to choose, so 1 is the front.
    if first > 1 {
        return Some((first - 1, false));
    }
    if last < u16::MAX {
        return Some((last + 1, true));
    }
    (1..=u16::MAX)
        .rev()
        .find(|p| !taken.contains(p))
        .map(|p| (p, true))
}

/// Undoes a half-done attach, then returns the error that stopped it
/// (wrapped in [`NetlinkError::Incomplete`] if undoing failed too).
async fn undo(
    handle: &Handle,
    link: &Link,
    created_qdisc: bool,
    added: Option<(Hook, &HookFilter)>,
    error: NetlinkError,
) -> NetlinkError {
    let mut cleanup = Ok(());
    if let Some((hook, filter)) = added {
        cleanup = remove_filter(handle, link.index, &link.name, hook, filter).await;
    }
    if cleanup.is_ok() && created_qdisc {
        cleanup = remove_clsact_if_unused(handle, link.index, &link.name)
            .await
            .map(|_| ());
    }
    match cleanup {
        Ok(()) => error,
        Err(cleanup) => NetlinkError::Incomplete {
            error: Box::new(error),
            cleanup: Box::new(cleanup),
        },
    }
}

/// Deletes our filter from `hook` if it is still there and still ours.
async fn remove_filter(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
    hook: Hook,
    filter: &HookFilter,
) -> Result<(), NetlinkError> {
    delete_filter(handle, ifindex, ifname, hook, filter)
        .await
        .map(|_| ())
}

/// Deletes `filter` from `hook` if it is still there and still runs the same
/// program; returns whether this call deleted it.
async fn delete_filter(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
    hook: Hook,
    filter: &HookFilter,
) -> Result<bool, NetlinkError> {
    let entries = dump_hook(handle, ifindex, ifname, hook).await?;
    if !entries.iter().any(|m| is_ours(m, filter)) {
        return Ok(false);
    }
    let mut message = filter_message(ifindex, hook, filter.prio, filter.handle, filter.protocol);
    // The kernel checks the kind too, so a filter of another kind is never hit.
    message
        .attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
    match send_ack(handle, RouteNetlinkMessage::DelTrafficFilter(message), 0).await {
        Ok(()) => Ok(true),
        // Gone since we looked, with its interface or on its own.
        Err(f) if matches!(f.errno(), Some(libc::ENOENT | libc::ENODEV)) => Ok(false),
        Err(f) => Err(f.into_error(Operation::DeleteFilter(hook), ifname)),
    }
}

/// Deletes the clsact qdisc of `ifindex` if neither hook holds any filter, in
/// any chain.
async fn remove_clsact_if_unused(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
) -> Result<bool, NetlinkError> {
    if slot_kind(handle, ifindex, ifname).await?.as_deref() != Some(CLSACT_KIND) {
        return Ok(false);
    }
    for hook in Hook::BOTH {
        // Any entry counts, even a priority header whose filters we could not
        // parse: deleting the qdisc would delete them.
        if !dump_hook(handle, ifindex, ifname, hook).await?.is_empty() {
            return Ok(false);
        }
    }
    let header = TcHeader {
        index: tc_ifindex(ifindex),
        handle: CLSACT_HANDLE.into(),
        parent: TC_H_CLSACT.into(),
        ..Default::default()
    };
    // With the kind named, the kernel refuses to delete an `ingress` qdisc that
    // might have replaced ours.
    let message = TcMessage::from_parts(header, vec![TcAttribute::Kind(CLSACT_KIND.to_string())]);
    match send_ack(handle, RouteNetlinkMessage::DelQueueDiscipline(message), 0).await {
        Ok(()) => Ok(true),
        Err(f) if matches!(f.errno(), Some(libc::ENOENT | libc::ENODEV)) => Ok(false),
        Err(f) => Err(f.into_error(Operation::DeleteClsact, ifname)),
    }
}

/// The kind of the qdisc in the ingress/clsact slot of `ifindex` (parent
/// `TC_H_INGRESS`), if any.
async fn slot_kind(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
) -> Result<Option<String>, NetlinkError> {
    let request =
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(tc_ifindex(ifindex)));
    let replies = dump(handle, request)
        .await
        .map_err(|f| f.into_error(Operation::QueryQdisc, ifname))?;
    // The kernel dumps the qdiscs of every interface.
    Ok(replies.into_iter().find_map(|r| match r {
        RouteNetlinkMessage::NewQueueDiscipline(q)
            if q.header.index == tc_ifindex(ifindex)
                && u32::from(q.header.parent) == TC_H_CLSACT =>
        {
            Some(kind_of(&q).unwrap_or_default())
        }
        _ => None,
    }))
}

/// Every entry of an `RTM_GETTFILTER` dump of one hook, priority headers included.
async fn dump_hook(
    handle: &Handle,
    ifindex: u32,
    ifname: &str,
    hook: Hook,
) -> Result<Vec<TcMessage>, NetlinkError> {
    let mut request = TcMessage::with_index(tc_ifindex(ifindex));
    request.header.parent = hook.parent().into();
    let replies = dump(handle, RouteNetlinkMessage::GetTrafficFilter(request))
        .await
        .map_err(|f| f.into_error(Operation::ListFilters(hook), ifname))?;
    Ok(replies
        .into_iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewTrafficFilter(m) => Some(m),
            _ => None,
        })
        .collect())
}

/// A filter request's `struct tcmsg`: `tcm_info` is `prio << 16 | htons(protocol)`.
fn filter_message(ifindex: u32, hook: Hook, prio: u16, handle: u32, protocol: u16) -> TcMessage {
    let header = TcHeader {
        index: tc_ifindex(ifindex),
        handle: handle.into(),
        parent: hook.parent().into(),
        info: (u32::from(prio) << 16) | u32::from(protocol.to_be()),
        ..Default::default()
    };
    TcMessage::from_parts(header, Vec::new())
}

/// `tcm_ifindex` is an `int`; kernel interface indexes are positive `int`s.
fn tc_ifindex(ifindex: u32) -> i32 {
    ifindex as i32
}

fn kind_of(m: &TcMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    })
}

fn chain_of(m: &TcMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Chain(c) => Some(*c),
            _ => None,
        })
        .unwrap_or(0)
}

fn prio_of(m: &TcMessage) -> u16 {
    (m.header.info >> 16) as u16
}

fn protocol_of(m: &TcMessage) -> u16 {
    u16::from_be((m.header.info & 0xFFFF) as u16)
}

/// The priorities in use on chain 0, where packets enter and order matters.
fn chain0_prios(entries: &[TcMessage]) -> BTreeSet<u16> {
    entries
        .iter()
        .filter(|m| chain_of(m) == 0)
        .map(prio_of)
        .collect()
}

/// Whether dump entry `m` is our filter `f`, running the program we attached.
fn is_ours(m: &TcMessage, f: &HookFilter) -> bool {
    let Some(info) = filter_info(m) else {
        return false;
    };
    info.chain == 0
        && info.prio == f.prio
        && info.handle == f.handle
        && info.protocol == f.protocol
        && info.kind == TcFilterBpf::KIND
        && (f.prog_id.is_none() || info.bpf_prog_id == f.prog_id)
}

/// A dump entry as a [`FilterInfo`], or `None` for a priority header.
fn filter_info(m: &TcMessage) -> Option<FilterInfo> {
    let handle = u32::from(m.header.handle);
    let options = m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => Some(o),
        _ => None,
    });
    if handle == 0 && options.is_none() {
        return None;
    }
    let mut info = FilterInfo {
        chain: chain_of(m),
        prio: prio_of(m),
        handle,
        protocol: protocol_of(m),
        kind: kind_of(m).unwrap_or_default(),
        bpf_name: None,
        bpf_prog_id: None,
        direct_action: false,
    };
    for option in options.into_iter().flatten() {
        match option {
            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => info.bpf_name = Some(n.clone()),
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => info.bpf_prog_id = Some(*id),
            TcOption::Bpf(TcFilterBpfOption::Flags(flags)) => {
                info.direct_action = flags.contains(TcBpfFlags::DirectAction)
            }
            _ => {}
        }
    }
    Some(info)
}

/// How a request failed, before the caller names what it was doing.
enum Failure {
    /// `NLMSG_ERROR` with a negative errno, and the extended ack text if any.
    Kernel { errno: i32, message: Option<String> },
    /// The connection failed or the answer made no sense.
    Protocol(String),
}

impl Failure {
    fn errno(&self) -> Option<i32> {
        match self {
            Failure::Kernel { errno, .. } => Some(*errno),
            Failure::Protocol(_) => None,
        }
    }

    fn into_error(self, op: Operation, ifname: &str) -> NetlinkError {
        match self {
            Failure::Kernel { errno, message } => NetlinkError::Kernel {
                op,
                ifname: ifname.to_string(),
                errno,
                message,
            },
            Failure::Protocol(detail) => NetlinkError::Protocol {
                op,
                ifname: ifname.to_string(),
                detail,
            },
        }
    }
}

/// Sends a request with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the
/// kernel's verdict.
async fn send_ack(
    handle: &Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), Failure> {
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut replies = handle
        .clone()
        .request(request)
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    while let Some(reply) = replies.next().await {
        let (header, payload) = reply.into_parts();
        match payload {
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(Failure::Kernel {
                        errno: -code.get(),
                        message: ext_ack_message(header.flags, &e.header),
                    });
                }
                return Ok(());
            }
            NetlinkPayload::Overrun(_) => {
                return Err(Failure::Protocol(
                    "the kernel's answer was lost (overrun)".to_string(),
                ))
            }
            _ => {}
        }
    }
    // The connection swallows a plain ack and just ends the stream.
    Ok(())
}

/// Runs an `NLM_F_DUMP` request and collects its entries, starting over when
/// the kernel flags the dump as interrupted by a concurrent change.
async fn dump(
    handle: &Handle,
    message: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, Failure> {
    for _ in 0..ATTEMPTS {
        let mut request = NetlinkMessage::from(message.clone());
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = handle
            .clone()
            .request(request)
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        let mut entries = Vec::new();
        let mut interrupted = false;
        while let Some(reply) = replies.next().await {
            let (header, payload) = reply.into_parts();
            interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
            match payload {
                NetlinkPayload::InnerMessage(m) => entries.push(m),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(Failure::Kernel {
                            errno: -code.get(),
                            message: ext_ack_message(header.flags, &e.header),
                        });
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(Failure::Protocol(
                        "part of the kernel's answer was lost (overrun)".to_string(),
                    ))
                }
                _ => {}
            }
        }
        if !interrupted {
            return Ok(entries);
        }
    }
    Err(Failure::Protocol(
        "the kernel's list kept changing while being read".to_string(),
    ))
}

/// The `NLMSGERR_ATTR_MSG` of an extended ack (`struct nlmsgerr` is followed by
/// the request's header, its body too unless `NLM_F_CAPPED`, then the TLVs when
/// `NLM_F_ACK_TLVS`). `payload` is what follows the errno.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        len.checked_add(3)? & !3
    };
    for nla in NlasIterator::new(payload.get(skip..)?) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            return parse_string(nla.value()).ok().filter(|m| !m.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prio_on_empty_hook_is_in_the_middle() {
        assert_eq!(
            choose_prio(&BTreeSet::new()),
            Some((EMPTY_HOOK_PRIO, false))
        );
    }

    #[test]
    fn prio_goes_ahead_when_there_is_room() {
        assert_eq!(choose_prio(&BTreeSet::from([10, 20])), Some((9, false)));
        assert_eq!(choose_prio(&BTreeSet::from([2])), Some((1, false)));
    }

    #[test]
    fn prio_goes_behind_when_first_is_one() {
        assert_eq!(choose_prio(&BTreeSet::from([1, 5])), Some((6, true)));
        assert_eq!(
            choose_prio(&BTreeSet::from([1, u16::MAX])),
            Some((u16::MAX - 1, true))
        );
        let full: BTreeSet<u16> = (1..=u16::MAX).collect();
        assert_eq!(choose_prio(&full), None);
    }

    #[test]
    fn hook_parents_match_the_kernel() {
        assert_eq!(Hook::Ingress.parent(), 0xFFFF_FFF2);
        assert_eq!(Hook::Egress.parent(), 0xFFFF_FFF3);
    }

    #[test]
    fn tcm_info_carries_protocol_in_network_order() {
        let m = filter_message(1, Hook::Ingress, 0xC000, 1, ETH_P_ALL);
        assert_eq!(m.header.info >> 16, 0xC000);
        assert_eq!((m.header.info & 0xFFFF) as u16, ETH_P_ALL.to_be());
        assert_eq!(protocol_of(&m), ETH_P_ALL);
        assert_eq!(prio_of(&m), 0xC000);
    }

    #[test]
    fn ext_ack_text_is_found_after_a_capped_header() {
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        let text = b"Parent Qdisc doesn't exists\0";
        let len = (4 + text.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        while !payload.len().is_multiple_of(4) {
            payload.push(0);
        }
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("Parent Qdisc doesn't exists")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &payload), None);
    }

    #[test]
    fn long_or_nul_names_are_refused() {
        assert!(check_filter_name("flowlat").is_ok());
        assert!(check_filter_name("a\0b").is_err());
        assert!(check_filter_name(&"x".repeat(256)).is_err());
        assert!(check_filter_name(&"x".repeat(255)).is_ok());
    }
}
