//! Command-line arguments: parsing and checking, nothing else.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use argh::FromArgs;

use crate::probe::{Dir, MAX_FILTER_CGROUPS, MAX_FILTER_NETS, MAX_FILTER_PROCS};
use crate::sinks::summary::{self, GroupKey, ALL_KEYS, KEYS_HELP};

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
               in:  the client is beyond iface, its SYN arrives. A veth whose peer is in
               another network namespace (a pod's) is seen from the peer's side: out is
               the workload connecting (unless --node-view)
  result       ok, refused (answered by RST or ICMP port unreachable), unreachable (an ICMP
               error: host, net, admin-prohibited, ...), timeout (no answer within
               --syn-timeout), abandoned (the client retried with a new sequence number, or
               reset our SYN-ACK)
  reason, reason_from  why an attempt did not complete (rst, port-unreachable, no-answer,
               no-ack, client-reset, new-isn, ...) and the address that said so; null for ok
  client_ip/client_port -> server_ip/server_port
  rtt_ns       out: SYN-ACK (or RST) time - last SYN time: the network and server beyond iface
               in:  client's ACK time - last SYN-ACK time: the round trip to the client
  local_ns     in only: first SYN-ACK (or RST) time - last SYN time: how long this side took
  total_ns     out: SYN-ACK - first SYN;  in: ACK - first SYN (includes retransmissions)
  retrans      client SYNs beyond the first
  synack_retrans  in only: this side's SYN-ACKs beyond the first (\"synack-retrans\" in text)
  pid, comm    the local process: out, the one that called connect(); in, the one that made
               the listener (or, for one made before flowlat started, the lowest pid among
               those holding it); null where there is none or it is not known. Text shows
               comm[pid] before the cgroup.
  cgroup_id, cgroup  the local workload: out, the connecting socket's cgroup (v2); in, the
               listening socket's; null when there is no local socket (forwarded packets,
               the kernel's RSTs for closed ports, SYN cookies); on a workload's veth, the
               workload's cgroup. Text shows the path last, container scopes by their short id.
  workload     pod NAMESPACE/NAME, container NAME, unit NAME.service, netns NAME or the cgroup
               path; text shows it in place of the cgroup
JSON records carry \"type\":\"handshake\"; --summary --json prints \"type\":\"summary\" rows with
interval_start, interval_end, the group's keys, handshakes, ok, refused, timeout, abandoned,
retrans and rtt_/local_ min, p50, p90, p99, max, mean (_ns).
Durations are null in JSON (\"-\" in text) where they are not defined; text shows
durations in milliseconds, JSON in nanoseconds.

Exit status: 0 after a clean stop, 1 on a runtime failure, 2 on bad usage.",
    example = "Watch one interface, one line per handshake:\n  sudo flowlat eth0\n\
Which upstreams are slow or failing? One row per server, at exit:\n  sudo flowlat --summary --duration 60s eth0\n\
How far away are my clients? Incoming handshakes by client /24, a table a minute, with histograms:\n  sudo flowlat --summary --by dir,client-net --dir in --interval 1m --hist eth0\n\
Did it get worse in the last minute? A table a minute, HTTPS only:\n  sudo flowlat --summary --interval 1m --port 443 eth0\n\
Only failures and slow answers (ok attempts under 100 ms are counted, not printed):\n  sudo flowlat --min-rtt 100ms eth0\n\
A Prometheus exporter that sends no record per handshake:\n  sudo flowlat --metrics 127.0.0.1:9464 --quiet eth0\n\
JSON lines for scripts, the first 100 attempts to 10.0.0.0/8:\n  sudo flowlat --json --net 10.0.0.0/8 --count 100 eth0 | jq .\n\
The handshake monitor of a Kubernetes node: every pod's veth from the pod's side, as pods come and go:\n  sudo flowlat --metrics 127.0.0.1:9464 --metrics-by workload --quiet 'eth*' 'veth*' 'cali*'\n\
Remove filters a killed flowlat left behind:\n  sudo flowlat --detach eth0"
)]
pub struct Args {
    /// interfaces to watch (default: eth0): names, or shell patterns such as
    /// 'veth*' that take every matching interface, now and as they appear
    #[argh(positional, arg_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// an interface or pattern to watch (repeatable; same as naming it
    /// positionally)
    #[argh(option, long = "iface", arg_name = "NAME")]
    pub iface: Vec<String>,

