//! Interfaces: opening the rtnetlink connection and resolving a name to the
//! index and link-layer type that the tc requests and the classifier need.

use futures_util::stream::StreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::Handle;

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

/// A network interface as `RTM_GETLINK` reports it (`struct ifinfomsg` plus `IFLA_IFNAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `ifi_index`.
    pub index: u32,
    /// `IFLA_IFNAME`.
    pub name: String,
    /// From `ifi_type`.
    pub link_layer: LinkLayer,
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

fn link_from_message(message: LinkMessage, asked: &str) -> Link {
    let name = message
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        // The kernel always sends IFLA_IFNAME; the name we asked for is the same anyway.
        .unwrap_or_else(|| asked.to_string());
    Link {
        index: message.header.index,
        name,
        link_layer: message.header.link_layer_type.into(),
    }
}
