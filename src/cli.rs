//! Command-line arguments: parsing and checking, nothing else.

use std::time::Duration;

use argh::FromArgs;

/// The name used when no interface is given, like the tool flowlat replaces.
pub const DEFAULT_IFACE: &str = "eth0";

#[derive(FromArgs, Debug)]
/// Measure TCP handshake latency, per connection, on network interfaces.
///
/// flowlat attaches a BPF classifier to each interface's clsact ingress and
/// egress hooks (root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON, is needed),
/// timestamps SYN, SYN-ACK, ACK and RST packets in the kernel and prints one
/// line per handshake attempt until interrupted (Ctrl-C, SIGTERM, SIGHUP, or
/// stdout closed). On exit it removes its filters and prints a summary to stderr.
/// Filters that a flowlat killed without a chance to clean up left behind are
/// removed at the next start on that interface, or by --detach.
#[argh(
    note = "Output (one line per attempt; --json gives the same fields as keys):
  ts           when the attempt ended (SYN-ACK, ACK or RST seen, or timed out), UTC in JSON
  iface        the interface
  dir          out: the client is on this host's side, its SYN leaves through iface;
               in:  the client is beyond iface, its SYN arrives
  result       ok, refused (answered by RST), timeout (no answer within --syn-timeout),
               abandoned (the client retried with a new sequence number on the same ports)
  client_ip/client_port -> server_ip/server_port
  rtt_ns       out: SYN-ACK (or RST) time - last SYN time: the network and server beyond iface
               in:  client's ACK time - last SYN-ACK time: the round trip to the client
  local_ns     in only: first SYN-ACK (or RST) time - last SYN time: how long this side took
  total_ns     out: SYN-ACK - first SYN;  in: ACK - first SYN (includes retransmissions)
  retrans      client SYNs beyond the first
  synack_retrans  in only: this side's SYN-ACKs beyond the first (\"synack-retrans\" in text)
Durations are null in JSON (\"-\" in text) where they are not defined; text shows
durations in milliseconds, JSON in nanoseconds.

Exit status: 0 after a clean stop, 1 on a runtime failure, 2 on bad usage.",
    example = "sudo flowlat eth0\nsudo flowlat --json --syn-timeout 3s eth0 eth1 | jq .\nsudo flowlat --detach eth0"
)]
pub struct Args {
    /// interfaces to watch (default: eth0)
    #[argh(positional, arg_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// an interface to watch (repeatable; same as naming it positionally)
    #[argh(option, long = "iface", arg_name = "NAME")]
    pub iface: Vec<String>,

    /// print one JSON object per line instead of text
    #[argh(switch)]
    pub json: bool,

    /// how long after its first SYN an unanswered attempt is reported as a
    /// timeout, e.g. 500ms, 3s, 1m (default 10s)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_duration)
    )]
    pub syn_timeout: Duration,

    /// how many handshakes can be in progress at once (default 65536); when
    /// the table is full the least recently seen attempt is evicted and counted
    #[argh(option, default = "65536", from_str_fn(parse_max_pending))]
    pub max_pending: u32,

    /// size of each CPU's perf ring in pages, a power of two (default 64); raise
    /// it if the summary reports lost records
    #[argh(option, default = "64", from_str_fn(parse_pages))]
    pub perf_pages: usize,

    /// remove the filters that flowlat processes no longer running (killed,
    /// crashed) left on the interfaces, then exit; filters of a flowlat that
    /// still runs are kept
    #[argh(switch)]
    pub detach: bool,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text to stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// Run with these settings.
    Run(Settings),
    /// Remove what dead flowlat processes left on these interfaces, then exit.
    Detach(Vec<String>),
}

/// Checked settings for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub ifaces: Vec<String>,
    pub json: bool,
    pub syn_timeout: Duration,
    pub max_pending: u32,
    pub perf_pages: usize,
}

