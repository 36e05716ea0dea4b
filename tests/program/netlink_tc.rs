//! The netlink layer against a real kernel: clsact and cls_bpf attach/detach on
//! a veth pair inside a throwaway network namespace. Needs root.

use std::os::fd::{AsFd, OwnedFd};

use flowlat::bpf::insn::{Insn, BPF_EXIT};
use flowlat::bpf::sys::{prog_load, BPF_PROG_TYPE_SCHED_CLS};
use flowlat::netlink::link::{self, Link, LinkLayer};
use flowlat::netlink::tc::{self, Attachment, FilterInfo, Hook, ETH_P_ALL};
use flowlat::netlink::{NetlinkError, Operation};
use kit::net::NetNs;

/// `BPF_PROG_TYPE_SOCKET_FILTER`: a program type cls_bpf refuses.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// `r0 = -1; exit`: for a direct-action classifier, TC_ACT_UNSPEC (carry on).
const RETURN_MINUS_ONE: [Insn; 2] = [
    Insn::new(0xb7, 0, 0, 0, -1), // mov64 r0, -1
    Insn::new(BPF_EXIT, 0, 0, 0, 0),
];

fn load(prog_type: u32) -> OwnedFd {
    prog_load(prog_type, &RETURN_MINUS_ONE, "GPL", "flt_test")
        .unwrap_or_else(|e| panic!("loading the test program: {e}"))
}

/// A namespace holding the veth pair v0–v1.
fn veth_ns(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns
}

/// `tc ARGS` inside `ns`, its standard output.
fn tc_out(ns: &NetNs, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.exec("tc", args).stdout).into_owned()
}

/// What tc shows of v0: its qdiscs and the filters of both hooks.
fn snapshot(ns: &NetNs) -> String {
    format!(
        "{}---\n{}---\n{}",
        tc_out(ns, &["qdisc", "show", "dev", "v0"]),
        tc_out(ns, &["filter", "show", "dev", "v0", "ingress"]),
        tc_out(ns, &["filter", "show", "dev", "v0", "egress"]),
    )
}

/// Loads a fresh classifier and attaches it at both hooks of `link` as `name`.
async fn attach_new(
    handle: &rtnetlink::Handle,
    link: &Link,
    name: &str,
) -> Result<Attachment, NetlinkError> {
    let prog = load(BPF_PROG_TYPE_SCHED_CLS);
    tc::attach(handle, link, prog.as_fd(), prog.as_fd(), name).await
}

async fn v0(handle: &rtnetlink::Handle) -> Link {
    link::resolve(handle, "v0").await.expect("resolving v0")
}

async fn filters(handle: &rtnetlink::Handle, ifindex: u32, hook: Hook) -> Vec<FilterInfo> {
    tc::list_filters(handle, ifindex, hook)
        .await
        .expect("listing filters")
}

/// Our filter as the dump shows it.
fn find(list: &[FilterInfo], att: &Attachment, hook: Hook) -> Option<FilterInfo> {
    let ours = att.filter(hook);
    list.iter()
        .find(|f| f.prio == ours.prio && f.handle == ours.handle && f.kind == "bpf")
        .cloned()
}

fn add_foreign_filters(ns: &NetNs, first_pref: &str, second_pref: &str) {
    let mirror: &[&str] = &["action", "mirred", "egress", "mirror", "dev", "v1"];
    for hook in ["ingress", "egress"] {
        kit::kernel::add_foreign_filters(
            ns,
            "v0",
            hook,
            (first_pref, mirror),
            (second_pref, mirror),
        );
    }
}

