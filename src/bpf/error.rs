//! The error type of the generic BPF layer.

use std::fmt;
use std::io;

use super::insn;

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
    /// The ELF object holds something this loader does not support or cannot
    /// parse, lacks what its user asked for, or cannot be relocated.
    Object(ObjectError),
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
            BpfError::Object(e) => write!(f, "BPF object: {e}"),
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
            BpfError::Object(e) => e.source(),
            BpfError::Invalid(_) | BpfError::Buffer { .. } => None,
        }
    }
}

impl From<ObjectError> for BpfError {
    fn from(e: ObjectError) -> Self {
        BpfError::Object(e)
    }
}

/// The advice for initialised globals, which the loader has no map for.
pub(super) const DATA_HINT: &str = "initialised global variables and constants (.data, .rodata) \
                                    are not supported; leave globals zero-initialised (.bss), \
                                    or make them map values or #defines";
/// The advice for BPF-to-BPF calls, which the loader does not link.
pub(super) const CALL_HINT: &str =
    "BPF-to-BPF calls are not supported: mark the function __always_inline";

/// An instruction of a program in an object, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsnAt {
    /// The program's function.
    pub program: String,
    /// Its ELF section.
    pub section: String,
    /// The instruction's index (in `struct bpf_insn`s) in the section.
    pub insn: usize,
}

impl fmt::Display for InsnAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let InsnAt {
            program,
            section,
            insn,
        } = self;
        write!(
            f,
            "program {program} (section {section}) instruction {insn}"
        )
    }
}

/// What a relocation of an instruction refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referent {
    /// A map definition, by its symbol.
    Map(String),
    /// A section, through its section symbol (a static variable or constant).
    Section(String),
    /// A named symbol and the section it is defined in.
    Symbol {
        /// The symbol.
        name: String,
        /// Its section.
        section: String,
    },
}

impl fmt::Display for Referent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Referent::Map(name) => write!(f, "map {name}"),
            Referent::Section(section) => write!(f, "section {section}"),
            Referent::Symbol { name, section } => write!(f, "{name} in section {section}"),
        }
    }
}

/// Names a relocation type, or gives its number.
fn reloc_name(f: &mut fmt::Formatter<'_>, r_type: u32) -> fmt::Result {
    match insn::reloc_name(r_type) {
        Some(name) => f.write_str(name),
        None => write!(f, "relocation type {r_type}"),
    }
}

