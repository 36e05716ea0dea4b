#![warn(missing_docs)]

//! A small, generic layer over the kernel's BPF ABI: syscalls, ELF objects and
//! perf rings. It knows nothing of flowlat's records; `src/probe/` does.
//!
//! - [`sys`]: the `bpf(2)` syscall (`union bpf_attr`) and the program commands.
//! - [`btf`]: the least BTF a map that requires one needs.
//! - [`map`]: maps, whose element commands check their buffers against the
//!   map's `key_size` and `value_size` before the kernel follows a pointer.
//! - [`insn`]: `struct bpf_insn`, and the opcodes and relocations the loader patches.
//! - [`link`]: BPF links that attach programs to cgroups, and the query of
//!   what is attached.
//! - [`object`]: the ELF objects of `clang -target bpf`, and their relocation.
//! - [`perf`] and [`mmap`]: perf event rings and shared mappings of maps.
//! - [`cpu`]: the CPU lists of sysfs that size rings and per-CPU values.
//!
//! Every public item is documented (`missing_docs` keeps it so), each with
//! the kernel ABI it mirrors.

pub mod btf;
pub mod cpu;
mod error;
pub mod insn;
pub mod link;
pub mod map;
pub mod mmap;
pub mod object;
pub mod perf;
pub mod sys;

pub use error::{BpfError, InsnAt, MapBuffer, ObjectError, Referent};
