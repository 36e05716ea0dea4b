//! What a SYN costs with each kind of filter set, matching it and not, beside
//! no filter: every SYN a new connection (as in the per-handshake table), run
//! once beside one run of the empty classifier, the settings taking turns. A
//! kept attempt is then answered (unmeasured), so the table stays as it was.

use std::net::IpAddr;

use flowlat::probe::{Dir, Filter, Hook};

use crate::frames;
use crate::kernel::{net, Rig, TURN};
use kit::cgroup;

/// One filter setting and whether the measured SYNs match it.
pub struct Setting {
    pub key: &'static str,
    pub what: &'static str,
    pub filter: Filter,
}

/// A setting, measured: per family, flowlat's and the empty classifier's
/// time of every SYN.
pub struct FilterResult {
    pub v4: (Vec<u32>, Vec<u32>),
    pub v6: (Vec<u32>, Vec<u32>),
}

impl FilterResult {
    pub fn v4_ns(&self) -> i64 {
        net(&self.v4.0, &self.v4.1)
    }
    pub fn v6_ns(&self) -> i64 {
        net(&self.v6.0, &self.v6.1)
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// The settings, each kind matching the measured SYNs and not. The SYNs are
/// out SYNs from 10.100.0.0/16 or 2001:db8:100::/48 to port 443. `cgroup`:
/// a cgroup above the one the bench runs in, when there is cgroup v2.
pub fn settings(cgroup: Option<(u64, u32)>) -> Vec<Setting> {
    let f = Filter::default;
    let mut v = vec![
        Setting {
            key: "none",
            what: "no filter",
            filter: f(),
        },
        Setting {
            key: "port_match",
            what: "--port 443 (matches)",
            filter: Filter {
                ports: vec![443],
                ..f()
            },
        },
        Setting {
            key: "port_miss",
            what: "--port 80 (does not)",
            filter: Filter {
                ports: vec![80],
                ..f()
            },
        },
        Setting {
            key: "net_match",
            what: "--net 10.0.0.0/8 --net 2001:db8::/32 (matches the client)",
            filter: Filter {
                nets: vec![(ip("10.0.0.0"), 8), (ip("2001:db8::"), 32)],
                ..f()
            },
        },
        Setting {
            key: "net_miss",
            what: "--net 192.168.0.0/16 --net fd00::/8 (neither address)",
            filter: Filter {
                nets: vec![(ip("192.168.0.0"), 16), (ip("fd00::"), 8)],
                ..f()
            },
        },
        Setting {
            key: "dir_match",
            what: "--dir out (matches)",
            filter: Filter {
                dir: Some(Dir::Out),
                ..f()
            },
        },
        Setting {
            key: "dir_miss",
            what: "--dir in (does not)",
            filter: Filter {
                dir: Some(Dir::In),
                ..f()
            },
        },
    ];
    let Some((id, level)) = cgroup else {
        return v;
    };
    // The same level, another id: the walk up finds a different cgroup there.
    let other = (id ^ 0x5a5a_5a5a, level);
    v.extend([
        Setting {
            key: "cgroup_match",
            what: "--cgroup of an ancestor of the socket's cgroup (matches)",
            filter: Filter {
                cgroups: vec![(id, level)],
                ..f()
            },
        },
        Setting {
            key: "cgroup_miss",
            what: "--cgroup of another cgroup (does not)",
            filter: Filter {
                cgroups: vec![other],
                ..f()
            },
        },
        Setting {
            key: "cgroup_miss_8",
            what: "eight --cgroup, none matching (the most the classifier takes)",
            filter: Filter {
                cgroups: vec![other; 8],
                ..f()
            },
        },
        Setting {
            key: "all_match",
            what: "--port, --net, --dir and --cgroup together, all matching",
            filter: Filter {
                ports: vec![443],
                nets: vec![(ip("10.0.0.0"), 8), (ip("2001:db8::"), 32)],
                dir: Some(Dir::Out),
                cgroups: vec![(id, level)],
                min_rtt_ns: None,
                ..f()
            },
        },
    ]);
    v
}

/// Runs `f` with the bench moved into a cgroup three levels below one of its
/// own (as a container's or a service's sockets are), passing that top cgroup;
/// without cgroup v2, runs it with `None`.
pub fn in_nested_cgroup<T>(f: impl FnOnce(Option<(u64, u32)>) -> T) -> T {
    if cgroup::try_mount().is_none() {
        return f(None);
    }
    let tree = cgroup::Tree::new("bench", &["svc/a/b"]);
    cgroup::enter(&tree.path("svc/a/b"));
    let top = tree.path("svc");
    let r = f(Some((cgroup::id_of(&top), cgroup::level_of(&top))));
    drop(tree);
    r
}

/// Whether the setting keeps the measured SYNs.
pub fn keeps(s: &Setting) -> bool {
    !s.key.ends_with("_miss") && !s.key.ends_with("_miss_8")
}

/// Measures `count` new SYNs of each family under each setting.
pub fn measure(rig: &mut Rig, settings: &[Setting], count: u32) -> Vec<FilterResult> {
    let mut out: Vec<FilterResult> = settings
        .iter()
        .map(|_| FilterResult {
            v4: (Vec::new(), Vec::new()),
            v6: (Vec::new(), Vec::new()),
        })
        .collect();
    for start in (0..count).step_by(TURN as usize) {
        for (n, (setting, res)) in settings.iter().zip(out.iter_mut()).enumerate() {
            rig.set_filter(&setting.filter);
            let keep = keeps(setting);
            for i in start..(start + TURN).min(count) {
                // A new connection each time, and others for each setting.
                let port = 1024 + (i % 60000) as u16;
                let host = n as u32 * 4 + i / 60000;
                let isn = i.wrapping_mul(7919);
                for (v6, (f_runs, e_runs)) in [(false, &mut res.v4), (true, &mut res.v6)] {
                    let (c, server) = if v6 {
                        (format!("2001:db8:100::{:x}", host + 1), "2001:db8::1")
                    } else {
                        (
                            format!("10.100.{}.{}", host / 250, host % 250 + 1),
                            "93.184.216.34",
                        )
                    };
                    let syn = frames::syn(&c, port, server, isn);
                    let (f, e) = rig.once(i as usize, Hook::Egress, &syn);
                    f_runs.push(f);
                    e_runs.push(e);
                    if keep {
                        rig.feed(Hook::Ingress, &frames::synack(&c, port, server, isn, 1));
                    }
                }
            }
        }
    }
    rig.set_filter(&Filter::default());
    out
}
