//! Reads the ELF relocatable objects that `clang -target bpf` writes, in flowlat's
//! own convention (no BTF maps, no libbpf):
//!
//! - maps are legacy definitions, `struct flowlat_map_def` (five little-endian
//!   `__u32`: type, key_size, value_size, max_entries, map_flags), one per symbol
//!   in section `maps`, named by that symbol;
//! - every executable section other than `.text` holds exactly one program, the
//!   global `STT_FUNC` symbol at its offset 0; the section name says its kind;
//! - section `license` holds a NUL-terminated string;
//! - the `SHT_REL` section of a program section holds one `R_BPF_64_64` per
//!   `ld_imm64` that loads a map's address, which [`Program::relocate`] turns into
//!   a `BPF_PSEUDO_MAP_FD` load of the map's fd;
//! - zero-initialised globals live in section `.bss`, which becomes one map
//!   (named [`BSS_MAP`]: an array of one value the size of the section,
//!   `BPF_F_MMAPABLE` so that user space can share it), and an `ld_imm64` that
//!   loads a global's address becomes a `BPF_PSEUDO_MAP_VALUE` load: the
//!   address of that offset in the map's value, with no lookup at run time.
//!
//! Anything else a program section depends on (initialised globals in
//! `.data`/`.rodata`, BPF-to-BPF calls, externs, other relocation types) is
//! refused with an [`ObjectError`] naming the section, symbol and
//! instruction, so that a program is never loaded with an address the kernel
//! would read as zero.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, Rel, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{LittleEndian, SectionIndex, SymbolIndex};

use super::error::{InsnAt, ObjectError, Referent};
use super::insn::{
    Insn, BPF_CALL, BPF_LD_IMM64, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE, R_BPF_64_32, R_BPF_64_64,
};
use super::map::{MapAttr, BPF_F_MMAPABLE, BPF_MAP_TYPE_ARRAY};

type Elf = FileHeader64<LittleEndian>;

/// Size of one `struct bpf_insn`, in which ELF offsets count; `ld_imm64` takes two.
const INSN_SIZE: usize = Insn::SIZE;

/// `sizeof(struct flowlat_map_def)`: five `__u32`.
const MAP_DEF_SIZE: usize = 5 * 4;

const MAPS_SECTION: &[u8] = b"maps";
const LICENSE_SECTION: &[u8] = b"license";
const BSS_SECTION: &[u8] = b".bss";
/// The name of the map made for section `.bss` (no C symbol can clash with it).
pub const BSS_MAP: &str = ".bss";
/// Holds functions that no program section owns: only ever reached by a BPF-to-BPF call.
const TEXT_SECTION: &[u8] = b".text";

/// A legacy map definition: one `struct flowlat_map_def` in section `maps`,
/// the same five fields that `BPF_MAP_CREATE` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    /// The name of the symbol that defines the map.
    pub name: String,
    /// `map_type`, a `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// `key_size` in bytes.
    pub key_size: u32,
    /// `value_size` in bytes.
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags` (`BPF_F_*`).
    pub map_flags: u32,
}

impl MapDef {
    /// The `BPF_MAP_CREATE` attributes of this map.
    pub fn attr(&self) -> MapAttr {
        MapAttr {
            map_type: self.map_type,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
            map_flags: self.map_flags,
        }
    }
}

/// One map reference in a program: an `R_BPF_64_64` relocation on an `ld_imm64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRef {
    /// Index (in 8-byte `struct bpf_insn` units) of the first half of the `ld_imm64`.
    pub insn: usize,
    /// The name of the map it loads.
    pub map: String,
    /// `None` for the map itself (`BPF_PSEUDO_MAP_FD`); for a global in `.bss`,
    /// the offset of the address it loads in the map's value (`BPF_PSEUDO_MAP_VALUE`).
    pub value_offset: Option<u32>,
}

/// A zero-initialised global variable: a symbol in section `.bss`, which is the
/// value of the map [`BSS_MAP`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// The symbol's name.
    pub name: String,
    /// Its offset in the section, and so in the map's value.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// One program: the instructions of one executable section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The name of the function at offset 0 of the section.
    pub name: String,
    /// The ELF section name, e.g. `tc/ingress`; it says what kind of program this is.
    pub section: String,
    /// The instructions as clang wrote them, map references unpatched.
    pub insns: Vec<Insn>,
    /// Every map reference, by instruction index.
    pub map_refs: Vec<MapRef>,
}

/// A parsed BPF ELF object: its license, maps and programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The contents of section `license` up to its NUL.
    pub license: String,
    /// The map definitions, in the order of their offsets in section `maps`, then
    /// the map [`BSS_MAP`] when the object has zero-initialised globals.
    pub maps: Vec<MapDef>,
    /// The zero-initialised globals, in the order of their offsets.
    pub globals: Vec<Global>,
    /// The programs, in section order.
    pub programs: Vec<Program>,
}

/// Wraps an error of the ELF reader with what we were reading.
fn elf_err(what: impl std::fmt::Display) -> impl FnOnce(object::read::Error) -> ObjectError {
    move |source| ObjectError::Malformed {
        what: what.to_string(),
        source,
    }
}

fn utf8(bytes: &[u8], what: impl std::fmt::Display) -> Result<String, ObjectError> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| ObjectError::NotUtf8 {
            what: what.to_string(),
        })
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn is_data_section(name: &str) -> bool {
    let in_family = |base: &str| {
        name.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    in_family(".data") || in_family(".bss") || name.starts_with(".rodata")
}

/// Checks `e_ident` ourselves so that the common mistakes get a precise message.
fn check_ident(data: &[u8]) -> Result<(), ObjectError> {
    let ident = data
        .get(..16)
        .ok_or(ObjectError::TooShort { len: data.len() })?;
    if ident[..4] != elf::ELFMAG {
        return Err(ObjectError::NotElf);
    }
    if ident[4] != elf::ELFCLASS64.0 {
        return Err(ObjectError::NotElf64 { class: ident[4] });
    }
    if ident[5] != elf::ELFDATA2LSB.0 {
        return Err(ObjectError::NotLittleEndian { encoding: ident[5] });
    }
    Ok(())
}

/// The ELF file and the tables every step needs.
struct Reader<'a> {
    data: &'a [u8],
    endian: LittleEndian,
    sections: SectionTable<'a, Elf, &'a [u8]>,
    symbols: SymbolTable<'a, Elf, &'a [u8]>,
}

/// What the instruction walk of one program section found.
#[derive(Default)]
struct Scan {
    /// Indexes of the `ld_imm64` instructions, ascending: the only places a map
    /// relocation may land.
    ld_imm64: Vec<usize>,
    /// Indexes and `src_reg` of the `call`s that are not helper calls. They are
    /// refused after the relocations, whose message can name the callee.
    calls: Vec<(usize, u8)>,
}

