//! Which interfaces flowlat watches: the IFACE arguments as names or
//! shell-style patterns (`veth*`, `cali*`, `eth[01]`), matched against the
//! interfaces there are at start and against each one that appears later.
//! And from which side each is measured: an interface whose pair's other
//! end lives in another network namespace (a pod's or container's veth) is
//! measured as if from that end, unless the user asks for the node's view.

use crate::netlink::link::{Link, LinkLayer};

/// One IFACE argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A plain name: it must exist at start, and flowlat ends when every
    /// interface it named is gone (as it always has).
    Name(String),
    /// A pattern with `*`, `?` or `[...]`: it may match nothing, now or
    /// later, and interfaces that match come and go.
    Glob(String),
}

impl Pattern {
    /// A pattern if `arg` has a glob character, else a name.
    pub fn parse(arg: &str) -> Pattern {
        if arg.contains(['*', '?', '[']) {
            Pattern::Glob(arg.to_string())
        } else {
            Pattern::Name(arg.to_string())
        }
    }

    /// Whether the interface called `name` is one this argument asks for.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Name(n) => n == name,
            Pattern::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
        }
    }

    /// The argument as the user wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Name(s) | Pattern::Glob(s) => s,
        }
    }
}

/// The IFACE arguments together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// From the arguments as given.
    pub fn new(args: &[String]) -> Patterns {
        Patterns(args.iter().map(|a| Pattern::parse(a)).collect())
    }

    /// Whether some argument asks for the interface called `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }

    /// Whether any argument is a pattern: then interfaces come and go, and
    /// flowlat runs on while none matches.
    pub fn any_glob(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Pattern::Glob(_)))
    }

    /// The plain names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Pattern::Name(n) => Some(n.as_str()),
            Pattern::Glob(_) => None,
        })
    }

    /// The patterns that match none of `names`.
    pub fn unmatched<'a>(&'a self, names: &[&str]) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|p| matches!(p, Pattern::Glob(_)))
            .filter(|p| !names.iter().any(|n| p.matches(n)))
            .map(Pattern::as_str)
            .collect()
    }
}

/// `fnmatch(3)` without flags, on bytes: `*` any run, `?` any one byte,
/// `[abc]`, `[a-z]`, `[!a]` / `[^a]` one byte of (or not of) a set, `\x` the
/// byte x. An unclosed `[` stands for itself. Iterative, with one point to
/// come back to per `*`, so that no pattern costs more than
/// O(pattern × name).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match class(&p[pi..], s[si]) {
                Some((true, len)) => Some(pi + len),
                Some((false, _)) => None,
                None => (s[si] == b'[').then_some(pi + 1),
            },
            Some(b'\\') if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
            Some(&c) => (c == s[si]).then_some(pi + 1),
            None => None,
        };
        match step {
            Some(next) => {
                pi = next;
                si += 1;
            }
            None => match star {
                // Let the last `*` take one more byte and try again from there.
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the bracket expression at the start of `p`, and the
/// expression's length; `None` if it is not closed.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = p[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
}

/// From which side an interface is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// As the interface sees it: SYNs leaving are `out`.
    Here,
    /// As its pair's far end in another namespace sees it (a workload's
    /// veth or netkit): SYNs arriving here left the workload, so they are
    /// `out`, and the classifiers of the two hooks swap places.
    Far,
}

/// The side `link` is measured from: the far one for a pair whose other
/// end is in another namespace, unless `node_view` (`--node-view`).
pub fn side_of(link: &Link, node_view: bool) -> Side {
    if link.peer.is_some() && !node_view && link.link_layer != LinkLayer::Loopback {
        Side::Far
    } else {
        Side::Here
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_the_shell_does() {
        let yes = [
            ("veth*", "veth1a2b"),
            ("veth*", "veth"),
            ("cali*", "cali12345678901"),
            ("*", "eth0"),
            ("eth?", "eth0"),
            ("eth[01]", "eth1"),
            ("eth[0-3]", "eth2"),
            ("eth[!0]", "eth1"),
            ("eth[^0]", "eth1"),
            ("*a*b*", "xxaxxbxx"),
            ("v*th*", "veth0"),
            ("lxc*", "lxc_health"),
            ("[]x]", "]"),
            ("a[", "a["),
            ("a\\*", "a*"),
        ];
        for (p, n) in yes {
            assert!(glob(p.as_bytes(), n.as_bytes()), "{p} should match {n}");
        }
        let no = [
            ("veth*", "eth0"),
            ("eth?", "eth10"),
            ("eth[01]", "eth2"),
            ("eth[!0]", "eth0"),
            ("*a*b", "xxaxxbx"),
            ("a\\*", "ab"),
            ("eth", "eth0"),
        ];
        for (p, n) in no {
            assert!(
                !glob(p.as_bytes(), n.as_bytes()),
                "{p} should not match {n}"
            );
        }
    }

    #[test]
    fn a_hostile_pattern_costs_no_more_than_pattern_times_name() {
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(!glob(p.as_bytes(), b"aaaaaaaaaaaaaaa"));
        }
        // Backtracking over every split would take minutes here.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn names_are_plain_and_globs_come_and_go() {
        let ps = Patterns::new(&["eth0".to_string(), "veth*".to_string()]);
        assert!(ps.any_glob());
        assert_eq!(ps.names().collect::<Vec<_>>(), vec!["eth0"]);
        assert!(ps.matches("eth0") && ps.matches("veth9") && !ps.matches("eth1"));
        assert_eq!(ps.unmatched(&["eth0"]), vec!["veth*"]);
        assert!(ps.unmatched(&["eth0", "vethx"]).is_empty());
        assert!(!Patterns::new(&["eth0".to_string()]).any_glob());
    }

    fn link(peer: bool, layer: LinkLayer) -> Link {
        Link {
            index: 7,
            name: "veth1".to_string(),
            link_layer: layer,
            peer: peer.then_some(crate::netlink::link::Peer {
                netnsid: 3,
                index: 2,
            }),
        }
    }

    #[test]
    fn a_pair_whose_far_end_is_elsewhere_is_measured_from_there() {
        assert_eq!(side_of(&link(true, LinkLayer::Ethernet), false), Side::Far);
        assert_eq!(side_of(&link(true, LinkLayer::Ethernet), true), Side::Here);
        assert_eq!(
            side_of(&link(false, LinkLayer::Ethernet), false),
            Side::Here
        );
        assert_eq!(side_of(&link(true, LinkLayer::None), false), Side::Far);
    }
}