/// Why an ELF object cannot be loaded as it is ([`BpfError::Object`]): the
/// ELF is not a BPF relocatable object, it holds what this loader does not
/// support (see [`super::object`]), a relocation cannot be applied, or the
/// object lacks what its user looked for.
#[derive(Debug)]
#[non_exhaustive]
pub enum ObjectError {
    /// Fewer bytes than `e_ident`.
    TooShort {
        /// The bytes there are.
        len: usize,
    },
    /// `e_ident` does not start with `ELFMAG`.
    NotElf,
    /// `EI_CLASS` is not `ELFCLASS64`.
    NotElf64 {
        /// `EI_CLASS`.
        class: u8,
    },
    /// `EI_DATA` is not `ELFDATA2LSB`.
    NotLittleEndian {
        /// `EI_DATA`.
        encoding: u8,
    },
    /// `e_machine` is not `EM_BPF`.
    NotBpf {
        /// `e_machine`.
        machine: u16,
    },
    /// `e_type` is not `ET_REL`.
    NotRelocatable {
        /// `e_type`.
        kind: u16,
    },
    /// The ELF reader could not read a header, table or section.
    Malformed {
        /// What was being read.
        what: String,
        /// The reader's error.
        source: object::read::Error,
    },
    /// A name or the license is not UTF-8.
    NotUtf8 {
        /// What it is.
        what: String,
    },
    /// No section `license`.
    NoLicense,
    /// Section `license` has no NUL.
    LicenseNotTerminated,
    /// A symbol in section `maps` is not the size of `struct flowlat_map_def`.
    MapDefSize {
        /// The map's symbol.
        map: String,
        /// `st_size`.
        size: u64,
    },
    /// A map definition runs past the end of section `maps`.
    MapDefTruncated {
        /// The map's symbol.
        map: String,
        /// `st_value`.
        offset: u64,
        /// The section's size.
        section_len: usize,
    },
    /// Two map symbols have one name.
    DuplicateMap {
        /// The name.
        map: String,
    },
    /// Two map symbols have one offset.
    SharedMapOffset {
        /// The first map.
        first: String,
        /// The second map.
        second: String,
        /// The offset.
        offset: u64,
    },
    /// A relocation section applies to section `maps`, which holds integers only.
    MapsRelocated {
        /// The relocation section.
        rel_section: String,
    },
    /// The relocation section of a program is `SHT_RELA`.
    Rela {
        /// The relocation section.
        rel_section: String,
        /// The program section.
        section: String,
    },
    /// A relocation section cannot be read as `SHT_REL`.
    NotRel {
        /// The relocation section.
        rel_section: String,
    },
    /// A relocation section's `sh_link` is not the symbol table.
    RelLink {
        /// The relocation section.
        rel_section: String,
        /// `sh_link`.
        link: usize,
    },
    /// A program section is empty or not whole `struct bpf_insn`s.
    ProgramSize {
        /// The section.
        section: String,
        /// Its size in bytes.
        len: usize,
    },
    /// A program section has no `STT_FUNC` symbol.
    NoFunction {
        /// The section.
        section: String,
    },
    /// A program section has more than one `STT_FUNC` symbol.
    SeveralFunctions {
        /// The section.
        section: String,
        /// One function.
        first: String,
        /// Another.
        second: String,
    },
    /// A program's function does not start at offset 0 of its section.
    ProgramOffset {
        /// The function.
        program: String,
        /// The section.
        section: String,
        /// `st_value`.
        offset: u64,
    },
    /// A program's function does not cover its section.
    ProgramCoverage {
        /// The function.
        program: String,
        /// The section.
        section: String,
        /// `st_size`.
        size: u64,
        /// The section's size.
        len: usize,
    },
    /// A program's function is not `STB_GLOBAL`.
    NotGlobal {
        /// The function.
        program: String,
        /// The section.
        section: String,
    },
    /// The last instruction of a section is the first half of an `ld_imm64`.
    LdImm64CutOff {
        /// The instruction.
        at: InsnAt,
    },
    /// A call to another BPF function (`BPF_PSEUDO_CALL`, or an `R_BPF_64_32`).
    BpfToBpfCall {
        /// The call.
        at: InsnAt,
        /// The callee, when a relocation names it.
        callee: Option<String>,
    },
    /// A call to a kernel function (`BPF_PSEUDO_KFUNC_CALL`).
    KfuncCall {
        /// The call.
        at: InsnAt,
    },
    /// A call with another pseudo `src_reg`.
    UnsupportedCall {
        /// The call.
        at: InsnAt,
        /// Its `src_reg`.
        src_reg: u8,
    },
    /// A relocation's `r_offset` is not on an instruction of its section.
    RelocationOffset {
        /// The program section.
        section: String,
        /// `ELF64_R_TYPE`.
        r_type: u32,
        /// `r_offset`.
        offset: u64,
        /// The section's size in bytes.
        section_len: usize,
    },
    /// A relocation type other than `R_BPF_64_64` (and `R_BPF_64_32`, a call).
    UnsupportedRelocation {
        /// The instruction.
        at: InsnAt,
        /// `ELF64_R_TYPE`.
        r_type: u32,
        /// The symbol it is against.
        symbol: String,
    },
    /// Two relocations of one instruction.
    TwoRelocations {
        /// The program section.
        section: String,
        /// The instruction.
        insn: usize,
    },
    /// A relocation against a symbol this object does not define (an extern).
    UnknownSymbol {
        /// The instruction.
        at: InsnAt,
        /// The symbol.
        symbol: String,
    },
    /// A reference to an initialised global or constant (`.data`, `.rodata`).
    InitialisedData {
        /// The instruction.
        at: InsnAt,
        /// What it refers to.
        target: Referent,
    },
    /// The address of a function taken.
    FunctionPointer {
        /// The instruction.
        at: InsnAt,
        /// The function's section or symbol.
        target: Referent,
    },
    /// A reference to something other than a map or a `.bss` global.
    UnsupportedTarget {
        /// The instruction.
        at: InsnAt,
        /// What it refers to.
        target: Referent,
    },
    /// A reference into section `maps` where no map definition starts.
    NoMapAtOffset {
        /// The instruction.
        at: InsnAt,
        /// The offset in section `maps` (symbol value plus addend).
        offset: u64,
        /// The symbol it goes through.
        symbol: String,
    },
    /// A reference past the end of section `.bss`.
    BssOffset {
        /// The instruction.
        at: InsnAt,
        /// The offset in section `.bss`.
        offset: u64,
        /// The symbol it goes through.
        symbol: String,
        /// The section's size.
        size: u32,
    },
    /// A relocated instruction that is not an `ld_imm64`.
    NotLdImm64 {
        /// The instruction.
        at: InsnAt,
        /// What it refers to.
        target: Referent,
    },
    /// A relocated `ld_imm64` whose `src_reg` is already set.
    AlreadyRelocated {
        /// The instruction.
        at: InsnAt,
        /// What it refers to.
        target: Referent,
        /// Its `src_reg`.
        src_reg: u8,
    },
    /// Section `.bss` is larger than a map value can be.
    BssTooLarge {
        /// Its size.
        size: u64,
    },
    /// A symbol in `.bss` runs past its end.
    GlobalOutOfBss {
        /// The symbol.
        global: String,
        /// `st_value`.
        offset: u64,
        /// `st_size`.
        len: u64,
        /// The section's size.
        size: u32,
    },
    /// Relocating: a map reference to a map that was given no fd.
    UnknownMap {
        /// The instruction.
        at: InsnAt,
        /// The map.
        map: String,
    },
    /// Relocating: a map was given a negative fd.
    BadMapFd {
        /// The instruction.
        at: InsnAt,
        /// The map.
        map: String,
        /// The fd.
        fd: i32,
    },
    /// The object has no program of this name.
    NoProgram {
        /// The name asked for.
        name: String,
    },
    /// The object has no map of this name.
    NoMap {
        /// The name asked for.
        name: String,
    },
    /// The object has no global of this name, size and alignment.
    NoGlobal {
        /// The name asked for.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The alignment of its offset.
        align: u64,
    },
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ObjectError as E;
        match self {
            E::TooShort { len } => write!(f, "{len} bytes is too short for an ELF header"),
            E::NotElf => f.write_str("not an ELF file (bad magic)"),
            E::NotElf64 { class } => write!(
                f,
                "ELF class {class} is not ELFCLASS64: BPF objects are 64-bit (clang -target bpf)"
            ),
            E::NotLittleEndian { encoding } => write!(
                f,
                "ELF data encoding {encoding} is not ELFDATA2LSB: flowlat loads little-endian \
                 BPF objects (clang -target bpf on a little-endian host, or -target bpfel)"
            ),
            E::NotBpf { machine } => write!(
                f,
                "ELF machine {machine} is not EM_BPF ({}): compile with clang -target bpf",
                object::elf::EM_BPF.0
            ),
            E::NotRelocatable { kind } => write!(
                f,
                "ELF type {kind} is not ET_REL: expected an object from clang -c, not a linked file"
            ),
            E::Malformed { what, source } => write!(f, "{what}: {source}"),
            E::NotUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            E::NoLicense => {
                f.write_str("no license section: add `char SEC(\"license\") _license[] = \"GPL\";`")
            }
            E::LicenseNotTerminated => f.write_str("section license is not NUL-terminated"),
            E::MapDefSize { map, size } => write!(
                f,
                "map {map} in section maps is {size} bytes, \
                 not the {} of struct flowlat_map_def",
                // Five __u32, as object::MAP_DEF_SIZE reads them.
                5 * std::mem::size_of::<u32>()
            ),
            E::MapDefTruncated {
                map,
                offset,
                section_len,
            } => write!(
                f,
                "map {map}: its definition at offset {offset} is truncated \
                 (section maps holds {section_len} bytes)"
            ),
            E::DuplicateMap { map } => write!(f, "two maps are named {map}"),
            E::SharedMapOffset {
                first,
                second,
                offset,
            } => write!(
                f,
                "maps {first} and {second} share offset {offset} in section maps"
            ),
            E::MapsRelocated { rel_section } => write!(
                f,
                "section {rel_section} relocates section maps: map definitions must hold \
                 only the five integers of struct flowlat_map_def"
            ),
            E::Rela {
                rel_section,
                section,
            } => write!(
                f,
                "section {rel_section} for program section {section} is SHT_RELA; \
                 BPF objects use SHT_REL"
            ),
            E::NotRel { rel_section } => write!(f, "section {rel_section} is not SHT_REL"),
            E::RelLink { rel_section, link } => write!(
                f,
                "section {rel_section} links to section {link}, not the symbol table"
            ),
            E::ProgramSize { section, len } => write!(
                f,
                "program section {section} holds {len} bytes, \
                 not a non-zero multiple of 8 (struct bpf_insn)"
            ),
            E::NoFunction { section } => {
                write!(f, "program section {section} has no function symbol")
            }
            E::SeveralFunctions {
                section,
                first,
                second,
            } => write!(
                f,
                "program section {section} holds functions {first} and {second}: \
                 flowlat expects one program per section (and {CALL_HINT})"
            ),
            E::ProgramOffset {
                program,
                section,
                offset,
            } => write!(
                f,
                "program {program} starts at offset {offset} of section {section}, not 0"
            ),
            E::ProgramCoverage {
                program,
                section,
                size,
                len,
            } => write!(
                f,
                "program {program} covers {size} of the {len} bytes of section {section}; \
                 one function per program section"
            ),
            E::NotGlobal { program, section } => write!(
                f,
                "program {program} in section {section} is not global (is it static?)"
            ),
            E::LdImm64CutOff { at } => {
                write!(f, "{at}: ld_imm64 is cut off by the end of the section")
            }
            E::BpfToBpfCall { at, callee: None } => write!(f, "{at}: {CALL_HINT}"),
            E::BpfToBpfCall {
                at,
                callee: Some(callee),
            } => write!(f, "{at} calls {callee}: {CALL_HINT}"),
            E::KfuncCall { at } => write!(
                f,
                "{at}: calls to kernel functions (kfuncs) are not supported"
            ),
            E::UnsupportedCall { at, src_reg } => {
                write!(f, "{at}: call with src_reg {src_reg} is not supported")
            }
            E::RelocationOffset {
                section,
                r_type,
                offset,
                section_len,
            } => {
                write!(f, "section {section}: ")?;
                reloc_name(f, *r_type)?;
                write!(
                    f,
                    " at offset {offset} is not on an instruction \
                     (the section holds {section_len} bytes)"
                )
            }
            E::UnsupportedRelocation { at, r_type, symbol } => {
                write!(f, "{at}: ")?;
                reloc_name(f, *r_type)?;
                write!(f, " against {symbol} is not supported in a program section")
            }
            E::TwoRelocations { section, insn } => write!(
                f,
                "section {section}: instruction {insn} has two relocations"
            ),
            E::UnknownSymbol { at, symbol } => write!(
                f,
                "{at} refers to {symbol}, which is not defined in this object \
                 (extern variables, kconfig and ksyms are not supported)"
            ),
            E::InitialisedData { at, target } => write!(f, "{at} refers to {target}: {DATA_HINT}"),
            E::FunctionPointer { at, target } => write!(
                f,
                "{at} takes the address of {target}: \
                 function pointers and callbacks are not supported"
            ),
            E::UnsupportedTarget { at, target } => write!(
                f,
                "{at} refers to {target}: only maps (in section maps) and \
                 zero-initialised globals (in section .bss) can be referenced"
            ),
            E::NoMapAtOffset { at, offset, symbol } => write!(
                f,
                "{at} refers to offset {offset} of section maps (through {symbol}), \
                 where no map definition starts"
            ),
            E::BssOffset {
                at,
                offset,
                symbol,
                size,
            } => write!(
                f,
                "{at} refers to offset {offset} of section .bss (through {symbol}), \
                 which holds {size} bytes"
            ),
            E::NotLdImm64 { at, target } => write!(
                f,
                "{at} refers to {target}, but is not an ld_imm64 (opcode 0x18)"
            ),
            E::AlreadyRelocated {
                at,
                target,
                src_reg,
            } => write!(
                f,
                "{at} refers to {target}, but its ld_imm64 already has src_reg {src_reg}"
            ),
            E::BssTooLarge { size } => write!(
                f,
                "section .bss holds {size} bytes, too many for a map value"
            ),
            E::GlobalOutOfBss {
                global,
                offset,
                len,
                size,
            } => write!(
                f,
                "global {global} (offset {offset}, {len} bytes) lies beyond section .bss \
                 ({size} bytes)"
            ),
            E::UnknownMap { at, map } => write!(f, "{at} refers to map {map}, which has no fd"),
            E::BadMapFd { at, map, fd } => write!(f, "{at}: map {map} was given fd {fd}"),
            E::NoProgram { name } => write!(f, "no program named {name}"),
            E::NoMap { name } => write!(f, "no map named {name}"),
            E::NoGlobal { name, size, align } => {
                write!(f, "no {align}-byte-aligned global {name} of {size} bytes")
            }
        }
    }
}

impl std::error::Error for ObjectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ObjectError::Malformed { source, .. } => Some(source),
            _ => None,
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