    /// measure a veth whose peer is in another network namespace (a pod's,
    /// a container's) from this side; by default it is measured from the
    /// peer's side, as if on the workload's own eth0
    #[argh(switch)]
    pub node_view: bool,

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
    /// the table (or the bucket of it an attempt goes to) is full, an older
    /// attempt is evicted and counted
    #[argh(option, default = "65536", from_str_fn(parse_max_pending))]
    pub max_pending: u32,

    /// size of each CPU's perf ring in pages, a power of two (default 64); raise
    /// it if the summary reports lost records
    #[argh(option, default = "64", from_str_fn(parse_pages))]
    pub perf_pages: usize,

    /// no line per attempt: one table of groups at exit (and every --interval),
    /// with counts by result and rtt min/p50/p90/p99/max
    #[argh(switch)]
    pub summary: bool,

    /// with --summary, also print a table every DURATION (e.g. 10s, 1m); each
    /// attempt counts in the interval in which it ended
    #[argh(option, from_str_fn(parse_duration), arg_name = "DURATION")]
    pub interval: Option<Duration>,

    /// with --summary, how attempts are grouped: a comma list of iface, dir,
    /// server (address and port), server-ip, server-port, client-ip,
    /// client-net, cgroup, comm (default iface,dir,server)
    #[argh(option, arg_name = "KEYS")]
    pub by: Option<String>,

    /// the client-net prefix lengths for IPv4 and IPv6 (default 24,48)
    #[argh(option, arg_name = "V4,V6")]
    pub client_prefix: Option<String>,

    /// with --summary, draw log2 histograms of rtt (and local) for each group
    #[argh(switch)]
    pub hist: bool,

    /// with --summary, at most N groups per table (default 4096); attempts
    /// beyond them are counted in one `other` row
    #[argh(option, arg_name = "N", from_str_fn(parse_max_groups))]
    pub max_groups: Option<usize>,

    /// only attempts whose client or server port is N (repeatable: any of them);
    /// decided in the kernel
    #[argh(option, arg_name = "N", from_str_fn(parse_port))]
    pub port: Vec<u16>,

    /// only attempts whose client or server address is in CIDR, IPv4 or IPv6
    /// (repeatable: any of them); decided in the kernel
    #[argh(option, arg_name = "CIDR", from_str_fn(parse_net))]
    pub net: Vec<Net>,

    /// only attempts in this direction: in (clients beyond the interface) or
    /// out (clients on this host)
    #[argh(option, arg_name = "in|out", from_str_fn(parse_dir))]
    pub dir: Option<Dir>,

    /// do not report ok attempts whose rtt is under DURATION (they still count
    /// in the exit line); refused, timeout and abandoned are always reported
    #[argh(option, from_str_fn(parse_duration), arg_name = "DURATION")]
    pub min_rtt: Option<Duration>,

    /// only attempts of this cgroup (v2) or its descendants, a path below the
    /// cgroup2 mount such as /system.slice/nginx.service (repeatable: any of
    /// them); decided in the kernel
    #[argh(option, arg_name = "PATH")]
    pub cgroup: Vec<String>,

    /// only attempts of process N (its pid as the host numbers it;
    /// repeatable, and with --comm: any of them); out is decided in the
    /// kernel, in once the listener's process is known
    #[argh(option, arg_name = "N", from_str_fn(parse_pid))]
    pub pid: Vec<u32>,

    /// only attempts of processes named NAME, as the kernel names them (at
    /// most 15 bytes; repeatable, and with --pid: any of them)
    #[argh(option, arg_name = "NAME")]
    pub comm: Vec<String>,

    /// do not name the process behind each attempt: nothing is attached to
    /// the cgroup hooks, and pid and comm are null
    #[argh(switch)]
    pub no_process: bool,

