//! Interfaces: opening the rtnetlink connection, resolving a name to the
//! index and link-layer type that the tc requests and the classifier need, and
//! following what happens to interfaces afterwards (`RTNLGRP_LINK`).

use std::os::fd::BorrowedFd;
use std::pin::Pin;

use futures_util::stream::{Stream, StreamExt};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, MulticastGroup};

use super::error::{NetlinkError, Operation};

/// The link-layer type of an interface, from `ifinfomsg.ifi_type` (`ARPHRD_*`
/// in `include/uapi/linux/if_arp.h`). It tells whether packets seen by a tc
/// classifier start with an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    /// `ARPHRD_ETHER`: frames start with a 14-byte Ethernet header.
    Ethernet,
    /// `ARPHRD_LOOPBACK`: `lo`, which also carries an Ethernet header (zeroed addresses).
    Loopback,
    /// `ARPHRD_NONE`: no link-layer header at all (tun, wireguard): packets start at the IP header.
    None,
    /// Any other `ARPHRD_*` value.
    Other(u16),
}

impl From<LinkLayerType> for LinkLayer {
    fn from(t: LinkLayerType) -> Self {
        match t {
            LinkLayerType::Ether => LinkLayer::Ethernet,
            LinkLayerType::Loopback => LinkLayer::Loopback,
            LinkLayerType::None => LinkLayer::None,
            other => LinkLayer::Other(u16::from(other)),
        }
    }
}

/// A network interface as `RTM_GETLINK` reports it (`struct ifinfomsg` plus
/// `IFLA_IFNAME`, `IFLA_LINKINFO` and `IFLA_LINK_NETNSID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `ifi_index`.
    pub index: u32,
    /// `IFLA_IFNAME`.
    pub name: String,
    /// From `ifi_type`.
    pub link_layer: LinkLayer,
    /// Where the other end of a pair lives, when it is another namespace.
    pub peer: Option<Peer>,
}

/// The other end of a paired device (`veth`, `netkit`) that lives in another
/// network namespace: `IFLA_LINK_NETNSID` (the namespace's id as seen from
/// ours, `RTM_GETNSID`) and `IFLA_LINK` (its index there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer namespace's nsid in the namespace that asked.
    pub netnsid: i32,
    /// The peer's `ifi_index` in its own namespace (0 if not sent).
    pub index: u32,
}

/// A pair's far end in another namespace, if `m` describes a `veth` or
/// `netkit` device whose peer lives elsewhere. Other devices that carry
/// `IFLA_LINK_NETNSID` (tunnels whose underlay is in another namespace) are
/// not pairs: their far side is not one workload.
fn peer_of(m: &LinkMessage) -> Option<Peer> {
    let paired = m.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth | InfoKind::Netkit))),
        _ => false,
    });
    if !paired {
        return None;
    }
    let netnsid = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkNetNsId(id) if *id >= 0 => Some(*id),
        _ => None,
    })?;
    let index = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Link(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(0);
    Some(Peer { netnsid, index })
}

/// Opens a `NETLINK_ROUTE` socket and spawns its connection task on the current
/// tokio runtime. The socket belongs to the network namespace of the calling
/// thread, so call this from the namespace the interfaces live in.
///
/// Extended acks (`NETLINK_EXT_ACK`) are asked for so that errors carry the
/// kernel's explanation; kernels without them still work.
pub fn connect() -> Result<Handle, NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
    let (mut connection, handle, _unsolicited) =
        rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    let socket = connection.socket_mut().socket_mut();
    // Both are optional niceties (since 4.12 and 4.3): a kernel without them
    // still answers, only with bare errnos and the full request echoed back.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    runtime.spawn(connection);
    Ok(handle)
}

/// Opens a `NETLINK_ROUTE` socket in the network namespace `ns` (an fd of
/// an nsfs file) rather than the caller's, as [`connect`] does otherwise: a
/// thread of its own enters the namespace (`setns(CLONE_NEWNET)`) only to
/// create the socket, which stays bound to that namespace wherever it is
/// used from.
pub fn connect_in(ns: BorrowedFd<'_>) -> Result<Handle, NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
    let ns = ns.try_clone_to_owned().map_err(NetlinkError::Socket)?;
    let rt = runtime.clone();
    let made = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        // The socket registers with the runtime's reactor as it is made.
        let _in_runtime = rt.enter();
        rtnetlink::new_connection()
    })
    .join()
    .map_err(|_| {
        NetlinkError::Socket(std::io::Error::other(
            "the thread that opens a socket in another namespace failed",
        ))
    })?;
    let (connection, handle, _unsolicited) = made.map_err(NetlinkError::Socket)?;
    runtime.spawn(connection);
    Ok(handle)
}