/// A symbol resolved enough for the relocation checks and for messages.
struct Symbol<'a> {
    name: String,
    section: Option<SectionIndex>,
    sym: &'a elf::Sym64<LittleEndian>,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Result<Self, ObjectError> {
        check_ident(data)?;
        let header = Elf::parse(data).map_err(elf_err("reading the ELF header"))?;
        let endian = header.endian().map_err(elf_err("reading the ELF header"))?;
        let machine = header.e_machine(endian);
        if machine != elf::EM_BPF {
            return Err(ObjectError::NotBpf { machine: machine.0 });
        }
        let kind = header.e_type(endian);
        if kind != elf::ET_REL {
            return Err(ObjectError::NotRelocatable { kind: kind.0 });
        }
        let sections = header
            .sections(endian, data)
            .map_err(elf_err("reading the ELF section headers"))?;
        let symbols = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(elf_err("reading the ELF symbol table"))?;
        Ok(Reader {
            data,
            endian,
            sections,
            symbols,
        })
    }

    fn section_name(&self, index: SectionIndex) -> Result<String, ObjectError> {
        let header = self
            .sections
            .section(index)
            .map_err(elf_err(format_args!("reading section {}", index.0)))?;
        let name = self
            .sections
            .section_name(self.endian, header)
            .map_err(elf_err(format_args!(
                "reading the name of section {}",
                index.0
            )))?;
        utf8(name, format_args!("the name of section {}", index.0))
    }

    fn section_data(&self, index: SectionIndex, name: &str) -> Result<&'a [u8], ObjectError> {
        self.sections
            .section(index)
            .and_then(|h| h.data(self.endian, self.data))
            .map_err(elf_err(format_args!("reading section {name}")))
    }

    fn section_by_name(
        &self,
        name: &[u8],
    ) -> Option<(SectionIndex, &'a elf::SectionHeader64<LittleEndian>)> {
        self.sections.section_by_name(self.endian, name)
    }

    /// Resolves symbol `index`; a section symbol (`STT_SECTION`, nameless) is named
    /// after its section.
    fn symbol(&self, index: SymbolIndex) -> Result<Symbol<'a>, ObjectError> {
        let sym = self
            .symbols
            .symbol(index)
            .map_err(elf_err(format_args!("reading symbol {}", index.0)))?;
        let section = self
            .symbols
            .symbol_section(self.endian, sym, index)
            .map_err(elf_err(format_args!(
                "reading the section of symbol {}",
                index.0
            )))?;
        let raw = self
            .symbols
            .symbol_name(self.endian, sym)
            .map_err(elf_err(format_args!(
                "reading the name of symbol {}",
                index.0
            )))?;
        let name = match (sym.st_type(), section) {
            (elf::STT_SECTION, Some(s)) if raw.is_empty() => self.section_name(s)?,
            _ => utf8(raw, format_args!("the name of symbol {}", index.0))?,
        };
        Ok(Symbol { name, section, sym })
    }

    /// Every symbol defined in `section`, skipping section and file symbols.
    fn symbols_in(&self, section: SectionIndex) -> Result<Vec<Symbol<'a>>, ObjectError> {
        let mut out = Vec::new();
        for (index, sym) in self.symbols.enumerate().skip(1) {
            if matches!(sym.st_type(), elf::STT_SECTION | elf::STT_FILE) {
                continue;
            }
            let in_section = self
                .symbols
                .symbol_section(self.endian, sym, index)
                .map_err(elf_err(format_args!(
                    "reading the section of symbol {}",
                    index.0
                )))?;
            if in_section == Some(section) {
                out.push(self.symbol(index)?);
            }
        }
        Ok(out)
    }

    fn license(&self) -> Result<String, ObjectError> {
        let (index, _) = self
            .section_by_name(LICENSE_SECTION)
            .ok_or(ObjectError::NoLicense)?;
        let data = self.section_data(index, "license")?;
        let end = data
            .iter()
            .position(|&b| b == 0)
            .ok_or(ObjectError::LicenseNotTerminated)?;
        utf8(&data[..end], "the license")
    }

    /// The map definitions with their offsets in section `maps`, by offset.
    fn maps(&self) -> Result<(Option<SectionIndex>, BTreeMap<u64, MapDef>), ObjectError> {
        let Some((index, _)) = self.section_by_name(MAPS_SECTION) else {
            return Ok((None, BTreeMap::new()));
        };
        let data = self.section_data(index, "maps")?;
        let mut maps = BTreeMap::new();
        for symbol in self.symbols_in(index)? {
            let offset = symbol.sym.st_value(self.endian);
            let size = symbol.sym.st_size(self.endian);
            let name = symbol.name;
            if size != MAP_DEF_SIZE as u64 {
                return Err(ObjectError::MapDefSize { map: name, size });
            }
            let Some(def) = usize::try_from(offset)
                .ok()
                .and_then(|at| data.get(at..at.checked_add(MAP_DEF_SIZE)?))
            else {
                return Err(ObjectError::MapDefTruncated {
                    map: name,
                    offset,
                    section_len: data.len(),
                });
            };
            let field = |i: usize| u32_at(def, i * 4).unwrap_or_default();
            let map = MapDef {
                map_type: field(0),
                key_size: field(1),
                value_size: field(2),
                max_entries: field(3),
                map_flags: field(4),
                name,
            };
            // Static maps in different functions' scopes may share a name; aliases
            // may share an offset. Either way one name would not mean one map.
            if maps.values().any(|m: &MapDef| m.name == map.name) {
                return Err(ObjectError::DuplicateMap { map: map.name });
            }
            if let Some(other) = maps.get(&offset) {
                return Err(ObjectError::SharedMapOffset {
                    first: other.name.clone(),
                    second: map.name,
                    offset,
                });
            }
            maps.insert(offset, map);
        }
        Ok((Some(index), maps))
    }

    fn is_program_section(&self, header: &elf::SectionHeader64<LittleEndian>, name: &[u8]) -> bool {
        header.sh_flags(self.endian).contains(elf::SHF_EXECINSTR) && name != TEXT_SECTION
    }

    fn programs(
        &self,
        maps_index: Option<SectionIndex>,
        maps: &BTreeMap<u64, MapDef>,
        bss: Option<&Bss>,
    ) -> Result<Vec<Program>, ObjectError> {
        let mut programs = Vec::new();
        let mut scans = Vec::new();
        let mut by_section = BTreeMap::new();
        for (index, header) in self.sections.enumerate().skip(1) {
            let name = self.section_name(index)?;
            if !self.is_program_section(header, name.as_bytes()) {
                continue;
            }
            let (program, scan) = self.program(index, name)?;
            by_section.insert(index.0, programs.len());
            programs.push(program);
            scans.push(scan);
        }

        for (_, header) in self.sections.enumerate().skip(1) {
            let kind = header.sh_type(self.endian);
            if kind != elf::SHT_REL && kind != elf::SHT_RELA {
                continue;
            }
            let target = header.info_link(self.endian);
            let rel_name = self
                .sections
                .section_name(self.endian, header)
                .ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .unwrap_or("?")
                .to_string();
            if Some(target) == maps_index {
                // Our definitions are plain integers: a relocation here means the
                // section holds something else, e.g. a pointer to an inner map.
                return Err(ObjectError::MapsRelocated {
                    rel_section: rel_name,
                });
            }
            let Some(&at) = by_section.get(&target.0) else {
                continue;
            };
            let program = &mut programs[at];
            if kind == elf::SHT_RELA {
                return Err(ObjectError::Rela {
                    rel_section: rel_name,
                    section: program.section.clone(),
                });
            }
            let Some((rels, link)) = header
                .rel(self.endian, self.data)
                .map_err(elf_err(format_args!("reading section {rel_name}")))?
            else {
                return Err(ObjectError::NotRel {
                    rel_section: rel_name,
                });
            };
            if link != self.symbols.section() {
                return Err(ObjectError::RelLink {
                    rel_section: rel_name,
                    link: link.0,
                });
            }
            for rel in rels {
                self.relocation(program, &scans[at], rel, maps_index, maps, bss)?;
            }
        }
        for (program, scan) in programs.iter_mut().zip(&scans) {
            if let Some(&(index, src_reg)) = scan.calls.first() {
                let at = program.at(index);
                return Err(match src_reg {
                    BPF_PSEUDO_CALL => ObjectError::BpfToBpfCall { at, callee: None },
                    BPF_PSEUDO_KFUNC_CALL => ObjectError::KfuncCall { at },
                    _ => ObjectError::UnsupportedCall { at, src_reg },
                });
            }
            program.map_refs.sort_by_key(|r| r.insn);
            if let Some(pair) = program.map_refs.windows(2).find(|w| w[0].insn == w[1].insn) {
                return Err(ObjectError::TwoRelocations {
                    section: program.section.clone(),
                    insn: pair[0].insn,
                });
            }
        }
        Ok(programs)
    }

    /// Reads one program section and walks its instructions (see [`Scan`]).
    fn program(
        &self,
        index: SectionIndex,
        section: String,
    ) -> Result<(Program, Scan), ObjectError> {
        let bytes = self.section_data(index, &section)?;
        let Some(insns) = Insn::decode(bytes).filter(|insns| !insns.is_empty()) else {
            return Err(ObjectError::ProgramSize {
                section,
                len: bytes.len(),
            });
        };
        let funcs: Vec<Symbol<'_>> = self
            .symbols_in(index)?
            .into_iter()
            .filter(|s| s.sym.st_type() == elf::STT_FUNC)
            .collect();
        let func = match funcs.as_slice() {
            [f] => f,
            [] => return Err(ObjectError::NoFunction { section }),
            [a, b, ..] => {
                return Err(ObjectError::SeveralFunctions {
                    section,
                    first: a.name.clone(),
                    second: b.name.clone(),
                })
            }
        };
        let name = func.name.clone();
        let offset = func.sym.st_value(self.endian);
        if offset != 0 {
            return Err(ObjectError::ProgramOffset {
                program: name,
                section,
                offset,
            });
        }
        let size = func.sym.st_size(self.endian);
        if size != bytes.len() as u64 {
            return Err(ObjectError::ProgramCoverage {
                program: name,
                section,
                size,
                len: bytes.len(),
            });
        }
        if func.sym.st_bind() != elf::STB_GLOBAL {
            return Err(ObjectError::NotGlobal {
                program: name,
                section,
            });
        }

        let mut scan = Scan::default();
        let mut index = 0;
        while let Some(insn) = insns.get(index) {
            match insn.code {
                BPF_CALL if insn.src_reg() != 0 => scan.calls.push((index, insn.src_reg())),
                BPF_LD_IMM64 => {
                    if index + 2 > insns.len() {
                        return Err(ObjectError::LdImm64CutOff {
                            at: InsnAt {
                                program: name,
                                section,
                                insn: index,
                            },
                        });
                    }
                    scan.ld_imm64.push(index);
                    index += 1;
                }
                _ => {}
            }
            index += 1;
        }

        let program = Program {
            name,
            section,
            insns,
            map_refs: Vec::new(),
        };
        Ok((program, scan))
    }

    /// The name of the function a relocated `call` reaches. For a static callee clang
    /// relocates against the section symbol and encodes the callee's offset in the
    /// call's `imm`, as `(offset - symbol value) / 8 - 1`.
    fn callee(&self, symbol: &Symbol<'_>, call: Insn) -> String {
        let (Some(section), elf::STT_SECTION) = (symbol.section, symbol.sym.st_type()) else {
            return symbol.name.clone();
        };
        let offset = Some(call.imm).and_then(|imm| {
            let slots = i64::from(imm)
                .checked_add(1)?
                .checked_mul(INSN_SIZE as i64)?;
            let base = i64::try_from(symbol.sym.st_value(self.endian)).ok()?;
            u64::try_from(base.checked_add(slots)?).ok()
        });
        let found = self.symbols_in(section).ok().and_then(|funcs| {
            funcs.into_iter().find(|f| {
                f.sym.st_type() == elf::STT_FUNC && Some(f.sym.st_value(self.endian)) == offset
            })
        });
        match found {
            Some(f) => f.name,
            None => format!("a function in section {}", symbol.name),
        }
    }

    /// Checks one `SHT_REL` entry of `program`'s section and records it if it is a map reference.
    fn relocation(
        &self,
        program: &mut Program,
        scan: &Scan,
        rel: &elf::Rel64<LittleEndian>,
        maps_index: Option<SectionIndex>,
        maps: &BTreeMap<u64, MapDef>,
        bss: Option<&Bss>,
    ) -> Result<(), ObjectError> {
        let offset = rel.r_offset(self.endian);
        let r_type = rel.r_type(self.endian).0;
        let Some(index) = usize::try_from(offset)
            .ok()
            .filter(|&at| at.is_multiple_of(INSN_SIZE))
            .map(|at| at / INSN_SIZE)
            .filter(|&index| index < program.insns.len())
        else {
            return Err(ObjectError::RelocationOffset {
                section: program.section.clone(),
                r_type,
                offset,
                section_len: program.insns.len() * INSN_SIZE,
            });
        };
        let sym_index = SymbolIndex(rel.r_sym(self.endian) as usize);
        let symbol = self.symbol(sym_index)?;
        let target_section = match symbol.section {
            Some(s) => Some((s, self.section_name(s)?)),
            None => None,
        };
        let at = program.at(index);

        match r_type {
            R_BPF_64_64 => {}
            R_BPF_64_32 => {
                let callee = self.callee(&symbol, program.insns[index]);
                return Err(ObjectError::BpfToBpfCall {
                    at,
                    callee: Some(callee),
                });
            }
            _ => {
                return Err(ObjectError::UnsupportedRelocation {
                    at,
                    r_type,
                    symbol: symbol.name,
                })
            }
        }
        let Some((target_index, target_section)) = target_section else {
            return Err(ObjectError::UnknownSymbol {
                at,
                symbol: symbol.name,
            });
        };
        let target = if symbol.sym.st_type() == elf::STT_SECTION {
            Referent::Section(target_section.clone())
        } else {
            Referent::Symbol {
                name: symbol.name.clone(),
                section: target_section.clone(),
            }
        };
        if let Some(bss) = bss.filter(|b| b.index == target_index) {
            let addend = Self::ld_imm64_addend(program, scan, &at, target)?;
            let offset = symbol.sym.st_value(self.endian).wrapping_add(addend);
            let Some(offset) = u32::try_from(offset).ok().filter(|&o| o < bss.size) else {
                return Err(ObjectError::BssOffset {
                    at,
                    offset,
                    symbol: symbol.name,
                    size: bss.size,
                });
            };
            program.map_refs.push(MapRef {
                insn: index,
                map: BSS_MAP.to_string(),
                value_offset: Some(offset),
            });
            return Ok(());
        }
        if is_data_section(&target_section) {
            return Err(ObjectError::InitialisedData { at, target });
        }
        if Some(target_index) != maps_index {
            let header = self
                .sections
                .section(target_index)
                .map_err(elf_err(format_args!("reading section {target_section}")))?;
            if header.sh_flags(self.endian).contains(elf::SHF_EXECINSTR) {
                return Err(ObjectError::FunctionPointer { at, target });
            }
            return Err(ObjectError::UnsupportedTarget { at, target });
        }
        let map = Referent::Map(symbol.name.clone());
        let addend = Self::ld_imm64_addend(program, scan, &at, map)?;
        let def_offset = symbol.sym.st_value(self.endian).wrapping_add(addend);
        let Some(map) = maps.get(&def_offset) else {
            return Err(ObjectError::NoMapAtOffset {
                at,
                offset: def_offset,
                symbol: symbol.name,
            });
        };
        program.map_refs.push(MapRef {
            insn: index,
            map: map.name.clone(),
            value_offset: None,
        });
        Ok(())
    }

    /// Checks that a relocated instruction is an unpatched `ld_imm64`, and returns
    /// its addend. In SHT_REL the addend is the instruction's own 64-bit immediate,
    /// split over both halves: clang leaves it 0 for a global symbol and puts the
    /// offset there when it refers to a static map or variable through the section
    /// symbol.
    fn ld_imm64_addend(
        program: &Program,
        scan: &Scan,
        at: &InsnAt,
        target: Referent,
    ) -> Result<u64, ObjectError> {
        let index = at.insn;
        let Some([first, second]) = program
            .insns
            .get(index..index + 2)
            .filter(|_| scan.ld_imm64.binary_search(&index).is_ok())
        else {
            return Err(ObjectError::NotLdImm64 {
                at: at.clone(),
                target,
            });
        };
        if first.src_reg() != 0 {
            return Err(ObjectError::AlreadyRelocated {
                at: at.clone(),
                target,
                src_reg: first.src_reg(),
            });
        }
        // Each half holds 32 bits of the immediate; `as u32` takes them as they are.
        Ok((u64::from(second.imm as u32) << 32) | u64::from(first.imm as u32))
    }

    /// Section `.bss`, if the object has one with globals in it.
    fn bss(&self) -> Result<Option<Bss>, ObjectError> {
        let Some((index, header)) = self.section_by_name(BSS_SECTION) else {
            return Ok(None);
        };
        let size = header.sh_size(self.endian);
        if size == 0 {
            return Ok(None);
        }
        let size = u32::try_from(size).map_err(|_| ObjectError::BssTooLarge { size })?;
        let mut globals = Vec::new();
        for symbol in self.symbols_in(index)? {
            let offset = symbol.sym.st_value(self.endian);
            let len = symbol.sym.st_size(self.endian);
            if offset
                .checked_add(len)
                .is_none_or(|end| end > u64::from(size))
            {
                return Err(ObjectError::GlobalOutOfBss {
                    global: symbol.name,
                    offset,
                    len,
                    size,
                });
            }
            globals.push(Global {
                name: symbol.name,
                offset,
                size: len,
            });
        }
        globals.sort_by_key(|g| g.offset);
        Ok(Some(Bss {
            index,
            size,
            globals,
        }))
    }
}