    /// stop after N attempts have been reported (with --summary, counted into
    /// the tables), then detach and exit 0
    #[argh(option, arg_name = "N", from_str_fn(parse_count))]
    pub count: Option<u64>,

    /// stop after DURATION, then detach and exit 0
    #[argh(option, from_str_fn(parse_duration), arg_name = "DURATION")]
    pub duration: Option<Duration>,

    /// serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464,
    /// [::1]:9464 or 0.0.0.0:9464 (port 0: any free one, named at start)
    #[argh(option, arg_name = "ADDR", from_str_fn(parse_addr))]
    pub metrics: Option<SocketAddr>,

    /// with --metrics, extra labels: a comma list of server-port, cgroup,
    /// workload (pod, container or unit)
    #[argh(option, arg_name = "KEYS")]
    pub metrics_by: Option<String>,

    /// with --metrics-by, at most N values per label (default 256); the rest
    /// are counted under the value `other`
    #[argh(option, arg_name = "N", from_str_fn(parse_max_series))]
    pub max_series: Option<usize>,

    /// with --metrics, how long the series of an interface or workload that
    /// is gone are still served before they are dropped (default 5m)
    #[argh(option, arg_name = "DURATION", from_str_fn(parse_duration))]
    pub series_ttl: Option<Duration>,

    /// print nothing per attempt (with --metrics: the kernel counts, and no
    /// record per handshake reaches flowlat)
    #[argh(switch, short = 'q')]
    pub quiet: bool,

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
    Run(Box<Settings>),
    /// Remove what dead flowlat processes left on these interfaces, then exit.
    Detach(Vec<String>),
}

/// Checked settings for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Names and patterns.
    pub ifaces: Vec<String>,
    /// `--node-view`: workload veths measured from this side.
    pub node_view: bool,
    pub json: bool,
    pub syn_timeout: Duration,
    pub max_pending: u32,
    pub perf_pages: usize,
    /// What is printed per attempt.
    pub output: Output,
    /// What the kernel keeps: `--port`, `--net`, `--dir`, `--cgroup`, `--min-rtt`.
    pub filter: FilterOptions,
    /// Whether the process behind each attempt is named (not `--no-process`).
    pub process: bool,
    /// `--count`: stop after this many attempts.
    pub count: Option<u64>,
    /// `--duration`: stop after this long.
    pub duration: Option<Duration>,
    /// `--metrics`.
    pub metrics: Option<MetricsOptions>,
}

/// What goes to stdout while flowlat runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// One line per attempt (text or JSON).
    Lines,
    /// Tables of groups (`--summary`).
    Summary(SummaryOptions),
    /// Nothing per attempt (`--quiet`).
    Quiet,
}

/// `--summary` and what shapes its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryOptions {
    pub by: Vec<GroupKey>,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub max_groups: usize,
    pub hist: bool,
    pub interval: Option<Duration>,
}

/// An address range of `--net`, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The in-kernel filters, as given (cgroup paths are resolved at start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOptions {
    pub ports: Vec<u16>,
    pub nets: Vec<Net>,
    pub dir: Option<Dir>,
    pub cgroups: Vec<String>,
    pub min_rtt: Option<Duration>,
    /// `--pid` and `--comm`.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

impl FilterOptions {
    /// Whether any filter that drops attempts before they are tracked is set.
    pub fn any(&self) -> bool {
        !self.ports.is_empty()
            || !self.nets.is_empty()
            || self.dir.is_some()
            || !self.cgroups.is_empty()
            || !self.pids.is_empty()
            || !self.comms.is_empty()
    }
}

/// `--metrics` and its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    pub addr: SocketAddr,
    /// How long a gone interface's or workload's series stay.
    pub series_ttl: Duration,
    pub by_port: bool,
    pub by_cgroup: bool,
    pub by_workload: bool,
    pub max_series: usize,
}