#[test]
fn attach_creates_clsact_and_detach_removes_all() {
    let ns = veth_ns("fresh");
    let att = ns.netlink(|h| async move {
        let link = v0(&h).await;
        assert_eq!(link.link_layer, LinkLayer::Ethernet);
        let att = attach_new(&h, &link, "flowlat_test").await.expect("attach");
        assert!(att.created_qdisc);
        assert!(tc::has_clsact(&h, link.index).await.expect("qdisc query"));
        for hook in Hook::BOTH {
            let list = filters(&h, link.index, hook).await;
            assert_eq!(list.len(), 1, "{hook}: {list:?}");
            let f = find(&list, &att, hook).expect("our filter is listed");
            assert_eq!(f.bpf_name.as_deref(), Some("flowlat_test"));
            assert!(f.direct_action);
            assert_eq!(f.protocol, ETH_P_ALL);
            assert_eq!(f.chain, 0);
            assert!(f.bpf_prog_id.is_some());
            assert_eq!(att.filter(hook).prog_id, f.bpf_prog_id);
            assert!(!att.filter(hook).behind_others);
        }
        att
    });
    assert!(tc_out(&ns, &["qdisc", "show", "dev", "v0"]).contains("clsact"));
    for hook in ["ingress", "egress"] {
        let shown = tc_out(&ns, &["filter", "show", "dev", "v0", hook]);
        assert!(shown.contains("flowlat_test"), "{hook}: {shown}");
        assert!(shown.contains("direct-action"), "{hook}: {shown}");
        assert!(shown.contains("protocol all"), "{hook}: {shown}");
    }

    let ifindex = att.ifindex;
    ns.netlink(move |h| async move {
        tc::detach(&h, &att).await.expect("detach");
        assert!(!tc::has_clsact(&h, ifindex).await.expect("qdisc query"));
        for hook in Hook::BOTH {
            assert!(filters(&h, ifindex, hook).await.is_empty());
        }
    });
    assert!(!tc_out(&ns, &["qdisc", "show", "dev", "v0"]).contains("clsact"));
    for hook in ["ingress", "egress"] {
        assert_eq!(tc_out(&ns, &["filter", "show", "dev", "v0", hook]), "");
    }
}