/// Section `.bss`: where it is, its size, and the globals in it.
struct Bss {
    index: SectionIndex,
    size: u32,
    globals: Vec<Global>,
}

impl Object {
    /// Parses a BPF ELF object (`ELFCLASS64`, `ELFDATA2LSB`, `EM_BPF`, `ET_REL`) in
    /// flowlat's convention; see the module documentation. Fails with the
    /// [`ObjectError`] of the first thing it does not understand, never panics.
    pub fn parse(elf: &[u8]) -> Result<Object, ObjectError> {
        let reader = Reader::new(elf)?;
        let license = reader.license()?;
        let (maps_index, maps) = reader.maps()?;
        let bss = reader.bss()?;
        let programs = reader.programs(maps_index, &maps, bss.as_ref())?;
        let mut maps: Vec<MapDef> = maps.into_values().collect();
        let mut globals = Vec::new();
        if let Some(bss) = bss {
            maps.push(MapDef {
                name: BSS_MAP.to_string(),
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: bss.size,
                max_entries: 1,
                map_flags: BPF_F_MMAPABLE,
            });
            globals = bss.globals;
        }
        Ok(Object {
            license,
            maps,
            programs,
            globals,
        })
    }

    /// The program whose function is named `name`.
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The map whose symbol is named `name`.
    pub fn map(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The zero-initialised global named `name`.
    pub fn global(&self, name: &str) -> Option<&Global> {
        self.globals.iter().find(|g| g.name == name)
    }
}

impl Program {
    /// Instruction `insn` of this program, as errors name it.
    fn at(&self, insn: usize) -> InsnAt {
        InsnAt {
            program: self.name.clone(),
            section: self.section.clone(),
            insn,
        }
    }