/// Default `--max-groups`.
pub const DEFAULT_MAX_GROUPS: usize = 4096;
/// Default `--max-series`.
pub const DEFAULT_MAX_SERIES: usize = 256;
/// Default `--series-ttl`: long enough for a scrape or two (Prometheus
/// marks a series stale once it is gone from a scrape), short enough that a
/// node with pods churning serves about the live ones.
pub const DEFAULT_SERIES_TTL: Duration = Duration::from_secs(300);

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
    let mut ifaces = parsed.ifaces.clone();
    ifaces.extend(parsed.iface.iter().cloned());
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
    let output = output_of(&parsed)?;
    let metrics = metrics_of(&parsed)?;
    let (nets, cgroups) = (dedup(parsed.net), dedup(parsed.cgroup));
    // The kernel's tables for them have a fixed size.
    if nets.len() > MAX_FILTER_NETS {
        return Err(format!(
            "{} --net ranges given; at most {MAX_FILTER_NETS} are kept in the kernel",
            nets.len()
        ));
    }
    if cgroups.len() > MAX_FILTER_CGROUPS {
        return Err(format!(
            "{} --cgroup paths given; at most {MAX_FILTER_CGROUPS} are checked in the kernel \
             (name a common parent instead: its descendants are kept too)",
            cgroups.len()
        ));
    }
    let (pids, comms) = (dedup(parsed.pid), dedup(parsed.comm));
    if pids.len() > MAX_FILTER_PROCS || comms.len() > MAX_FILTER_PROCS {
        return Err(format!(
            "{} --pid and {} --comm given; at most {MAX_FILTER_PROCS} of each are checked in \
             the kernel",
            pids.len(),
            comms.len()
        ));
    }
    for c in &comms {
        if c.is_empty() || c.len() > 15 {
            return Err(format!(
                "--comm `{c}`: the kernel names a process with 1 to 15 bytes (see \
                 /proc/PID/comm)"
            ));
        }
    }
    if parsed.no_process && (!pids.is_empty() || !comms.is_empty()) {
        return Err("--pid and --comm need the processes that --no-process turns off".to_string());
    }
    Ok(Command::Run(Box::new(Settings {
        ifaces,
        node_view: parsed.node_view,
        json: parsed.json,
        syn_timeout: parsed.syn_timeout,
        max_pending: parsed.max_pending,
        perf_pages: parsed.perf_pages,
        output,
        filter: FilterOptions {
            ports: dedup(parsed.port),
            nets,
            dir: parsed.dir,
            cgroups,
            min_rtt: parsed.min_rtt,
            pids,
            comms,
        },
        process: !parsed.no_process,
        count: parsed.count,
        duration: parsed.duration,
        metrics,
    })))
}

fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// An option that only means something beside another one is an error
/// without it, rather than silently ignored.
fn needs(given: bool, option: &str, other: &str) -> Result<(), String> {
    if given {
        Err(format!("{option} works only with {other}"))
    } else {
        Ok(())
    }
}

fn output_of(a: &Args) -> Result<Output, String> {
    if !a.summary {
        needs(a.interval.is_some(), "--interval", "--summary")?;
        needs(a.by.is_some(), "--by", "--summary")?;
        needs(a.client_prefix.is_some(), "--client-prefix", "--summary")?;
        needs(a.hist, "--hist", "--summary")?;
        needs(a.max_groups.is_some(), "--max-groups", "--summary")?;
        return Ok(if a.quiet {
            Output::Quiet
        } else {
            Output::Lines
        });
    }
    if a.quiet {
        return Err("--quiet and --summary contradict each other: --summary already prints no line per attempt, and --quiet would hide its tables".to_string());
    }
    let by = match &a.by {
        Some(s) => parse_by(s)?,
        None => vec![GroupKey::Iface, GroupKey::Dir, GroupKey::Server],
    };
    let (v4_prefix, v6_prefix) = match &a.client_prefix {
        Some(s) => parse_client_prefix(s)?,
        None => (24, 48),
    };
    Ok(Output::Summary(SummaryOptions {
        by,
        v4_prefix,
        v6_prefix,
        max_groups: a.max_groups.unwrap_or(DEFAULT_MAX_GROUPS),
        hist: a.hist,
        interval: a.interval,
    }))
}