#[test]
fn attach_goes_ahead_of_existing_filters_and_detach_restores_them() {
    let ns = veth_ns("existing");
    ns.exec("tc", &["qdisc", "add", "dev", "v0", "clsact"]);
    add_foreign_filters(&ns, "10", "20");
    let before = snapshot(&ns);

    let att = ns.netlink(|h| async move {
        let link = v0(&h).await;
        let att = attach_new(&h, &link, "flowlat_test").await.expect("attach");
        assert!(!att.created_qdisc);
        for hook in Hook::BOTH {
            let ours = att.filter(hook);
            assert_eq!(ours.prio, 9, "{hook}: just ahead of pref 10");
            assert!(!ours.behind_others);
            let list = filters(&h, link.index, hook).await;
            assert!(find(&list, &att, hook).is_some(), "{hook}: {list:?}");
            // The others are all still there and all behind ours.
            let others: Vec<_> = list.iter().filter(|f| f.prio != ours.prio).collect();
            assert!(
                others.iter().any(|f| f.kind == "u32" && f.prio == 10),
                "{list:?}"
            );
            assert!(
                others.iter().any(|f| f.kind == "bpf" && f.prio == 20),
                "{list:?}"
            );
            assert!(others.iter().all(|f| f.prio > ours.prio));
            // Ours is the first that the kernel lists, i.e. the first it runs.
            assert_eq!(list.first().map(|f| f.prio), Some(ours.prio));
        }
        att
    });
    let during = snapshot(&ns);
    assert!(during.contains("pref 9 bpf"), "{during}");

    ns.netlink(move |h| async move {
        tc::detach(&h, &att).await.expect("detach");
    });
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn attach_behind_a_filter_at_prio_one_is_reported() {
    let ns = veth_ns("prioone");
    ns.exec("tc", &["qdisc", "add", "dev", "v0", "clsact"]);
    add_foreign_filters(&ns, "1", "7");
    let before = snapshot(&ns);

    let att = ns.netlink(|h| async move {
        let link = v0(&h).await;
        attach_new(&h, &link, "flowlat_test").await.expect("attach")
    });
    for hook in Hook::BOTH {
        assert_eq!(att.filter(hook).prio, 8, "{hook}: just after the last");
        assert!(att.filter(hook).behind_others);
    }
    ns.netlink(move |h| async move {
        tc::detach(&h, &att).await.expect("detach");
    });
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn ingress_qdisc_blocks_attach_and_nothing_is_added() {
    let ns = veth_ns("ingressq");
    ns.exec("tc", &["qdisc", "add", "dev", "v0", "ingress"]);
    #[rustfmt::skip]
    ns.exec("tc", &["filter", "add", "dev", "v0", "parent", "ffff:", "pref", "5", "protocol", "ip",
        "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "v1"]);
    let before = snapshot(&ns);

    let err = ns.netlink(|h| async move {
        let link = v0(&h).await;
        let result = attach_new(&h, &link, "flowlat_test").await;
        assert!(!tc::has_clsact(&h, link.index).await.expect("qdisc query"));
        result.expect_err("attach must refuse an ingress qdisc")
    });
    match &err {
        NetlinkError::IngressSlotTaken { ifname, kind } => {
            assert_eq!(ifname, "v0");
            assert_eq!(kind, "ingress");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("v0") && text.contains("`ingress` qdisc"),
        "{text}"
    );
    assert!(text.contains("tc qdisc show dev v0"), "{text}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn missing_interface_is_named() {
    let ns = veth_ns("missing");
    let (missing, too_long, vanished) = ns.netlink(|h| async move {
        let missing = link::resolve(&h, "nosuch0")
            .await
            .expect_err("no such interface");
        let too_long = link::resolve(&h, "averyverylongname0")
            .await
            .expect_err("name too long");
        // An interface deleted between lookup and attach.
        let link = v0(&h).await;
        h.link()
            .del(link.index)
            .execute()
            .await
            .expect("deleting v0");
        let vanished = attach_new(&h, &link, "flowlat_test")
            .await
            .expect_err("attach to a deleted interface");
        (missing, too_long, vanished)
    });
    assert!(matches!(&missing, NetlinkError::NoSuchInterface { name } if name == "nosuch0"));
    let text = missing.to_string();
    assert!(
        text.contains("\"nosuch0\"") && text.contains("ip link"),
        "{text}"
    );
    let text = too_long.to_string();
    assert!(
        text.contains("averyverylongname0") && text.contains("15 bytes"),
        "{text}"
    );
    assert_eq!(vanished.errno(), Some(libc::ENODEV), "{vanished:?}");
    let text = vanished.to_string();
    assert!(text.contains("v0") && text.contains("ip link"), "{text}");
}

/// Two attachments on v0, "flowlat_a" then "flowlat_b", each with a
/// classifier of its own.
async fn attach_two(handle: &rtnetlink::Handle, link: &Link) -> (Attachment, Attachment) {
    let a = attach_new(handle, link, "flowlat_a")
        .await
        .expect("first attach");
    let b = attach_new(handle, link, "flowlat_b")
        .await
        .expect("second attach");
    (a, b)
}

#[test]
fn two_attachments_coexist_and_the_creator_removes_clsact_last() {
    let ns = veth_ns("twoa");
    let (first, second) = ns.netlink(|h| async move {
        let link = v0(&h).await;
        let (a, b) = attach_two(&h, &link).await;
        assert!(a.created_qdisc);
        assert!(!b.created_qdisc);
        for hook in Hook::BOTH {
            let list = filters(&h, link.index, hook).await;
            assert_eq!(list.len(), 2, "{list:?}");
            let fa = find(&list, &a, hook).expect("first filter");
            let fb = find(&list, &b, hook).expect("second filter");
            assert_eq!(fa.bpf_name.as_deref(), Some("flowlat_a"));
            assert_eq!(fb.bpf_name.as_deref(), Some("flowlat_b"));
            assert_ne!(fa.bpf_prog_id, fb.bpf_prog_id);
            // The later one went ahead of the earlier one.
            assert!(fb.prio < fa.prio);
        }
        (a, b)
    });
    let ifindex = first.ifindex;

    ns.netlink(move |h| async move {
        tc::detach(&h, &second).await.expect("detaching the second");
        assert!(tc::has_clsact(&h, ifindex).await.expect("qdisc query"));
        for hook in Hook::BOTH {
            let list = filters(&h, ifindex, hook).await;
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(
                find(&list, &first, hook)
                    .and_then(|f| f.bpf_name)
                    .as_deref(),
                Some("flowlat_a")
            );
        }
        tc::detach(&h, &first).await.expect("detaching the first");
        assert!(!tc::has_clsact(&h, ifindex).await.expect("qdisc query"));
    });
    assert!(!tc_out(&ns, &["qdisc", "show", "dev", "v0"]).contains("clsact"));
}

#[test]
fn detaching_the_creator_first_keeps_clsact_for_the_other() {
    let ns = veth_ns("twob");
    let (first, second) = ns.netlink(|h| async move {
        let link = v0(&h).await;
        attach_two(&h, &link).await
    });
    let ifindex = first.ifindex;

    ns.netlink(move |h| async move {
        tc::detach(&h, &first).await.expect("detaching the first");
        // The first created the clsact, but the second's filters are on it.
        assert!(tc::has_clsact(&h, ifindex).await.expect("qdisc query"));
        for hook in Hook::BOTH {
            let list = filters(&h, ifindex, hook).await;
            assert_eq!(list.len(), 1, "{list:?}");
            assert!(find(&list, &second, hook).is_some(), "{list:?}");
        }
        tc::detach(&h, &second).await.expect("detaching the second");
        for hook in Hook::BOTH {
            assert!(filters(&h, ifindex, hook).await.is_empty());
        }
        // The second did not create the clsact, so it leaves it (empty) in place.
        assert!(tc::has_clsact(&h, ifindex).await.expect("qdisc query"));
    });
}

#[test]
fn failed_egress_add_leaves_nothing_behind() {
    let ns = veth_ns("rollback");
    let err = ns.netlink(|h| async move {
        let link = v0(&h).await;
        let good = load(BPF_PROG_TYPE_SCHED_CLS);
        let wrong_type = load(BPF_PROG_TYPE_SOCKET_FILTER);
        let result = tc::attach(&h, &link, good.as_fd(), wrong_type.as_fd(), "flowlat_test").await;
        assert!(!tc::has_clsact(&h, link.index).await.expect("qdisc query"));
        for hook in Hook::BOTH {
            assert!(filters(&h, link.index, hook).await.is_empty());
        }
        result.expect_err("egress attach with a socket filter must fail")
    });
    match &err {
        NetlinkError::Kernel {
            op, ifname, errno, ..
        } => {
            assert_eq!(*op, Operation::AddFilter(Hook::Egress));
            assert_eq!(ifname, "v0");
            assert_eq!(*errno, libc::EINVAL);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("egress") && text.contains("v0"), "{text}");
    assert!(!tc_out(&ns, &["qdisc", "show", "dev", "v0"]).contains("clsact"));
}

#[test]
fn failed_egress_add_restores_an_existing_setup() {
    let ns = veth_ns("rollbackx");
    ns.exec("tc", &["qdisc", "add", "dev", "v0", "clsact"]);
    add_foreign_filters(&ns, "10", "20");
    let before = snapshot(&ns);
    ns.netlink(|h| async move {
        let link = v0(&h).await;
        let good = load(BPF_PROG_TYPE_SCHED_CLS);
        let wrong_type = load(BPF_PROG_TYPE_SOCKET_FILTER);
        tc::attach(&h, &link, good.as_fd(), wrong_type.as_fd(), "flowlat_test")
            .await
            .expect_err("egress attach with a socket filter must fail");
    });
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn detach_spares_a_filter_that_replaced_ours() {
    let ns = veth_ns("replaced");
    let att = ns.netlink(|h| async move {
        let link = v0(&h).await;
        attach_new(&h, &link, "flowlat_test").await.expect("attach")
    });
    let prio = att.ingress.prio.to_string();
    #[rustfmt::skip]
    ns.exec("tc", &["filter", "replace", "dev", "v0", "ingress", "pref", &prio, "handle", "1",
        "protocol", "all", "bpf", "bytecode", "1,6 0 0 4294967295", "action", "mirred", "egress",
        "mirror", "dev", "v1"]);
    let ingress_before = tc_out(&ns, &["filter", "show", "dev", "v0", "ingress"]);
    assert!(ingress_before.contains("bytecode"), "{ingress_before}");

    ns.netlink(move |h| async move {
        tc::detach(&h, &att).await.expect("detach");
    });
    // Our egress filter is gone; the ingress one is someone else's now and stays,
    // and with it the clsact.
    assert_eq!(tc_out(&ns, &["filter", "show", "dev", "v0", "egress"]), "");
    assert_eq!(
        tc_out(&ns, &["filter", "show", "dev", "v0", "ingress"]),
        ingress_before
    );
    assert!(tc_out(&ns, &["qdisc", "show", "dev", "v0"]).contains("clsact"));
}
