//! A small, generic layer over the kernel's BPF ABI: syscalls, ELF objects and
//! perf rings. It knows nothing of flowlat's records; `src/probe.rs` does.

pub mod cpu;
mod error;
pub mod insn;
pub mod map;
pub mod mmap;
pub mod object;
pub mod perf;
pub mod sys;

pub use error::{BpfError, InsnAt, MapBuffer, ObjectError, Referent};