/// Looks up the interface called `name` with `RTM_GETLINK` (`IFLA_IFNAME`).
/// A missing interface gives [`NetlinkError::NoSuchInterface`] naming it.
pub async fn resolve(handle: &Handle, name: &str) -> Result<Link, NetlinkError> {
    // The kernel would refuse these with EINVAL before looking; they can't exist either way.
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
        return Err(NetlinkError::NoSuchInterface {
            name: name.to_string(),
        });
    }
    let mut replies = handle.link().get().match_name(name).execute();
    let message = match replies.next().await {
        Some(Ok(m)) => m,
        Some(Err(rtnetlink::Error::NetlinkError(e))) => {
            let errno = -e.raw_code();
            return Err(if errno == libc::ENODEV {
                NetlinkError::NoSuchInterface {
                    name: name.to_string(),
                }
            } else {
                NetlinkError::Kernel {
                    op: Operation::ResolveLink,
                    ifname: name.to_string(),
                    errno,
                    message: None,
                }
            });
        }
        Some(Err(e)) => {
            return Err(NetlinkError::Protocol {
                op: Operation::ResolveLink,
                ifname: name.to_string(),
                detail: e.to_string(),
            })
        }
        None => {
            return Err(NetlinkError::Protocol {
                op: Operation::ResolveLink,
                ifname: name.to_string(),
                detail: "the kernel sent no answer".to_string(),
            })
        }
    };
    Ok(link_from_message(message, name))
}

/// Looks up interface `index` with `RTM_GETLINK` (`ifi_index`). `Ok(None)`
/// when no interface has that index any more (`ENODEV`).
pub async fn by_index(handle: &Handle, index: u32) -> Result<Option<LinkState>, NetlinkError> {
    let ifname = format!("interface #{index}");
    let mut replies = handle.link().get().match_index(index).execute();
    match replies.next().await {
        Some(Ok(m)) => Ok(Some(LinkState::from_message(&m))),
        Some(Err(rtnetlink::Error::NetlinkError(e))) if -e.raw_code() == libc::ENODEV => Ok(None),
        Some(Err(rtnetlink::Error::NetlinkError(e))) => Err(NetlinkError::Kernel {
            op: Operation::ResolveLink,
            ifname,
            errno: -e.raw_code(),
            message: None,
        }),
        Some(Err(e)) => Err(NetlinkError::Protocol {
            op: Operation::ResolveLink,
            ifname,
            detail: e.to_string(),
        }),
        None => Err(NetlinkError::Protocol {
            op: Operation::ResolveLink,
            ifname,
            detail: "the kernel sent no answer".to_string(),
        }),
    }
}

/// What an `RTM_NEWLINK` message says about an interface: `ifi_index`,
/// `IFLA_IFNAME`, `IFF_UP` of `ifi_flags`, `ifi_type` and where a pair's
/// other end lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// `ifi_index`.
    pub index: u32,
    /// `IFLA_IFNAME`; empty if the kernel left it out.
    pub name: String,
    /// Whether `IFF_UP` is set (administratively up).
    pub up: bool,
    /// From `ifi_type`.
    pub link_layer: LinkLayer,
    /// A `veth`/`netkit` peer in another namespace.
    pub peer: Option<Peer>,
}

impl LinkState {
    fn from_message(m: &LinkMessage) -> LinkState {
        LinkState {
            index: m.header.index,
            name: name_of(m).unwrap_or_default(),
            up: m.header.flags.contains(LinkFlags::Up),
            link_layer: m.header.link_layer_type.into(),
            peer: peer_of(m),
        }
    }

    /// The interface as [`resolve`] would describe it.
    pub fn link(&self) -> Link {
        Link {
            index: self.index,
            name: self.name.clone(),
            link_layer: self.link_layer,
            peer: self.peer,
        }
    }
}