/// Parses `args` (without the program name). `Err` holds the message for
/// stderr: bad usage, exit code 2.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = match Args::from_args(&["flowlat"], &strs) {
        Ok(a) => a,
        Err(early) => {
            return match early.status {
                Ok(()) => Ok(Command::Print(early.output)),
                Err(()) => Err(format!(
                    "{}Run `flowlat --help` for usage.",
                    early.output.trim_end().to_string() + "\n"
                )),
            }
        }
    };
    if parsed.version {
        return Ok(Command::Print(format!(
            "flowlat {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let mut ifaces = parsed.ifaces;
    ifaces.extend(parsed.iface);
    if ifaces.is_empty() {
        ifaces.push(DEFAULT_IFACE.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    ifaces.retain(|i| seen.insert(i.clone()));
    for name in &ifaces {
        check_iface_name(name)?;
    }
    if parsed.detach {
        return Ok(Command::Detach(ifaces));
    }
    Ok(Command::Run(Settings {
        ifaces,
        json: parsed.json,
        syn_timeout: parsed.syn_timeout,
        max_pending: parsed.max_pending,
        perf_pages: parsed.perf_pages,
    }))
}

/// The kernel's own rules for interface names (`dev_valid_name`).
fn check_iface_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() >= 16
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(format!(
            "`{name}` is not a valid interface name (1-15 bytes, no '/', ':' or spaces); \
             `ip link` lists the interfaces"
        ))
    } else {
        Ok(())
    }
}

/// Parses `500ms`, `3s`, `1.5s`, `2m`, `250us`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. 500ms, 3s or 1m"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 500ms, 3s or 1m"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{unit}` is not a unit in `{s}`: use ns, us, ms, s, m or h"
            ))
        }
    };
    let secs = value * scale;
    if !(secs.is_finite()) || secs <= 0.0 || secs > 7.0 * 86400.0 {
        return Err(format!(
            "`{s}` is out of range: it must be above 0 and at most a week"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_max_pending(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (16..=1 << 24).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a table size: give a number from 16 to 16777216"
        )),
    }
}

fn parse_pages(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n.is_power_of_two() && n <= 1 << 16 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a ring size: give a power of two pages, e.g. 16, 64, 256"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Settings, String> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&owned)? {
            Command::Run(s) => Ok(s),
            Command::Print(p) => Err(format!("unexpected print: {p}")),
            Command::Detach(i) => Err(format!("unexpected detach: {i:?}")),
        }
    }

    #[test]
    fn defaults_to_eth0_and_ten_seconds() {
        let s = run(&[]).expect("no args is valid");
        assert_eq!(s.ifaces, vec!["eth0"]);
        assert_eq!(s.syn_timeout, Duration::from_secs(10));
        assert_eq!(s.max_pending, 65536);
        assert!(!s.json);
    }

    #[test]
    fn interfaces_positional_and_repeated_option_merge_without_duplicates() {
        let s = run(&["eth1", "--iface", "eth2", "--iface", "eth1", "eth3"]).expect("valid");
        assert_eq!(s.ifaces, vec!["eth1", "eth3", "eth2"]);
    }

    #[test]
    fn durations_accept_common_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn bad_usage_is_an_error_with_a_hint() {
        let e = run(&["--syn-timeout", "fast"]).unwrap_err();
        assert!(e.contains("fast"), "{e}");
        assert!(e.contains("--help"), "{e}");
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["--perf-pages", "3"])
            .unwrap_err()
            .contains("power of two"));
        assert!(run(&["--max-pending", "0"]).is_err());
        assert!(run(&["bad/name"])
            .unwrap_err()
            .contains("not a valid interface name"));
        assert!(run(&["waytoolonginterfacename"]).is_err());
    }

    #[test]
    fn help_explains_every_option_and_field() {
        let owned = vec!["--help".to_string()];
        let Ok(Command::Print(text)) = parse(&owned) else {
            panic!("--help prints")
        };
        for word in [
            "--json",
            "--syn-timeout",
            "--max-pending",
            "--perf-pages",
            "--iface",
            "--version",
            "--detach",
            "rtt_ns",
            "local_ns",
            "total_ns",
            "retrans",
            "synack_retrans",
            "abandoned",
            "refused",
            "timeout",
            "CAP_BPF",
        ] {
            assert!(text.contains(word), "--help lacks {word}:\n{text}");
        }
    }

    #[test]
    fn detach_takes_the_interfaces_to_clean() {
        let owned: Vec<String> = ["--detach", "eth1", "--iface", "eth2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match parse(&owned) {
            Ok(Command::Detach(i)) => assert_eq!(i, vec!["eth1", "eth2"]),
            other => panic!("{other:?}"),
        }
        match parse(&["--detach".to_string()]) {
            Ok(Command::Detach(i)) => assert_eq!(i, vec![DEFAULT_IFACE]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_prints_the_crate_version() {
        let owned = vec!["--version".to_string()];
        let Ok(Command::Print(text)) = parse(&owned) else {
            panic!("--version prints")
        };
        assert_eq!(
            text.trim(),
            format!("flowlat {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
