//! Network namespace ids: which id a namespace has as seen from ours
//! (`RTM_GETNSID`, `net/core/net_namespace.c`, `rtnl_net_getid`). The kernel
//! names the namespace of a pair's far end by this id (`IFLA_LINK_NETNSID`),
//! so it is how an interface leads to the processes behind it.

use std::os::fd::{AsRawFd, BorrowedFd};

use futures_util::stream::StreamExt;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::Handle;

use super::error::{NetlinkError, Operation};

/// The id that the network namespace open at `ns` (an fd of
/// `/proc/PID/ns/net` or of a `/run/netns` entry) has in the namespace of
/// `handle`'s socket: `RTM_GETNSID` with `NETNSA_FD`. `Ok(None)` when it has
/// none (`NETNSA_NSID` is -1: no device pairs the two namespaces, and nothing
/// asked for an id).
pub async fn nsid_of(handle: &Handle, ns: BorrowedFd<'_>) -> Result<Option<i32>, NetlinkError> {
    let fail = |detail: String| NetlinkError::Protocol {
        op: Operation::GetNsid,
        ifname: "a network namespace".to_string(),
        detail,
    };
    let fd = u32::try_from(ns.as_raw_fd()).map_err(|_| fail("a negative fd".to_string()))?;
    let mut message = NsidMessage::default();
    message.attributes.push(NsidAttribute::Fd(fd));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(message));
    request.header.flags = NLM_F_REQUEST;
    let mut replies = handle
        .clone()
        .request(request)
        .map_err(|e| fail(e.to_string()))?;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                let id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                });
                return Ok(id.filter(|id| *id >= 0));
            }
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(NetlinkError::Kernel {
                        op: Operation::GetNsid,
                        ifname: "a network namespace".to_string(),
                        errno: -code.get(),
                        message: None,
                    });
                }
            }
            _ => {}
        }
    }
    Err(fail("the kernel sent no answer".to_string()))
}
