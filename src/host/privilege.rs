//! What the kernel asks of flowlat before it lets it load and attach its
//! programs, checked before anything is created, so that a missing capability
//! is named exactly instead of surfacing as an `EPERM` half way; and, when the
//! kernel refuses anyway, which setting is the likely reason.
//!
//! The rules (Linux 5.8 and later): maps and programs need `CAP_BPF`; a
//! `BPF_PROG_TYPE_SCHED_CLS` program and tc requests need `CAP_NET_ADMIN`; the
//! verifier accepts the classifier's packet-pointer arithmetic, and the kernel
//! opens per-CPU perf events, only with `CAP_PERFMON`. `CAP_SYS_ADMIN` stands
//! in for `CAP_BPF` and `CAP_PERFMON`, and is what older kernels ask instead.

use std::fs;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// `PROC_USER_INIT_INO` (`include/linux/proc_ns.h`): the inode of the initial
/// user namespace, the only one whose capabilities `bpf()` honours.
const INIT_USER_NS_INODE: u64 = 0xEFFF_FFFD;

/// What the system says about this process's privileges; `None` where it
/// could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `CapEff` of `/proc/self/status`.
    pub effective: Option<u64>,
    /// `/proc/sys/kernel/cap_last_cap`: below 39, the kernel predates `CAP_BPF`.
    pub cap_last_cap: Option<u32>,
    /// `kernel.unprivileged_bpf_disabled`.
    pub unprivileged_bpf_disabled: Option<u32>,
    /// The active mode of `/sys/kernel/security/lockdown` (`none`,
    /// `integrity`, `confidentiality`).
    pub lockdown: Option<String>,
    /// Whether this process is in the initial user namespace.
    pub init_user_ns: Option<bool>,
}

impl Facts {
    /// Reads them from `/proc` and `/sys`.
    pub fn read() -> Facts {
        let text = |p: &str| fs::read_to_string(p).ok();
        let effective = text("/proc/self/status").and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
        let number = |p: &str| text(p).and_then(|s| s.trim().parse().ok());
        let lockdown = text("/sys/kernel/security/lockdown").and_then(|s| {
            let start = s.find('[')? + 1;
            let end = start + s[start..].find(']')?;
            Some(s[start..end].to_string())
        });
        let init_user_ns = fs::read_link("/proc/self/ns/user").ok().and_then(|l| {
            let s = l.to_str()?.strip_prefix("user:[")?.strip_suffix(']')?;
            Some(s.parse::<u64>().ok()? == INIT_USER_NS_INODE)
        });
        Facts {
            effective,
            cap_last_cap: number("/proc/sys/kernel/cap_last_cap"),
            unprivileged_bpf_disabled: number("/proc/sys/kernel/unprivileged_bpf_disabled"),
            lockdown,
            init_user_ns,
        }
    }

    fn has(&self, cap: u32) -> bool {
        self.effective.is_some_and(|e| e & (1 << cap) != 0)
    }

    /// Whether this process may mount (`CAP_SYS_ADMIN`): a cgroup2 mount of
    /// its own where it has none.
    pub fn may_mount(&self) -> bool {
        self.has(CAP_SYS_ADMIN)
    }

    fn kernel_has_cap_bpf(&self) -> bool {
        self.cap_last_cap.is_none_or(|last| last >= CAP_BPF)
    }

    /// The capabilities this process lacks, by name; empty when it has them
    /// all or when its capabilities could not be read.
    pub fn missing(&self) -> Vec<&'static str> {
        if self.effective.is_none() {
            return Vec::new();
        }
        let mut missing = Vec::new();
        if self.kernel_has_cap_bpf() {
            if !self.has(CAP_BPF) && !self.has(CAP_SYS_ADMIN) {
                missing.push("CAP_BPF");
            }
        } else if !self.has(CAP_SYS_ADMIN) {
            missing.push("CAP_SYS_ADMIN");
        }
        if !self.has(CAP_NET_ADMIN) {
            missing.push("CAP_NET_ADMIN");
        }
        if self.kernel_has_cap_bpf() && !self.has(CAP_PERFMON) && !self.has(CAP_SYS_ADMIN) {
            missing.push("CAP_PERFMON");
        }
        missing
    }
}

