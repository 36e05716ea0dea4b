//! The crate's error: a failure of a run, from whichever layer, with the
//! advice each layer gives.

use std::fmt;
use std::io;

use crate::bpf::BpfError;
use crate::host::privilege::{self, Facts};
use crate::netlink::NetlinkError;

/// A failure of the run, from whichever layer; each carries its own advice.
pub enum Error {
    Bpf(BpfError),
    Netlink(NetlinkError),
    Other(String),
    /// The kernel refused a privileged operation although the capabilities
    /// are there; the text says which setting may be why.
    Refused(Box<Error>, String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bpf(e) => e.fmt(f),
            Error::Netlink(e) => e.fmt(f),
            Error::Other(s) => f.write_str(s),
            Error::Refused(e, why) => write!(f, "{e}; {why}"),
        }
    }
}

impl From<BpfError> for Error {
    fn from(e: BpfError) -> Self {
        Error::Bpf(e)
    }
}

impl From<NetlinkError> for Error {
    fn from(e: NetlinkError) -> Self {
        Error::Netlink(e)
    }
}

impl Error {
    /// Adds why the kernel may have refused, when it answered EPERM or EACCES.
    /// A verifier's EACCES is its verdict on the program, not a privilege matter.
    pub fn explained(self, facts: &Facts) -> Error {
        use std::error::Error as _;
        let errno = match &self {
            Error::Bpf(e @ BpfError::Sys { .. }) => e
                .source()
                .and_then(|s| s.downcast_ref::<io::Error>())
                .and_then(io::Error::raw_os_error),
            Error::Bpf(BpfError::Verifier { source, .. }) => {
                source.raw_os_error().filter(|&e| e == libc::EPERM)
            }
            Error::Netlink(e) => e.errno(),
            _ => None,
        };
        match errno {
            Some(libc::EPERM | libc::EACCES) => {
                let why = privilege::explain_refusal(facts);
                Error::Refused(Box::new(self), why)
            }
            _ => self,
        }
    }
}
