//! Following the interfaces while a run lasts: those a pattern matches as
//! they appear, those that are renamed, moved, brought down or deleted,
//! the side each is measured from, and the workload behind each that is a
//! workload's.

use rtnetlink::Handle;

use super::{Error, Session, Sink, Stop, Watched};
use crate::host::attach::{self, framing};
use crate::host::ifaces::{side_of, Patterns, Side};
use crate::netlink::link::{self, Link, LinkEvent, LinkLayer, LinkState, Moved, Peer};
use crate::netlink::tc::{self, Attachment};
use crate::probe::Record;
use crate::sinks::clock::monotonic_ns;

/// `eth0, veth1 (from its peer's side)`: the interfaces of a note.
pub(super) fn list_names(links: &[(Link, Side)]) -> String {
    let names: Vec<String> = links
        .iter()
        .map(|(l, side)| match side {
            Side::Here => l.name.clone(),
            Side::Far => format!("{} (from its peer's side)", l.name),
        })
        .collect();
    names.join(", ")
}

/// The interfaces to attach to at start: every plain name (an error if one
/// is missing or of a link type flowlat cannot read, as ever), and every
/// The note for an interface a pattern matches that flowlat cannot read.
fn unreadable(name: &str) -> String {
    format!("{name} matches but has a link type flowlat cannot read; passed over")
}

/// interface a pattern matches (passed over with a note if unreadable).
pub(super) async fn initial_links(
    handle: &Handle,
    patterns: &Patterns,
    sink: &mut dyn Sink,
) -> Result<Vec<Link>, Error> {
    let mut links: Vec<Link> = Vec::new();
    for name in patterns.names() {
        let l = link::resolve(handle, name).await?;
        if let (None, LinkLayer::Other(t)) = (framing(&l), l.link_layer) {
            return Err(Error::Other(format!(
                "{} has link type {t} (see `ip -d link show {}`); flowlat reads Ethernet \
                 interfaces, lo, and L3 devices without a link header (tun, WireGuard)",
                l.name, l.name
            )));
        }
        if !links.iter().any(|k| k.index == l.index) {
            links.push(l);
        }
    }
    if !patterns.any_glob() {
        return Ok(links);
    }
    for state in link::dump(handle).await? {
        if !patterns.matches(&state.name) || links.iter().any(|k| k.index == state.index) {
            continue;
        }
        let l = state.link();
        if framing(&l).is_none() {
            sink.note(&unreadable(&l.name));
            continue;
        }
        links.push(l);
    }
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    // With nothing at all to attach to, the start line says it.
    if links.is_empty() {
        return Ok(links);
    }
    for p in patterns.unmatched(&names) {
        sink.note(&format!(
            "{p} matches no interface yet; flowlat attaches to those that appear"
        ));
    }
    Ok(links)
}