/// `Err` with a message naming each missing capability, and the setting that
/// makes it matter, when this process cannot run flowlat.
pub fn check(facts: &Facts) -> Result<(), String> {
    let missing = facts.missing();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(", ");
    let mut msg = format!(
        "flowlat lacks the capabilit{} {list}",
        if missing.len() == 1 { "y" } else { "ies" }
    );
    if missing.contains(&"CAP_BPF") || missing.contains(&"CAP_SYS_ADMIN") {
        match facts.unprivileged_bpf_disabled {
            Some(n) if n != 0 => msg.push_str(&format!(
                " (and kernel.unprivileged_bpf_disabled={n}, so without {} the kernel refuses every bpf() call)",
                missing[0]
            )),
            _ => msg.push_str(&format!(
                " (even with kernel.unprivileged_bpf_disabled=0, loading a tc classifier needs {})",
                missing[0]
            )),
        }
    }
    let setcap = missing
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    msg.push_str(&format!(
        "; run it as root (sudo), or grant {} with `sudo setcap {setcap}+ep $(command -v flowlat)`",
        if missing.len() == 1 { "it" } else { "them" }
    ));
    Err(msg)
}

/// Why the kernel may have refused (`EPERM`/`EACCES`) a process that holds
/// the capabilities: the settings that can cause it, as far as they can be
/// read. Worded to follow the error it explains.
pub fn explain_refusal(facts: &Facts) -> String {
    let mut reasons = Vec::new();
    if facts.init_user_ns == Some(false) {
        reasons.push(
            "flowlat runs in a user namespace (a rootless or unprivileged container?), and the \
             kernel honours capabilities for bpf() only in the host's initial user namespace: run \
             it on the host or in a container that shares the host's user namespace"
                .to_string(),
        );
    }
    match facts.lockdown.as_deref() {
        None | Some("none") => {}
        Some(mode) => reasons.push(format!(
            "the kernel is locked down (/sys/kernel/security/lockdown: {mode}), which restricts \
             BPF; it can only be lifted at boot"
        )),
    }
    if reasons.is_empty() {
        reasons.push(
            "a locked-down kernel (see /sys/kernel/security/lockdown, which could not be read \
             or says none) or a security module (SELinux, AppArmor) confining flowlat would do this"
                .to_string(),
        );
    }
    format!(
        "the kernel refused although flowlat has the capabilities it needs: {}",
        reasons.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(caps: &[u32]) -> Facts {
        Facts {
            effective: Some(caps.iter().map(|c| 1u64 << c).sum()),
            cap_last_cap: Some(40),
            unprivileged_bpf_disabled: Some(2),
            lockdown: Some("none".into()),
            init_user_ns: Some(true),
        }
    }

    #[test]
    fn root_and_the_three_capabilities_are_enough() {
        assert_eq!(check(&facts(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])), Ok(()));
        assert_eq!(
            check(&facts(&[CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON])),
            Ok(())
        );
        assert_eq!(check(&Facts::default()), Ok(()), "unknown is not refused");
    }

    #[test]
    fn each_missing_capability_is_named() {
        let e = check(&facts(&[])).unwrap_err();
        assert!(e.contains("CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"), "{e}");
        assert!(e.contains("kernel.unprivileged_bpf_disabled=2"), "{e}");
        assert!(
            e.contains("setcap cap_bpf,cap_net_admin,cap_perfmon+ep"),
            "{e}"
        );
        let e = check(&facts(&[CAP_NET_ADMIN, CAP_PERFMON])).unwrap_err();
        assert!(e.contains("capability CAP_BPF ("), "{e}");
        assert!(!e.contains("CAP_NET_ADMIN"), "{e}");
        let e = check(&facts(&[CAP_BPF, CAP_PERFMON])).unwrap_err();
        assert!(e.contains("capability CAP_NET_ADMIN;"), "{e}");
        assert!(!e.contains("unprivileged_bpf_disabled"), "{e}");
        let e = check(&facts(&[CAP_BPF, CAP_NET_ADMIN])).unwrap_err();
        assert!(e.contains("capability CAP_PERFMON;"), "{e}");
    }

    #[test]
    fn older_kernels_ask_for_cap_sys_admin() {
        let mut f = facts(&[CAP_NET_ADMIN]);
        f.cap_last_cap = Some(37);
        let e = check(&f).unwrap_err();
        assert!(e.contains("capability CAP_SYS_ADMIN ("), "{e}");
    }

    #[test]
    fn refusals_name_the_user_namespace_and_lockdown() {
        let mut f = facts(&[CAP_SYS_ADMIN, CAP_NET_ADMIN]);
        f.init_user_ns = Some(false);
        assert!(explain_refusal(&f).contains("user namespace"));
        f.init_user_ns = Some(true);
        f.lockdown = Some("confidentiality".into());
        let e = explain_refusal(&f);
        assert!(
            e.contains("locked down") && e.contains("confidentiality"),
            "{e}"
        );
        assert!(!e.contains("user namespace"), "{e}");
        f.lockdown = None;
        let e = explain_refusal(&f);
        assert!(
            e.contains("/sys/kernel/security/lockdown") && e.contains("SELinux"),
            "{e}"
        );
        f.init_user_ns = Some(false);
        assert!(
            !explain_refusal(&f).contains("SELinux"),
            "a sure reason stands alone"
        );
    }
}
