//! Attaching to interfaces and leaving them as found: all or nothing, after
//! removing what flowlat processes that died left behind.

use std::os::fd::BorrowedFd;

use rtnetlink::Handle;

use crate::error::Error;
use crate::host::ifaces::{Patterns, Side};
use crate::host::owner::{self, Cleanup, Owner};
use crate::netlink::link::{self, Link, LinkLayer};
use crate::netlink::tc::{self, Attachment};
use crate::netlink::NetlinkError;
use crate::probe::{Framing, Hook, Probe};

/// Attaches the probe to every interface in `links`, each from its side, or
/// to none: a failure undoes the interfaces already attached. Before
/// attaching to an interface, removes what flowlat processes that died left
/// on it.
pub async fn attach_all(
    handle: &Handle,
    probe: &Probe,
    links: &[(Link, Side)],
    me: &Owner,
    note: &mut dyn FnMut(&str),
) -> Result<(Vec<Attachment>, Vec<Cleanup>), Error> {
    let mut attached = Vec::new();
    let mut cleanups = Vec::new();
    for (l, side) in links {
        match attach_link(handle, probe, l, *side, me).await {
            Ok((a, c)) => {
                attached.push(a);
                cleanups.push(c);
            }
            Err(e) => {
                for a in attached.iter().rev() {
                    if let Err(d) = tc::detach(handle, a).await {
                        note(&d.to_string());
                    }
                }
                return Err(e);
            }
        }
    }
    Ok((attached, cleanups))
}

/// Attaches the probe to one interface, measured from `side`: for the far
/// side the egress classifier goes on the ingress hook and the ingress one
/// on egress, so that a packet the workload sends (arriving here) is read
/// as leaving, at no cost per packet.
pub async fn attach_link(
    handle: &Handle,
    probe: &Probe,
    l: &Link,
    side: Side,
    me: &Owner,
) -> Result<(Attachment, Cleanup), Error> {
    // Checked when the interface was resolved, and loaded for it.
    let fr = framing(l).unwrap_or(Framing::Ethernet);
    let (Some(ingress), Some(egress)) = (
        probe.program_for(Hook::Ingress, fr),
        probe.program_for(Hook::Egress, fr),
    ) else {
        return Err(Error::Other(format!(
            "no program was loaded for {}'s link type (a flowlat bug: please report it)",
            l.name
        )));
    };
    let progs = match side {
        Side::Here => (ingress, egress),
        Side::Far => (egress, ingress),
    };
    Ok(attach_one(handle, progs, l, me).await?)
}

/// Hands one interface's programs to tc, after removing what dead flowlat
/// processes left there.
async fn attach_one(
    handle: &Handle,
    (ingress, egress): (BorrowedFd<'_>, BorrowedFd<'_>),
    link: &Link,
    me: &Owner,
) -> Result<(Attachment, Cleanup), NetlinkError> {
    let found = owner::scan(handle, link, me).await?;
    let cleanup = owner::remove_left(handle, link, &found).await?;
    // A clsact that some flowlat created may be deleted by whichever flowlat
    // leaves it empty; otherwise it would outlive them all when its creator
    // is not the last to go.
    let adopt = found.iter().any(|f| f.owns_qdisc);
    let attachment = tc::attach_with(handle, link, ingress, egress, adopt, |owns_qdisc| {
        me.filter_name(owns_qdisc)
    })
    .await?;
    Ok((attachment, cleanup))
}

/// `flowlat --detach`: removes what dead flowlat processes left on each
/// interface and says what it did. Returns whether all went well.
pub async fn detach_left(ifaces: &[String], note: &mut dyn FnMut(&str)) -> bool {
    let me = match Owner::current() {
        Ok(me) => me,
        Err(e) => {
            note(&e.to_string());
            return false;
        }
    };
    let handle = match link::connect() {
        Ok(h) => h,
        Err(e) => {
            note(&e.to_string());
            return false;
        }
    };
    let mut ok = true;
    // Patterns stand for the interfaces they match now; names as given, so
    // that a missing one is said.
    let patterns = Patterns::new(ifaces);
    let mut names: Vec<String> = patterns.names().map(str::to_string).collect();
    if patterns.any_glob() {
        match link::dump(&handle).await {
            Ok(all) => {
                for l in all {
                    if patterns.matches(&l.name) && !names.contains(&l.name) {
                        names.push(l.name);
                    }
                }
                let now: Vec<&str> = names.iter().map(String::as_str).collect();
                for p in patterns.unmatched(&now) {
                    note(&format!("{p} matches no interface"));
                }
            }
            Err(e) => {
                note(&e.to_string());
                return false;
            }
        }
    }
    for name in &names {
        let result = async {
            let link = link::resolve(&handle, name).await?;
            let found = owner::scan(&handle, &link, &me).await?;
            owner::remove_left(&handle, &link, &found).await
        }
        .await;
        match result {
            Ok(c) => {
                let mut line = match c.describe_removed() {
                    Some(r) => format!("on {name}, removed what flowlat processes no longer running left behind: {r}"),
                    None => format!("on {name}, nothing was left by a flowlat no longer running"),
                };
                if let Some(k) = c.describe_kept() {
                    line.push_str(&format!("; kept {k}"));
                }
                note(&line);
            }
            Err(e) => {
                note(&e.to_string());
                ok = false;
            }
        }
    }
    ok
}

/// `ARPHRD_RAWIP`: L3 devices such as some cellular modems.
const ARPHRD_RAWIP: u16 = 519;

/// How the interface's packets start, from its link type; `None` for link
/// types flowlat cannot read.
pub fn framing(l: &Link) -> Option<Framing> {
    match l.link_layer {
        LinkLayer::Ethernet | LinkLayer::Loopback => Some(Framing::Ethernet),
        LinkLayer::None | LinkLayer::Other(ARPHRD_RAWIP) => Some(Framing::Ip),
        LinkLayer::Other(_) => None,
    }
}