impl Session<'_> {
    /// Follows a change to an interface: ours, or one a pattern asks for;
    /// `Some` when flowlat should stop (every named interface gone).
    pub(super) async fn on_link_event(
        &mut self,
        event: LinkEvent,
        sink: &mut dyn Sink,
    ) -> Result<Option<Stop>, Error> {
        match event {
            LinkEvent::Changed(state) => self.changed(&state, sink).await,
            LinkEvent::Removed {
                index,
                moved: Some(moved),
                ..
            } => {
                // Our filters went with it: take them off there.
                if let Some(w) = self.watched.iter().find(|w| w.att.ifindex == index) {
                    let att = w.att.clone();
                    if let Err(why) = self.detach_moved(&att, moved).await {
                        sink.note(&format!(
                            "{} moved to another network namespace with flowlat's filters \
                             on it, and they could not be removed there: {why}",
                            att.ifname
                        ));
                    }
                }
                return Ok(self.removed(index, sink));
            }
            LinkEvent::Removed { index, .. } => return Ok(self.removed(index, sink)),
            LinkEvent::Missed => {
                // Some events were dropped: ask for every interface instead.
                let now = link::dump(self.handle).await?;
                let gone: Vec<u32> = self
                    .watched
                    .iter()
                    .map(|w| w.att.ifindex)
                    .filter(|i| !now.iter().any(|l| l.index == *i))
                    .collect();
                for index in gone {
                    if let Some(stop) = self.removed(index, sink) {
                        return Ok(Some(stop));
                    }
                }
                for state in &now {
                    self.changed(state, sink).await;
                }
            }
        }
        Ok(None)
    }

    async fn changed(&mut self, state: &LinkState, sink: &mut dyn Sink) {
        let Some(w) = self
            .watched
            .iter_mut()
            .find(|w| w.att.ifindex == state.index)
        else {
            if self.patterns.any_glob() && self.patterns.matches(&state.name) {
                self.appeared(state, sink).await;
            }
            return;
        };
        if !state.name.is_empty() && state.name != w.att.ifname {
            sink.note(&format!(
                "{} was renamed to {}; still measuring it",
                w.att.ifname, state.name
            ));
            w.att.ifname = state.name.clone();
            self.fanout.rename_iface(state.index, state.name.clone());
        }
        // A pattern's interfaces come and go by the hundred: their being
        // brought up or down (a new veth comes up, a deleted one goes down
        // first) is no news. A named interface's is.
        let named = self.patterns.names().any(|n| n == w.att.ifname);
        if state.up != w.up && !named {
            w.up = state.up;
        }
        if state.up != w.up {
            w.up = state.up;
            if state.up {
                sink.note(&format!("{} is up again; still measuring it", w.att.ifname));
            } else {
                sink.note(&format!(
                    "{} is down; flowlat stays attached and measures again when it is up",
                    w.att.ifname
                ));
            }
        }
        // A pair's far end moved into another namespace after we attached
        // (`ip link add` makes both ends here; a CNI then moves one): it is
        // measured from the peer's side from now on. Only that move is
        // followed: a peer seen no more is mostly a pair being deleted,
        // whose own deletion comes next.
        if w.side == Side::Here && side_of(&state.link(), self.node_view) == Side::Far {
            let ifname = w.att.ifname.clone();
            let pos = self
                .watched
                .iter()
                .position(|w| w.att.ifindex == state.index);
            if let Some(pos) = pos {
                let w = self.watched.remove(pos);
                if let Err(e) = tc::detach(self.handle, &w.att).await {
                    sink.note(&format!("{ifname}: {e}"));
                }
            }
            match self.attach(state, Side::Far).await {
                Ok(()) => sink.note(&format!(
                    "{ifname}: its peer moved to another network namespace; measured from the \
                     peer's side now{}",
                    self.workload_note(state.index)
                )),
                Err(e) => {
                    self.fanout.iface_gone(state.index, monotonic_ns());
                    sink.note(&format!(
                        "{ifname}: could not attach again after its peer moved (was measured \
                         from this side), so it is not measured any more: {e}"
                    ));
                }
            }
        }
    }

    /// Removes our filters from an interface that moved to another network
    /// namespace (they go with it, and would measure there, and outlive us).
    async fn detach_moved(&mut self, att: &Attachment, moved: Moved) -> Result<(), String> {
        let index = moved
            .index
            .ok_or("the kernel did not say its index there")?;
        let path = self
            .fanout
            .names_mut()
            .workloads()
            .namespace_file(self.handle, moved.netnsid)
            .await
            .ok_or("its new namespace was not found")?;
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let there = link::connect_in(std::os::fd::AsFd::as_fd(&file)).map_err(|e| e.to_string())?;
        let mut moved_att = att.clone();
        moved_att.ifindex = index;
        tc::detach(&there, &moved_att)
            .await
            .map_err(|e| e.to_string())
    }

    /// An interface that a pattern matches appeared (or was renamed into
    /// one): attach to it. Failing here is normal on a busy node (it may be
    /// gone, renamed or moved already) and stops nothing.
    async fn appeared(&mut self, state: &LinkState, sink: &mut dyn Sink) {
        let l = state.link();
        if framing(&l).is_none() {
            sink.note(&unreadable(&l.name));
            return;
        }
        let side = side_of(&l, self.node_view);
        match self.attach(state, side).await {
            Ok(()) => sink.note(&format!(
                "attached to {}{}",
                list_names(&[(l, side)]),
                self.workload_note(state.index)
            )),
            Err(e) => sink.note(&format!("{} appeared, but: {e}", state.name)),
        }
    }

    /// Attaches to `state`'s interface and watches it.
    async fn attach(&mut self, state: &LinkState, side: Side) -> Result<(), Error> {
        let l = state.link();
        let (att, cleanup) =
            attach::attach_link(self.handle, self.probe, &l, side, self.me).await?;
        self.fanout.add_iface(l.index, l.name.clone());
        self.watched.push(Watched {
            att,
            up: state.up,
            side,
        });
        if let Some(removed) = cleanup.describe_removed() {
            self.notes.push(format!(
                "on {}, removed what flowlat processes no longer running left behind: {removed}",
                l.name
            ));
        }
        self.name_workload(l.index, side, l.peer).await;
        Ok(())
    }

    /// `; workload NAME` when the interface's workload is known.
    fn workload_note(&mut self, ifindex: u32) -> String {
        match self
            .fanout
            .names_mut()
            .workloads()
            .iface(ifindex)
            .and_then(|w| w.name.clone())
        {
            Some(name) => format!("; workload {name}"),
            None => String::new(),
        }
    }

    /// Finds the workload behind an interface measured from its peer's side.
    pub(super) async fn name_workload(&mut self, ifindex: u32, side: Side, peer: Option<Peer>) {
        let (workloads, cgroups) = self.fanout.names_mut().workloads_and_cgroups();
        match (side, peer) {
            (Side::Far, Some(peer)) => {
                workloads.resolve(self.handle, ifindex, peer, cgroups).await;
            }
            _ => workloads.forget(ifindex),
        }
    }

    /// Looks again for the workloads of the interfaces of `records` whose
    /// names may still change (a pod whose process started after its veth
    /// was attached), before the records are named.
    pub(super) async fn recheck_workloads(&mut self, records: &[Record]) {
        // Each interface once, for its earliest attempt here.
        let mut due: Vec<(u32, u64)> = Vec::new();
        {
            let w = self.fanout.names_mut().workloads();
            for r in records {
                let began = r.end_ns.saturating_sub(r.total_ns.unwrap_or(0));
                if !due.iter().any(|(i, _)| *i == r.ifindex) && w.due(r.ifindex, began) {
                    due.push((r.ifindex, began));
                }
            }
        }
        for (ifindex, began) in due {
            let (workloads, cgroups) = self.fanout.names_mut().workloads_and_cgroups();
            workloads
                .recheck(self.handle, ifindex, began, cgroups)
                .await;
        }
    }

    /// Looks again, on the sweep's tick, for the workloads whose names may
    /// still change.
    pub(super) async fn refresh_workloads(&mut self) {
        let ifindexes: Vec<u32> = self.watched.iter().map(|w| w.att.ifindex).collect();
        for ifindex in ifindexes {
            let (workloads, cgroups) = self.fanout.names_mut().workloads_and_cgroups();
            workloads.recheck(self.handle, ifindex, 0, cgroups).await;
        }
    }

    /// Stops measuring a deleted interface: its filters and qdisc went with it.
    fn removed(&mut self, index: u32, sink: &mut dyn Sink) -> Option<Stop> {
        let pos = self.watched.iter().position(|w| w.att.ifindex == index)?;
        let gone = self.watched.remove(pos);
        self.fanout.iface_gone(index, monotonic_ns());
        if self.patterns.any_glob() {
            sink.note(&format!(
                "{} is gone (deleted, or moved to another network namespace); measuring {} \
                 interface{}",
                gone.att.ifname,
                self.watched.len(),
                if self.watched.len() == 1 { "" } else { "s" }
            ));
            return None;
        }
        if self.watched.is_empty() {
            sink.note(&format!(
                "{} is gone (deleted, or moved to another network namespace)",
                gone.att.ifname
            ));
            return Some(Stop::NothingLeft(vec![gone.att.ifname]));
        }
        let left: Vec<&str> = self.watched.iter().map(|w| w.att.ifname.as_str()).collect();
        sink.note(&format!(
            "{} is gone (deleted, or moved to another network namespace); still measuring {}",
            gone.att.ifname,
            left.join(", ")
        ));
        None
    }
}