fn metrics_of(a: &Args) -> Result<Option<MetricsOptions>, String> {
    let Some(addr) = a.metrics else {
        needs(a.metrics_by.is_some(), "--metrics-by", "--metrics")?;
        needs(a.max_series.is_some(), "--max-series", "--metrics")?;
        needs(a.series_ttl.is_some(), "--series-ttl", "--metrics")?;
        return Ok(None);
    };
    let (mut by_port, mut by_cgroup, mut by_workload) = (false, false, false);
    if let Some(keys) = &a.metrics_by {
        for k in keys.split(',').map(str::trim) {
            match k {
                "server-port" => by_port = true,
                "cgroup" => by_cgroup = true,
                "workload" => by_workload = true,
                _ => {
                    return Err(format!(
                        "`{k}` is not a metrics label: --metrics-by takes a comma list of \
                         server-port, cgroup, workload (per-address labels would make the \
                         number of series unbounded)"
                    ))
                }
            }
        }
    }
    if a.max_series.is_some() && !by_port && !by_cgroup && !by_workload {
        return Err("--max-series works only with --metrics-by".to_string());
    }
    Ok(Some(MetricsOptions {
        addr,
        series_ttl: a.series_ttl.unwrap_or(DEFAULT_SERIES_TTL),
        by_port,
        by_cgroup,
        by_workload,
        max_series: a.max_series.unwrap_or(DEFAULT_MAX_SERIES),
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

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a process id (1 or more)")),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!(
            "`{s}` is not a port: give a number from 1 to 65535"
        )),
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host). Host bits
/// are cleared, as `ip route` would store the range.
pub fn parse_net(s: &str) -> Result<Net, String> {
    let bad = |why: &str| {
        format!("`{s}` is not a CIDR range ({why}): write e.g. 10.0.0.0/8 or 2001:db8::/32")
    };
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| bad("no IPv4 or IPv6 address before the /"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => {
            let n: u32 = p
                .parse()
                .map_err(|_| bad("the prefix length is not a number"))?;
            if n > u32::from(max) {
                let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(bad(&format!("an {family} prefix is at most /{max}")));
            }
            n as u8
        }
    };
    let addr = summary::network(addr, prefix);
    Ok(Net { addr, prefix })
}

fn parse_dir(s: &str) -> Result<Dir, String> {
    match s {
        "in" => Ok(Dir::In),
        "out" => Ok(Dir::Out),
        _ => Err(format!(
            "`{s}` is not a direction: in (clients beyond the interface) or out (clients on this host)"
        )),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a count: give a number of attempts above 0"
        )),
    }
}

fn parse_max_groups(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of groups: give 1 to 1048576"
        )),
    }
}

fn parse_max_series(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=65536).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of label values: give 1 to 65536"
        )),
    }
}

/// `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "`{s}` is not an address to listen on: write IP:PORT, e.g. 127.0.0.1:9464, \
             [::1]:9464 or 0.0.0.0:9464"
        )
    })
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

/// Parses `--by`: a comma list of keys, in the order of the table's columns.
/// The JSON spelling (`server_ip`) is accepted beside `server-ip`.
pub fn parse_by(s: &str) -> Result<Vec<GroupKey>, String> {
    let mut keys: Vec<GroupKey> = Vec::new();
    for word in s.split(',').map(str::trim) {
        if word.is_empty() {
            return Err(format!(
                "`{s}` has an empty key: --by takes a comma list of {KEYS_HELP}"
            ));
        }
        let spelled = word.replace('_', "-");
        let Some(k) = ALL_KEYS.into_iter().find(|k| k.as_str() == spelled) else {
            return Err(format!(
                "`{word}` is not a key of --by: use a comma list of {KEYS_HELP}"
            ));
        };
        if keys.contains(&k) {
            return Err(format!("`{word}` is given twice in --by"));
        }
        keys.push(k);
    }
    for &k in &keys {
        if let Some(whole) = k.part_of().filter(|w| keys.contains(w)) {
            return Err(format!(
                "--by has both `{}` and `{}`, which already includes it: give one of them",
                k.as_str(),
                whole.as_str()
            ));
        }
    }
    Ok(keys)
}