    /// Instructions with every map reference patched to the fd that
    /// `fd_of(map_name)` returns: in each `ld_imm64`, `src_reg` becomes
    /// `BPF_PSEUDO_MAP_FD` and the second `imm` 0, or for a global
    /// `BPF_PSEUDO_MAP_VALUE` and the second `imm` its offset; the first `imm`
    /// becomes the fd. Every other field is left as it was.
    pub fn relocate(
        &self,
        fd_of: impl Fn(&str) -> Option<RawFd>,
    ) -> Result<Vec<Insn>, ObjectError> {
        let mut insns = self.insns.clone();
        for r in &self.map_refs {
            let at = || self.at(r.insn);
            let map = || r.map.clone();
            let Some(fd) = fd_of(&r.map) else {
                return Err(ObjectError::UnknownMap {
                    at: at(),
                    map: map(),
                });
            };
            if fd < 0 {
                return Err(ObjectError::BadMapFd {
                    at: at(),
                    map: map(),
                    fd,
                });
            }
            // `map_refs` is public, so it is checked again rather than trusted.
            let Some([first, second]) = r
                .insn
                .checked_add(2)
                .and_then(|end| insns.get_mut(r.insn..end))
                .filter(|pair| pair[0].code == BPF_LD_IMM64)
            else {
                return Err(ObjectError::NotLdImm64 {
                    at: at(),
                    target: Referent::Map(map()),
                });
            };
            let (src_reg, offset) = match r.value_offset {
                None => (BPF_PSEUDO_MAP_FD, 0),
                Some(offset) => (BPF_PSEUDO_MAP_VALUE, offset),
            };
            first.set_src_reg(src_reg);
            first.imm = fd;
            // The kernel reads the offset as the upper half's 32 bits.
            second.imm = offset as i32;
        }
        Ok(insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::error::{CALL_HINT, DATA_HINT};
    use crate::bpf::insn::{R_BPF_64_ABS64, R_BPF_64_NODYLD32};
    use crate::bpf::map::{Map, BPF_MAP_TYPE_HASH};
    use crate::bpf::sys;
    use crate::bpf::BpfError;
    use object::read::elf::FileHeader;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    const GOOD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_good.o"));
    const STATIC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_static.o"));
    const DATA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_data.o"));
    const RODATA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_rodata.o"));
    const BSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_bss.o"));
    const CALL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_call.o"));
    const NOLICENSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fixture_nolicense.o"));

    fn parse_err(elf: &[u8]) -> ObjectError {
        match Object::parse(elf) {
            Ok(obj) => panic!("parsed, expected an error: {obj:?}"),
            Err(e) => e,
        }
    }

    /// Asserts that an error matches a pattern (bindings are references).
    macro_rules! assert_matches {
        ($e:expr, $($pat:tt)+) => {{
            let e = $e;
            assert!(matches!(&e, $($pat)+), "{e:?}");
        }};
    }

    /// The indexes of the `ld_imm64` instructions of `insns`.
    fn ld_imm64s(insns: &[Insn]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < insns.len() {
            if insns[i].code == BPF_LD_IMM64 {
                out.push(i);
                i += 1;
            }
            i += 1;
        }
        out
    }

    fn good() -> Object {
        Object::parse(GOOD).unwrap_or_else(|e| panic!("{e}"))
    }

    // Byte surgery on the good fixture, to reach the errors clang never produces.

    type Header = &'static elf::SectionHeader64<LittleEndian>;

    fn section(elf: &'static [u8], name: &str) -> Header {
        let header = Elf::parse(elf).expect("fixture header");
        let sections = header
            .sections(LittleEndian, elf)
            .expect("fixture sections");
        sections
            .section_by_name(LittleEndian, name.as_bytes())
            .unwrap_or_else(|| panic!("fixture has no section {name}"))
            .1
    }

    /// The file offset of section `name`'s `Elf64_Shdr`.
    fn section_header_offset(elf: &'static [u8], name: &str) -> usize {
        let header = Elf::parse(elf).expect("fixture header");
        let sections = header
            .sections(LittleEndian, elf)
            .expect("fixture sections");
        let (index, _) = sections
            .section_by_name(LittleEndian, name.as_bytes())
            .unwrap_or_else(|| panic!("fixture has no section {name}"));
        header.e_shoff(LittleEndian) as usize + index.0 * 64
    }

    fn file_offset(elf: &'static [u8], name: &str) -> usize {
        section(elf, name).sh_offset(LittleEndian) as usize
    }

    /// The file offset of symbol `name`'s `Elf64_Sym`.
    fn symbol_offset(elf: &'static [u8], name: &str) -> usize {
        let header = Elf::parse(elf).expect("fixture header");
        let sections = header
            .sections(LittleEndian, elf)
            .expect("fixture sections");
        let symbols = sections
            .symbols(LittleEndian, elf, elf::SHT_SYMTAB)
            .expect("fixture symbols");
        let (index, _) = symbols
            .enumerate()
            .find(|(_, s)| symbols.symbol_name(LittleEndian, s) == Ok(name.as_bytes()))
            .unwrap_or_else(|| panic!("fixture has no symbol {name}"));
        file_offset(elf, ".symtab") + index.0 * 24
    }

    fn patched(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut elf = GOOD.to_vec();
        edit(&mut elf);
        elf
    }

    fn put_u16(elf: &mut [u8], at: usize, v: u16) {
        elf[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u32(elf: &mut [u8], at: usize, v: u32) {
        elf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(elf: &mut [u8], at: usize, v: u64) {
        elf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The file offset of the first `Elf64_Rel` of `tc/ingress`, and the file offset
    /// of the instruction it relocates.
    fn first_ingress_rel() -> (usize, usize) {
        let rel = file_offset(GOOD, ".reltc/ingress");
        let r_offset = u64::from_le_bytes(GOOD[rel..rel + 8].try_into().expect("8 bytes"));
        (rel, file_offset(GOOD, "tc/ingress") + r_offset as usize)
    }

    #[test]
    fn parses_the_good_fixture() {
        let obj = good();
        assert_eq!(obj.license, "GPL");
        assert_eq!(
            obj.maps,
            vec![
                MapDef {
                    name: "counters".into(),
                    map_type: BPF_MAP_TYPE_ARRAY,
                    key_size: 4,
                    value_size: 8,
                    max_entries: 4,
                    map_flags: 0,
                },
                MapDef {
                    name: "lengths".into(),
                    map_type: BPF_MAP_TYPE_HASH,
                    key_size: 4,
                    value_size: 8,
                    max_entries: 64,
                    map_flags: 1,
                },
            ]
        );
        assert_eq!(
            obj.map("lengths").map(MapDef::attr),
            Some(MapAttr {
                map_type: BPF_MAP_TYPE_HASH,
                key_size: 4,
                value_size: 8,
                max_entries: 64,
                map_flags: 1,
            })
        );
        assert!(obj.map("nope").is_none());
        assert!(obj.program("nope").is_none());

        let names: Vec<(&str, &str)> = obj
            .programs
            .iter()
            .map(|p| (p.name.as_str(), p.section.as_str()))
            .collect();
        assert_eq!(
            names,
            [("good_ingress", "tc/ingress"), ("good_egress", "tc/egress")]
        );
        for p in &obj.programs {
            assert!(!p.insns.is_empty());
            // The fixture's only ld_imm64s are map loads, each of them relocated.
            let refs: Vec<usize> = p.map_refs.iter().map(|r| r.insn).collect();
            assert_eq!(refs, ld_imm64s(&p.insns), "{}", p.name);
            for r in &p.map_refs {
                let (first, second) = (p.insns[r.insn], p.insns[r.insn + 1]);
                assert_eq!(first.code, BPF_LD_IMM64);
                assert_eq!(first.src_reg(), 0, "src_reg before relocation");
                assert_eq!((first.imm, second.imm), (0, 0));
            }
            let mut maps: Vec<&str> = p.map_refs.iter().map(|r| r.map.as_str()).collect();
            maps.sort();
            maps.dedup();
            assert_eq!(maps, ["counters", "lengths"], "{}", p.name);
        }
        assert_eq!(
            obj.program("good_egress").map(|p| p.section.as_str()),
            Some("tc/egress")
        );
    }

    #[test]
    fn parses_from_an_unaligned_buffer() {
        let mut buf = vec![0u8; GOOD.len() + 1];
        buf[1..].copy_from_slice(GOOD);
        assert_eq!(
            Object::parse(&buf[1..]).unwrap_or_else(|e| panic!("{e}")),
            good()
        );
    }

    /// Checks that `patched` differs from `orig` only in the src_reg and imm fields
    /// of each referenced `ld_imm64`, which hold `BPF_PSEUDO_MAP_FD` and the fd.
    fn assert_patched(p: &Program, patched: &[Insn], fd_of: impl Fn(&str) -> Option<RawFd>) {
        assert_eq!(patched.len(), p.insns.len());
        let mut expected = p.insns.clone();
        for r in &p.map_refs {
            let fd = fd_of(&r.map).expect("test fd");
            let orig = p.insns[r.insn];
            expected[r.insn] = Insn::new(orig.code, orig.dst_reg(), 1, orig.off, fd);
            expected[r.insn + 1].imm = 0;
        }
        for (i, (got, want)) in patched.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{}: insn {i}", p.name);
        }
    }

    #[test]
    fn relocate_patches_src_reg_and_imm_only() {
        let fd_of = |name: &str| match name {
            "counters" => Some(7),
            "lengths" => Some(0x1234_5678),
            _ => None,
        };
        for p in &good().programs {
            let insns = p.relocate(fd_of).unwrap_or_else(|e| panic!("{e}"));
            assert_patched(p, &insns, fd_of);
            for r in &p.map_refs {
                assert_eq!(insns[r.insn].src_reg(), BPF_PSEUDO_MAP_FD);
                assert_eq!(insns[r.insn].dst_reg(), 1, "dst_reg r1 kept");
            }
            let differing = p.insns.iter().zip(&insns).filter(|(a, b)| a != b).count();
            assert!(differing >= p.map_refs.len(), "{}", p.name);
        }
    }

    #[test]
    fn static_maps_are_found_through_the_section_symbol_and_addend() {
        let obj = Object::parse(STATIC).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<(&str, u32)> = obj
            .maps
            .iter()
            .map(|m| (m.name.as_str(), m.max_entries))
            .collect();
        assert_eq!(names, [("first", 1), ("second", 2)]);
        let p = obj.program("static_ingress").expect("program");
        let order: Vec<&str> = p.map_refs.iter().map(|r| r.map.as_str()).collect();
        assert_eq!(order, ["second", "first"]);
        // clang wrote second's offset (20) as the addend; the fd must replace it.
        assert_eq!(p.insns[p.map_refs[0].insn].imm, 20);
        let fd_of = |name: &str| Some(if name == "first" { 3 } else { 4 });
        let insns = p.relocate(fd_of).unwrap_or_else(|e| panic!("{e}"));
        assert_patched(p, &insns, fd_of);
    }

    #[test]
    fn relocate_without_an_fd_for_a_map_fails() {
        let obj = good();
        let p = obj.program("good_ingress").expect("program");
        assert_matches!(
            p.relocate(|name| (name == "counters").then_some(3)).unwrap_err(),
            ObjectError::UnknownMap { at, map } if at.program == "good_ingress" && map == "lengths"
        );
        assert_matches!(
            p.relocate(|_| Some(-1)).unwrap_err(),
            ObjectError::BadMapFd { fd: -1, .. }
        );
    }

    #[test]
    fn relocate_rechecks_map_refs() {
        let mut p = good().programs.remove(0);
        p.map_refs[0].insn = 0;
        assert_matches!(
            p.relocate(|_| Some(3)).unwrap_err(),
            ObjectError::NotLdImm64 { at, .. } if at.insn == 0
        );
        p.map_refs[0].insn = usize::MAX;
        assert!(p.relocate(|_| Some(3)).is_err());
        p.map_refs[0].insn = p.insns.len() - 1;
        assert!(p.relocate(|_| Some(3)).is_err());
    }

    #[test]
    fn initialised_global_variables_are_refused() {
        // Its zero-initialised global (in .bss) is fine; the one in .data is not.
        assert_matches!(
            parse_err(DATA),
            ObjectError::InitialisedData { at, target: Referent::Symbol { name, section } }
                if at.program == "data_ingress" && name == "threshold" && section == ".data"
        );
    }

    #[test]
    fn zero_initialised_globals_become_one_mmapable_map() {
        let obj = Object::parse(BSS).unwrap_or_else(|e| panic!("{e}"));
        let bss = obj.map(BSS_MAP).expect("a map for .bss");
        assert_eq!(
            (
                bss.map_type,
                bss.key_size,
                bss.value_size,
                bss.max_entries,
                bss.map_flags
            ),
            (BPF_MAP_TYPE_ARRAY, 4, 20, 1, BPF_F_MMAPABLE)
        );
        assert_eq!(obj.maps.last(), Some(bss), "after the maps of section maps");
        let globals: Vec<(&str, u64, u64)> = obj
            .globals
            .iter()
            .map(|g| (g.name.as_str(), g.offset, g.size))
            .collect();
        assert_eq!(
            globals,
            [("packets", 0, 8), ("last_len", 8, 4), ("pair", 12, 8)]
        );
        let p = obj.program("bss_ingress").expect("program");
        let refs: Vec<(&str, Option<u32>)> = p
            .map_refs
            .iter()
            .map(|r| (r.map.as_str(), r.value_offset))
            .collect();
        // The static is reached through the section symbol, its offset (8) in
        // the addend; the struct field through the instruction's own offset.
        assert_eq!(
            refs,
            [
                ("counters", None),
                (BSS_MAP, Some(0)),
                (BSS_MAP, Some(8)),
                (BSS_MAP, Some(12))
            ]
        );
        let fd_of = |name: &str| Some(if name == BSS_MAP { 7 } else { 5 });
        let insns = p.relocate(fd_of).unwrap_or_else(|e| panic!("{e}"));
        for r in &p.map_refs {
            let (first, second) = (insns[r.insn], insns[r.insn + 1]);
            let got = (first.src_reg(), first.imm, second.imm);
            match r.value_offset {
                None => assert_eq!(got, (BPF_PSEUDO_MAP_FD, 5, 0)),
                Some(off) => assert_eq!(got, (BPF_PSEUDO_MAP_VALUE, 7, off as i32)),
            }
        }
    }

    #[test]
    fn a_global_offset_beyond_bss_is_refused() {
        // The static's addend (8, in the ld_imm64's first imm) pushed past the
        // section's 20 bytes.
        let p = Object::parse(BSS).expect("parses").programs.remove(0);
        let at = p.map_refs[2].insn * INSN_SIZE;
        let code = file_offset(BSS, "tc/ingress") + at;
        let mut elf = BSS.to_vec();
        put_u32(&mut elf, code + 4, 20);
        assert_matches!(
            parse_err(&elf),
            ObjectError::BssOffset { at, offset: 20, size: 20, .. } if at.program == "bss_ingress"
        );
    }

    #[test]
    fn constant_tables_are_refused() {
        // clang 14 puts the table in .rodata.cst32 and refers to it by section symbol.
        assert_matches!(
            parse_err(RODATA),
            ObjectError::InitialisedData { at, target: Referent::Section(section) }
                if at.program == "rodata_ingress" && section.starts_with(".rodata")
        );
    }

    #[test]
    fn bpf_to_bpf_calls_are_refused() {
        // clang 14: `call -1` with src_reg BPF_PSEUDO_CALL and R_BPF_64_32 against .text.
        assert_matches!(
            parse_err(CALL),
            ObjectError::BpfToBpfCall { at, callee: Some(callee) }
                if at.program == "call_ingress" && at.insn == 1 && callee == "verdict"
        );
        // With its relocation section hidden, the call is still caught by its src_reg.
        let mut elf = CALL.to_vec();
        let at = section_header_offset(CALL, ".reltc/ingress") + 4;
        elf[at..at + 4].copy_from_slice(&elf::SHT_PROGBITS.0.to_le_bytes());
        assert_matches!(
            parse_err(&elf),
            ObjectError::BpfToBpfCall { at, callee: None }
                if at.program == "call_ingress" && at.insn == 1
        );
    }

    #[test]
    fn a_missing_license_is_refused() {
        assert_matches!(parse_err(NOLICENSE), ObjectError::NoLicense);
    }

    #[test]
    fn a_license_without_nul_is_refused() {
        let elf = patched(|e| {
            let at = file_offset(GOOD, "license");
            e[at + 3] = b'X';
        });
        assert_matches!(parse_err(&elf), ObjectError::LicenseNotTerminated);
    }

    #[test]
    fn other_relocation_types_are_refused() {
        let (rel, _) = first_ingress_rel();
        for r_type in [R_BPF_64_ABS64, R_BPF_64_NODYLD32, 77] {
            let elf = patched(|e| put_u32(e, rel + 8, r_type));
            assert_matches!(
                parse_err(&elf),
                ObjectError::UnsupportedRelocation { at, r_type: t, symbol }
                    if *t == r_type && symbol == "counters" && at.section == "tc/ingress"
            );
        }
        let elf = patched(|e| put_u32(e, rel + 8, R_BPF_64_32));
        assert_matches!(
            parse_err(&elf),
            ObjectError::BpfToBpfCall {
                callee: Some(_),
                ..
            }
        );
    }

    #[test]
    fn relocation_offsets_must_be_on_an_instruction_in_range() {
        let (rel, _) = first_ingress_rel();
        for offset in [0x10_0000, u64::MAX, 4, GOOD.len() as u64] {
            let elf = patched(|e| put_u64(e, rel, offset));
            assert_matches!(
                parse_err(&elf),
                ObjectError::RelocationOffset { section, offset: o, .. }
                    if section == "tc/ingress" && *o == offset
            );
        }
    }

    #[test]
    fn relocations_must_target_an_ld_imm64() {
        let (rel, insn) = first_ingress_rel();
        // Instruction 0 is a load from the context; insn + 8 is the second half of the ld_imm64.
        let second_half = (insn - file_offset(GOOD, "tc/ingress") + INSN_SIZE) as u64;
        for offset in [0, second_half] {
            let elf = patched(|e| put_u64(e, rel, offset));
            assert_matches!(
                parse_err(&elf),
                ObjectError::NotLdImm64 { target: Referent::Map(map), .. } if map == "counters"
            );
        }
    }

    #[test]
    fn relocations_against_a_bad_symbol_are_refused() {
        let (rel, _) = first_ingress_rel();
        for index in [0xffff, 0] {
            let elf = patched(|e| put_u32(e, rel + 12, index));
            assert_matches!(
                parse_err(&elf),
                ObjectError::Malformed { what, .. } if *what == format!("reading symbol {index}")
            );
        }
        // Pointed at a program's own function symbol: a function pointer.
        let func = (symbol_offset(GOOD, "good_egress") - file_offset(GOOD, ".symtab")) / 24;
        let elf = patched(|e| put_u32(e, rel + 12, func as u32));
        assert_matches!(
            parse_err(&elf),
            ObjectError::FunctionPointer { target: Referent::Symbol { name, .. }, .. }
                if name == "good_egress"
        );
    }

    #[test]
    fn an_addend_off_a_map_definition_is_an_unknown_map() {
        let (_, insn) = first_ingress_rel();
        let elf = patched(|e| put_u32(e, insn + 4, 4));
        assert_matches!(
            parse_err(&elf),
            ObjectError::NoMapAtOffset { offset: 4, .. }
        );
    }

    #[test]
    fn truncated_map_definitions_are_refused() {
        let sym = symbol_offset(GOOD, "lengths");
        let elf = patched(|e| put_u64(e, sym + 16, 12));
        assert_matches!(
            parse_err(&elf),
            ObjectError::MapDefSize { map, size: 12 } if map == "lengths"
        );
        for offset in [0x18, u64::MAX] {
            let elf = patched(|e| put_u64(e, sym + 8, offset));
            assert_matches!(
                parse_err(&elf),
                ObjectError::MapDefTruncated { map, offset: o, .. } if map == "lengths" && *o == offset
            );
        }
    }

    #[test]
    fn foreign_elf_files_are_refused() {
        let elf = patched(|e| e[4] = 1);
        assert_matches!(parse_err(&elf), ObjectError::NotElf64 { class: 1 });
        let elf = patched(|e| e[5] = 2);
        assert_matches!(
            parse_err(&elf),
            ObjectError::NotLittleEndian { encoding: 2 }
        );
        let elf = patched(|e| put_u16(e, 18, 62));
        assert_matches!(parse_err(&elf), ObjectError::NotBpf { machine: 62 });
        let elf = patched(|e| put_u16(e, 16, 2));
        assert_matches!(parse_err(&elf), ObjectError::NotRelocatable { kind: 2 });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_matches!(parse_err(&[]), ObjectError::TooShort { len: 0 });
        assert_matches!(
            parse_err(b"hello, world, this is not ELF"),
            ObjectError::NotElf
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [16, 64, 100, 1000, 10_000] {
            let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(Object::parse(&junk).is_err());
            junk[..16].copy_from_slice(&GOOD[..16]);
            assert!(Object::parse(&junk).is_err());
        }
    }

    #[test]
    fn every_truncation_of_a_valid_object_is_an_error() {
        for len in 0..GOOD.len() {
            assert!(Object::parse(&GOOD[..len]).is_err(), "cut at {len} parsed");
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Whatever the result, parsing (and relocating what parses) must return.
        for at in 0..GOOD.len() {
            for flip in [0xff, 0x80, 0x01] {
                let mut elf = GOOD.to_vec();
                elf[at] ^= flip;
                if let Ok(obj) = Object::parse(&elf) {
                    for p in &obj.programs {
                        let _ = p.relocate(|_| Some(3));
                    }
                }
            }
        }
    }

    /// The variants still read as the messages users have seen, hints and all.
    #[test]
    fn errors_read_as_before() {
        let call = BpfError::from(parse_err(CALL)).to_string();
        assert_eq!(
            call,
            format!(
                "BPF object: program call_ingress (section tc/ingress) instruction 1 calls \
                 verdict: {CALL_HINT}"
            )
        );
        assert!(CALL_HINT.contains("__always_inline"));
        let data = parse_err(DATA).to_string();
        assert_eq!(
            data,
            format!(
                "program data_ingress (section tc/ingress) instruction {} refers to threshold \
                 in section .data: {DATA_HINT}",
                match parse_err(DATA) {
                    ObjectError::InitialisedData { at, .. } => at.insn,
                    other => panic!("{other:?}"),
                }
            )
        );
        assert_eq!(
            parse_err(NOLICENSE).to_string(),
            "no license section: add `char SEC(\"license\") _license[] = \"GPL\";`"
        );
        let (rel, _) = first_ingress_rel();
        for (r_type, name) in [
            (R_BPF_64_ABS64, "R_BPF_64_ABS64"),
            (R_BPF_64_NODYLD32, "R_BPF_64_NODYLD32"),
            (77, "relocation type 77"),
        ] {
            let elf = patched(|e| put_u32(e, rel + 8, r_type));
            let msg = parse_err(&elf).to_string();
            assert!(
                msg.ends_with(&format!(
                    ": {name} against counters is not supported in a program section"
                )),
                "{msg}"
            );
        }
        let sym = symbol_offset(GOOD, "lengths");
        let elf = patched(|e| put_u64(e, sym + 16, 12));
        assert_eq!(
            parse_err(&elf).to_string(),
            "map lengths in section maps is 12 bytes, not the 20 of struct flowlat_map_def"
        );
    }

    fn require_root() {
        if !nix::unistd::geteuid().is_root() {
            panic!(
                "this test needs root (it creates BPF maps and loads BPF programs): \
                 run the suite with sudo"
            );
        }
    }

    fn counter(map: &Map, slot: u32) -> u64 {
        let mut value = [0u8; 8];
        let found = map
            .lookup(&slot.to_ne_bytes(), &mut value)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(found, "array slot {slot} missing");
        u64::from_ne_bytes(value)
    }

    #[test]
    fn bss_globals_are_the_maps_value_in_the_kernel_as_root() {
        require_root();
        let obj = Object::parse(BSS).unwrap_or_else(|e| panic!("{e}"));
        let maps: Vec<(String, Map)> = obj
            .maps
            .iter()
            .map(|m| {
                let map = Map::create(&m.attr(), "fixture_map").unwrap_or_else(|e| panic!("{e}"));
                (m.name.clone(), map)
            })
            .collect();
        let fd = |name: &str| maps.iter().find(|(n, _)| n == name).map(|(_, fd)| fd);
        let p = obj.program("bss_ingress").expect("program");
        let insns = p
            .relocate(|name| fd(name).map(|fd| fd.as_fd().as_raw_fd()))
            .unwrap_or_else(|e| panic!("{e}"));
        let prog = sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &insns, &obj.license, &p.name)
            .unwrap_or_else(|e| panic!("{e}"));
        let bss = fd(BSS_MAP).expect("the .bss map");
        let mapping = crate::bpf::mmap::Mapping::new(
            bss.as_fd(),
            std::num::NonZeroUsize::new(4096).expect("non-zero"),
        )
        .unwrap_or_else(|e| panic!("mmap the .bss map: {e}"));
        for _ in 0..3 {
            let r = sys::prog_test_run(prog.as_fd(), &[0u8; 64], None, 1)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.retval, 0);
        }
        let mut value = [0u8; 20];
        assert!(bss
            .lookup(&0u32.to_ne_bytes(), &mut value)
            .unwrap_or_else(|e| panic!("{e}")));
        let word = |at: usize| u32::from_ne_bytes(value[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(
            u64::from_ne_bytes(value[..8].try_into().expect("8")),
            3,
            "packets"
        );
        assert_eq!(word(8), 64, "last_len");
        assert_eq!((word(12), word(16)), (0, 65), "pair.a, pair.b");
        assert_eq!(counter(fd("counters").expect("counters"), 0), 3);
        // User space sees the same memory through the mapping.
        let words = mapping.words();
        let seen: Vec<u32> = words[..5]
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        assert_eq!(seen, [3, 0, 64, 0, 65]);
    }

    #[test]
    fn good_fixture_loads_and_runs_as_root() {
        require_root();
        let obj = good();
        let maps: Vec<(String, Map)> = obj
            .maps
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    Map::create(&m.attr(), &m.name).unwrap_or_else(|e| panic!("{e}")),
                )
            })
            .collect();
        let fd = |name: &str| maps.iter().find(|(n, _)| n == name).map(|(_, fd)| fd);
        let fd_of = |name: &str| fd(name).map(|fd| fd.as_fd().as_raw_fd());
        let load = |name: &str| {
            let p = obj.program(name).expect("program");
            let insns = p.relocate(fd_of).unwrap_or_else(|e| panic!("{e}"));
            sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &insns, &obj.license, &p.name)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let ingress = load("good_ingress");
        let egress = load("good_egress");
        let packet = [0u8; 64];
        let run = |prog: &OwnedFd| {
            sys::prog_test_run(prog.as_fd(), &packet, None, 1)
                .unwrap_or_else(|e| panic!("{e}"))
                .retval
        };
        const TC_ACT_OK: u32 = 0;
        const TC_ACT_SHOT: u32 = 2;

        // Egress drops only lengths that ingress recorded, through the shared maps.
        assert_eq!(run(&egress), TC_ACT_OK);
        assert_eq!(run(&ingress), TC_ACT_OK);
        assert_eq!(run(&egress), TC_ACT_SHOT);

        let counters = fd("counters").expect("counters");
        assert_eq!(counter(counters, 0), 1, "ingress runs");
        assert_eq!(counter(counters, 1), 2, "egress runs");
        let mut seen = [0u8; 8];
        let lengths = fd("lengths").expect("lengths");
        let found = lengths
            .lookup(&64u32.to_ne_bytes(), &mut seen)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(found, "ingress did not record the 64-byte packet's length");
        assert_eq!(u64::from_ne_bytes(seen), 1);
    }
}