/// Every interface of the namespace (`RTM_GETLINK` with `NLM_F_DUMP`), in
/// index order.
pub async fn dump(handle: &Handle) -> Result<Vec<LinkState>, NetlinkError> {
    let mut replies = handle.link().get().execute();
    let mut all = Vec::new();
    while let Some(reply) = replies.next().await {
        match reply {
            Ok(m) => all.push(LinkState::from_message(&m)),
            Err(rtnetlink::Error::NetlinkError(e)) => {
                return Err(NetlinkError::Kernel {
                    op: Operation::ResolveLink,
                    ifname: "every interface".to_string(),
                    errno: -e.raw_code(),
                    message: None,
                })
            }
            Err(e) => {
                return Err(NetlinkError::Protocol {
                    op: Operation::ResolveLink,
                    ifname: "every interface".to_string(),
                    detail: e.to_string(),
                })
            }
        }
    }
    all.sort_by_key(|l| l.index);
    Ok(all)
}

/// A change to some interface of this network namespace, as the kernel
/// announces it to `RTNLGRP_LINK` members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// `RTM_NEWLINK`: an interface appeared or changed (name, flags, anything).
    Changed(LinkState),
    /// `RTM_DELLINK`: an interface was deleted or moved to another namespace.
    Removed {
        /// `ifi_index`.
        index: u32,
        /// `IFLA_IFNAME`; empty if the kernel left it out.
        name: String,
        /// Where it went, when it was moved rather than deleted.
        moved: Option<Moved>,
    },
    /// The socket's receive buffer overflowed (`ENOBUFS`, reported as
    /// `NLMSG_OVERRUN`): some events were lost, so ask for the state again
    /// (see [`by_index`]).
    Missed,
}

/// Where an interface moved to: `IFLA_NEW_NETNSID` (the namespace's id as
/// seen from ours) and `IFLA_NEW_IFINDEX` (its index there), which the
/// kernel adds to the `RTM_DELLINK` of a move (Linux 4.15 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The namespace's nsid in ours.
    pub netnsid: i32,
    /// Its `ifi_index` there, when sent.
    pub index: Option<u32>,
}

fn moved_of(m: &LinkMessage) -> Option<Moved> {
    let netnsid = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::NewNetnsId(id) if *id >= 0 => Some(*id),
        _ => None,
    })?;
    let index = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::NewIfIndex(i) => u32::try_from(*i).ok(),
        _ => None,
    });
    Some(Moved { netnsid, index })
}

type Unsolicited = (NetlinkMessage<RouteNetlinkMessage>, SocketAddr);

/// A subscription to the `RTNLGRP_LINK` multicast group on a netlink socket of
/// its own, so that events are never mixed with the answers to requests.
pub struct LinkEvents {
    messages: Pin<Box<dyn Stream<Item = Unsolicited> + Send>>,
}

/// A receive buffer big enough for a burst of link events (each is a few
/// hundred bytes to a few KiB) on a host that creates many interfaces at once.
const EVENT_BUFFER: usize = 1 << 20;

/// Joins `RTNLGRP_LINK` and spawns the connection task on the current tokio
/// runtime. Events are queued from this call on, so subscribe before looking
/// interfaces up and nothing that happens to them afterwards is missed.
pub fn watch() -> Result<LinkEvents, NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
    let (mut connection, _handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(NetlinkError::Socket)?;
    // The kernel caps it at net.core.rmem_max; whatever we get is still correct,
    // since an overflow is reported as `LinkEvent::Missed`.
    let _ = connection
        .socket_mut()
        .socket_mut()
        .set_rx_buf_sz(EVENT_BUFFER);
    runtime.spawn(connection);
    Ok(LinkEvents {
        messages: Box::pin(messages),
    })
}

impl LinkEvents {
    /// The next link event; `None` when the connection to the kernel has ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        while let Some((message, _)) = self.messages.next().await {
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    return Some(LinkEvent::Changed(LinkState::from_message(&m)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    return Some(LinkEvent::Removed {
                        index: m.header.index,
                        name: name_of(&m).unwrap_or_default(),
                        moved: moved_of(&m),
                    })
                }
                NetlinkPayload::Overrun(_) => return Some(LinkEvent::Missed),
                _ => {}
            }
        }
        None
    }
}

fn name_of(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn link_from_message(message: LinkMessage, asked: &str) -> Link {
    // The kernel always sends IFLA_IFNAME; the name we asked for is the same anyway.
    let name = name_of(&message).unwrap_or_else(|| asked.to_string());
    Link {
        index: message.header.index,
        name,
        link_layer: message.header.link_layer_type.into(),
        peer: peer_of(&message),
    }
}