/// Parses `--client-prefix V4,V6`, e.g. `24,48`: the prefix lengths that
/// `client-net` cuts IPv4 and IPv6 client addresses to.
pub fn parse_client_prefix(s: &str) -> Result<(u8, u8), String> {
    let bad = || {
        format!("`{s}` is not a --client-prefix: give the IPv4 and IPv6 prefix lengths, e.g. 24,48")
    };
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let len = |t: &str, family: &str, max: u8| -> Result<u8, String> {
        let n: u32 = t.trim().parse().map_err(|_| bad())?;
        if n > u32::from(max) {
            return Err(format!(
                "`{s}`: an {family} prefix is at most {max} bits (--client-prefix V4,V6)"
            ));
        }
        Ok(n as u8)
    };
    Ok((len(a, "IPv4", 32)?, len(b, "IPv6", 128)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Settings, String> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&owned)? {
            Command::Run(s) => Ok(*s),
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
            "--summary",
            "--interval",
            "--by",
            "--client-prefix",
            "--hist",
            "--max-groups",
            "--port",
            "--net",
            "--dir",
            "--min-rtt",
            "--cgroup",
            "--count",
            "--duration",
            "--metrics",
            "--metrics-by",
            "--max-series",
            "--quiet",
            "--pid",
            "--comm",
            "--no-process",
            "comm[pid]",
            "client-net",
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
    fn process_options_parse_and_are_checked() {
        let s = run(&[
            "--pid", "42", "--pid", "42", "--pid", "7", "--comm", "nginx",
        ])
        .expect("ok");
        assert_eq!(s.filter.pids, vec![42, 7]);
        assert_eq!(s.filter.comms, vec!["nginx".to_string()]);
        assert!(s.process && s.filter.any());
        assert!(!run(&["--no-process"]).expect("ok").process);
        assert!(run(&[]).expect("ok").process, "on by default");
        for bad in [&["--pid", "0"][..], &["--pid", "x"], &["--pid", "-1"]] {
            let e = run(bad).unwrap_err();
            assert!(e.contains("not a process id"), "{bad:?}: {e}");
        }
        let e = run(&["--comm", "a-name-of-16-byt"]).unwrap_err();
        assert!(e.contains("1 to 15 bytes"), "{e}");
        assert!(run(&["--comm", ""]).is_err());
        let e = run(&["--no-process", "--comm", "nginx"]).unwrap_err();
        assert!(e.contains("--no-process"), "{e}");
        let nine: Vec<String> = (1..=9)
            .flat_map(|p| ["--pid".to_string(), p.to_string()])
            .collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert!(run(&nine).unwrap_err().contains("at most 8"));
        let by = run(&["--summary", "--by", "comm,server"]).expect("ok");
        match by.output {
            Output::Summary(o) => assert_eq!(o.by, vec![GroupKey::Comm, GroupKey::Server]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn filters_parse_and_combine() {
        let s = run(&[
            "--port",
            "443",
            "--port",
            "80",
            "--port",
            "443",
            "--net",
            "10.1.2.3/8",
            "--net",
            "2001:db8::1/32",
            "--net",
            "192.0.2.7",
            "--dir",
            "in",
            "--min-rtt",
            "5ms",
        ])
        .expect("valid");
        assert_eq!(s.filter.ports, vec![443, 80], "repeats collapse");
        let nets: Vec<String> = s.filter.nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert_eq!(s.filter.dir, Some(Dir::In));
        assert_eq!(s.filter.min_rtt, Some(Duration::from_millis(5)));
        assert!(s.filter.any());
        assert!(!run(&[]).expect("valid").filter.any());
    }

    #[test]
    fn bad_filter_values_say_what_is_wrong() {
        for (args, says) in [
            (&["--port", "0"][..], "1 to 65535"),
            (&["--port", "65536"], "1 to 65535"),
            (&["--port", "http"], "not a port"),
            (&["--net", "10.0.0.0/33"], "at most /32"),
            (&["--net", "::/129"], "at most /128"),
            (&["--net", "10.0.0/8"], "no IPv4 or IPv6 address"),
            (&["--net", "10.0.0.0/x"], "not a number"),
            (&["--dir", "both"], "in (clients beyond"),
            (&["--count", "0"], "above 0"),
            (&["--max-groups", "0", "--summary"], "number of groups"),
            (
                &[
                    "--cgroup", "/1", "--cgroup", "/2", "--cgroup", "/3", "--cgroup", "/4",
                    "--cgroup", "/5", "--cgroup", "/6", "--cgroup", "/7", "--cgroup", "/8",
                    "--cgroup", "/9",
                ],
                "at most 8",
            ),
        ] {
            let e = run(args).expect_err("bad value");
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn summary_options_shape_the_tables() {
        let s = run(&[
            "--summary",
            "--by",
            "dir,client-net",
            "--client-prefix",
            "16,32",
            "--hist",
            "--interval",
            "10s",
            "--max-groups",
            "10",
        ])
        .expect("valid");
        let Output::Summary(o) = s.output else {
            panic!("{:?}", s.output)
        };
        assert_eq!(o.by, vec![GroupKey::Dir, GroupKey::ClientNet]);
        assert_eq!((o.v4_prefix, o.v6_prefix), (16, 32));
        assert!(o.hist);
        assert_eq!(o.interval, Some(Duration::from_secs(10)));
        assert_eq!(o.max_groups, 10);
        let Output::Summary(d) = run(&["--summary"]).expect("valid").output else {
            panic!()
        };
        assert_eq!(d.by, vec![GroupKey::Iface, GroupKey::Dir, GroupKey::Server]);
        assert_eq!(
            (d.v4_prefix, d.v6_prefix, d.max_groups),
            (24, 48, DEFAULT_MAX_GROUPS)
        );
        assert_eq!(run(&[]).expect("valid").output, Output::Lines);
    }

    #[test]
    fn options_that_need_another_say_which() {
        for (args, says) in [
            (
                &["--interval", "1s"][..],
                "--interval works only with --summary",
            ),
            (&["--hist"], "--hist works only with --summary"),
            (&["--by", "dir"], "--by works only with --summary"),
            (
                &["--metrics-by", "cgroup"],
                "--metrics-by works only with --metrics",
            ),
            (
                &["--metrics", "127.0.0.1:9464", "--max-series", "9"],
                "--max-series works only with --metrics-by",
            ),
            (&["--summary", "--quiet"], "contradict"),
        ] {
            let e = run(args).expect_err("incomplete");
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn metrics_take_an_address_and_bounded_labels() {
        let s = run(&[
            "--metrics",
            "[::1]:9464",
            "--metrics-by",
            "server-port,cgroup",
            "--max-series",
            "32",
            "--quiet",
        ])
        .expect("valid");
        let m = s.metrics.expect("metrics");
        assert_eq!(m.addr, "[::1]:9464".parse().expect("literal"));
        assert!(m.by_port && m.by_cgroup);
        assert_eq!(m.max_series, 32);
        assert_eq!(s.output, Output::Quiet);
        let e = run(&["--metrics", "localhost:9464"]).expect_err("not an IP");
        assert!(e.contains("IP:PORT"), "{e}");
        let e = run(&["--metrics", "127.0.0.1:9464", "--metrics-by", "client-ip"])
            .expect_err("unbounded");
        assert!(e.contains("server-port, cgroup"), "{e}");
        let d = run(&["--metrics", "0.0.0.0:9464"])
            .expect("valid")
            .metrics
            .expect("metrics");
        assert_eq!(
            (d.by_port, d.by_cgroup, d.max_series),
            (false, false, DEFAULT_MAX_SERIES)
        );
    }

    #[test]
    fn bounded_runs() {
        let s = run(&["--count", "100", "--duration", "1m"]).expect("valid");
        assert_eq!(
            (s.count, s.duration),
            (Some(100), Some(Duration::from_secs(60)))
        );
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

    #[test]
    fn by_accepts_every_key_in_the_order_given() {
        assert_eq!(
            parse_by("cgroup,client-net,dir,iface,server").expect("valid"),
            [
                GroupKey::Cgroup,
                GroupKey::ClientNet,
                GroupKey::Dir,
                GroupKey::Iface,
                GroupKey::Server
            ]
        );
        assert_eq!(
            parse_by(" server-ip , server_port,client-ip").expect("valid"),
            [GroupKey::ServerIp, GroupKey::ServerPort, GroupKey::ClientIp]
        );
        for k in ALL_KEYS {
            assert_eq!(parse_by(k.as_str()), Ok(vec![k]));
        }
    }

    #[test]
    fn by_errors_name_the_bad_word_and_the_valid_keys() {
        let e = parse_by("iface,servr").expect_err("unknown");
        assert!(e.starts_with("`servr` is not a key of --by"), "{e}");
        for k in ALL_KEYS {
            assert!(e.contains(k.as_str()), "{e}");
        }
        let e = parse_by("iface,,dir").expect_err("empty");
        assert!(e.contains("empty key") && e.contains("client-net"), "{e}");
        assert!(parse_by("").expect_err("nothing").contains("empty key"));
        assert_eq!(
            parse_by("dir,iface,dir"),
            Err("`dir` is given twice in --by".to_string())
        );
        let e = parse_by("server,server-port").expect_err("overlap");
        assert!(e.contains("`server-port` and `server`"), "{e}");
        assert!(parse_by("server-ip,iface,server").is_err());
        assert!(parse_by("client-net,client-ip").is_err());
        // Address and port apart are a different grouping from server: fine.
        assert!(parse_by("server-ip,server-port").is_ok());
    }

    #[test]
    fn client_prefix_parses_both_lengths_and_rejects_the_rest() {
        assert_eq!(parse_client_prefix("24,48"), Ok((24, 48)));
        assert_eq!(parse_client_prefix(" 0 , 128"), Ok((0, 128)));
        assert_eq!(parse_client_prefix("32,0"), Ok((32, 0)));
        for bad in ["24", "24,", ",48", "a,48", "24,48,64", "-1,48", "24;48", ""] {
            let e = parse_client_prefix(bad).expect_err(bad);
            assert!(
                e.contains("e.g. 24,48") && e.contains(&format!("`{bad}`")),
                "{e}"
            );
        }
        let e = parse_client_prefix("33,48").expect_err("too long");
        assert!(e.contains("IPv4 prefix is at most 32"), "{e}");
        let e = parse_client_prefix("24,129").expect_err("too long");
        assert!(e.contains("IPv6 prefix is at most 128"), "{e}");
    }

    #[test]
    fn a_container_node_is_patterns_workload_labels_and_a_ttl() {
        let s = run(&[
            "--metrics",
            "127.0.0.1:9464",
            "--metrics-by",
            "workload",
            "--series-ttl",
            "90s",
            "--quiet",
            "eth*",
            "veth*",
            "cali[0-9a-f]*",
        ])
        .expect("valid");
        assert_eq!(s.ifaces, vec!["eth*", "veth*", "cali[0-9a-f]*"]);
        assert!(!s.node_view);
        let m = s.metrics.expect("metrics");
        assert!(m.by_workload && !m.by_cgroup && !m.by_port);
        assert_eq!(m.series_ttl, Duration::from_secs(90));
        let d = run(&["--metrics", "127.0.0.1:9464"]).expect("valid");
        assert_eq!(d.metrics.expect("metrics").series_ttl, DEFAULT_SERIES_TTL);
        assert!(run(&["--node-view", "veth*"]).expect("valid").node_view);
        let e = run(&["--series-ttl", "1m"]).expect_err("needs --metrics");
        assert!(e.contains("--series-ttl") && e.contains("--metrics"), "{e}");
        let e = run(&["--metrics", "127.0.0.1:1", "--metrics-by", "pod"]).expect_err("no such");
        assert!(e.contains("workload"), "{e}");
        match parse(&[
            "--summary".to_string(),
            "--by".to_string(),
            "workload,dir".to_string(),
        ]) {
            Ok(Command::Run(s)) => match s.output {
                Output::Summary(o) => assert_eq!(o.by, vec![GroupKey::Workload, GroupKey::Dir]),
                o => panic!("{o:?}"),
            },
            _ => panic!("--by workload"),
        }
    }
}
