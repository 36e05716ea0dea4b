//! The error type of the generic BPF layer.

use std::fmt;
use std::io;

/// Everything that can fail in `src/bpf`: a syscall the kernel refused, a program
/// the verifier rejected, or an ELF object this loader does not understand.
#[derive(Debug)]
pub enum BpfError {
    /// A `bpf()`, `perf_event_open()`, `mmap()` or `ioctl()` call failed.
    /// `what` names the operation and its object, e.g. `creating map flowlat_pending`.
    Sys {
        /// The operation that failed, in words a user can act on.
        what: String,
        /// The errno the kernel returned.
        source: io::Error,
    },
    /// `BPF_PROG_LOAD` failed and the verifier said why.
    Verifier {
        /// The program's name.
        program: String,
        /// The errno of the load.
        source: io::Error,
        /// The verifier log (may be empty when the kernel gave none).
        log: String,
    },
    /// The ELF object holds something this loader does not support or cannot parse.
    Object(String),
    /// A setting the program cannot take as given (more values than its maps
    /// hold, a value out of range); the message says which, and the limit.
    Invalid(String),
    /// A buffer for a map element command whose length is not the one the
    /// kernel would copy: refused before the call, so that the kernel never
    /// reads or writes past it.
    Buffer {
        /// The map's name.
        map: String,
        /// Which buffer.
        buffer: MapBuffer,
        /// The bytes the kernel uses: exactly, for one element's key or
        /// value; at least, for a batch's keys or values.
        need: usize,
        /// The bytes the buffer holds.
        got: usize,
    },
}

/// The buffer of a map element command that [`BpfError::Buffer`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapBuffer {
    /// A key (`key` or `next_key` of `bpf_attr`): `key_size` bytes.
    Key,
    /// A value (`value`): `value_size` bytes, or for a per-CPU map
    /// `round_up(value_size, 8)` per possible CPU.
    Value,
    /// The keys of a batch (`batch.keys`): `count` keys.
    Keys,
    /// The values of a batch (`batch.values`): `count` values.
    Values,
}

impl fmt::Display for MapBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MapBuffer::Key => "key",
            MapBuffer::Value => "value",
            MapBuffer::Keys => "keys",
            MapBuffer::Values => "values",
        })
    }
}

impl BpfError {
    /// Wraps an errno with the operation it came from.
    pub fn sys(what: impl Into<String>, source: io::Error) -> Self {
        BpfError::Sys {
            what: what.into(),
            source,
        }
    }

    /// The last `n` non-empty lines of the verifier log, oldest first.
    pub fn verifier_tail(log: &str, n: usize) -> Vec<&str> {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// A hint for the errnos that mean "you lack a privilege" or "this kernel lacks a feature".
fn hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (flowlat needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; \
             check also kernel.unprivileged_bpf_disabled and lockdown)"
        }
        Some(libc::ENOSYS) => " (this kernel was built without the bpf() syscall)",
        Some(libc::ENOMEM) => {
            " (out of memory, or the locked-memory limit is too low: raise `ulimit -l`)"
        }
        _ => "",
    }
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::Sys { what, source } => write!(f, "{what}: {source}{}", hint(source)),
            BpfError::Verifier {
                program,
                source,
                log,
            } => {
                write!(
                    f,
                    "the kernel rejected BPF program {program}: {source}{}",
                    hint(source)
                )?;
                let tail = BpfError::verifier_tail(log, 5);
                if !tail.is_empty() {
                    write!(f, "; verifier log ends: {}", tail.join(" | "))?;
                }
                Ok(())
            }
            BpfError::Object(msg) => write!(f, "BPF object: {msg}"),
            BpfError::Invalid(msg) => f.write_str(msg),
            BpfError::Buffer {
                map,
                buffer: buffer @ (MapBuffer::Key | MapBuffer::Value),
                need,
                got,
            } => write!(
                f,
                "BPF map {map}: a {buffer} buffer of {got} bytes, where its {buffer}s take {need}"
            ),
            BpfError::Buffer {
                map,
                buffer,
                need,
                got,
            } => write!(
                f,
                "BPF map {map}: {got} bytes for a batch's {buffer}, which take at least {need}"
            ),
        }
    }
}

impl std::error::Error for BpfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BpfError::Sys { source, .. } | BpfError::Verifier { source, .. } => Some(source),
            BpfError::Object(_) | BpfError::Invalid(_) | BpfError::Buffer { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_name_the_capabilities() {
        let e = BpfError::sys(
            "creating map flowlat_pending",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let s = e.to_string();
        assert!(s.contains("creating map flowlat_pending"), "{s}");
        assert!(s.contains("CAP_BPF"), "{s}");
    }

    #[test]
    fn verifier_error_shows_last_lines() {
        let log = "0: r0 = 1\n1: exit\n\nR0 invalid mem access\nprocessed 2 insns\n";
        let e = BpfError::Verifier {
            program: "flowlat_egress".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
            log: log.into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("R0 invalid mem access | processed 2 insns"),
            "{s}"
        );
    }
}
