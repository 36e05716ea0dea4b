//! `struct bpf_insn` (`include/uapi/linux/bpf.h`) as a type, so that the
//! loader reads and patches instructions by field rather than by byte offset.
//!
//! The register nibbles are laid out as a little-endian C compiler lays out
//! `__u8 dst_reg:4, src_reg:4` (`dst_reg` in the low nibble), which is what
//! clang writes for `-target bpf` on the little-endian hosts this loader
//! takes objects for (see [`super::object`]).

/// `BPF_LD | BPF_IMM | BPF_DW`: `ld_imm64`, the one instruction that takes two
/// slots; the second slot's `imm` is the upper half of the 64-bit immediate.
pub const BPF_LD_IMM64: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`: a helper call, or with a pseudo `src_reg` another kind of call.
pub const BPF_CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`.
pub const BPF_EXIT: u8 = 0x95;

/// `BPF_PSEUDO_MAP_FD`: the `src_reg` of an `ld_imm64` whose `imm` is a map fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `BPF_PSEUDO_MAP_VALUE`: the `src_reg` of an `ld_imm64` whose first `imm` is the
/// fd of a map with one entry and whose second `imm` is an offset into its value;
/// the verifier turns it into that address.
pub const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `BPF_PSEUDO_CALL`: the `src_reg` of a `call` to another BPF function.
pub const BPF_PSEUDO_CALL: u8 = 1;
/// `BPF_PSEUDO_KFUNC_CALL`: the `src_reg` of a `call` to a kernel function.
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

// The ELF relocation types of `EM_BPF` (`R_BPF_*`), as LLVM's BPF backend
// documents them: what a loader must patch into an instruction.

/// `R_BPF_NONE`: nothing to patch.
pub const R_BPF_NONE: u32 = 0;
/// `R_BPF_64_64`: the 64-bit immediate of an `ld_imm64` (a map or global's address).
pub const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_ABS64`: a 64-bit data word.
pub const R_BPF_64_ABS64: u32 = 2;
/// `R_BPF_64_ABS32`: a 32-bit data word.
pub const R_BPF_64_ABS32: u32 = 3;
/// `R_BPF_64_NODYLD32`: a 32-bit data word in DWARF or BTF, for no loader.
pub const R_BPF_64_NODYLD32: u32 = 4;
/// `R_BPF_64_32`: the `imm` of a `call` to another function.
pub const R_BPF_64_32: u32 = 10;

/// The name of an `R_BPF_*` relocation type; `None` for a type without one.
pub fn reloc_name(r_type: u32) -> Option<&'static str> {
    Some(match r_type {
        R_BPF_NONE => "R_BPF_NONE",
        R_BPF_64_64 => "R_BPF_64_64",
        R_BPF_64_ABS64 => "R_BPF_64_ABS64",
        R_BPF_64_ABS32 => "R_BPF_64_ABS32",
        R_BPF_64_NODYLD32 => "R_BPF_64_NODYLD32",
        R_BPF_64_32 => "R_BPF_64_32",
        _ => return None,
    })
}

/// `struct bpf_insn`: 8 bytes, passed to `BPF_PROG_LOAD` as they are.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Insn {
    /// `code`: the opcode (class, size or source, operation).
    pub code: u8,
    /// `dst_reg:4` in the low nibble, `src_reg:4` in the high one.
    regs: u8,
    /// `off`: a signed offset (jumps, memory access).
    pub off: i16,
    /// `imm`: a signed immediate.
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == Insn::SIZE);

impl Insn {
    /// `sizeof(struct bpf_insn)`.
    pub const SIZE: usize = 8;

    /// An instruction from its five fields; registers above 15 keep only
    /// their low four bits, as the C bit fields would.
    pub const fn new(code: u8, dst_reg: u8, src_reg: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst_reg & 0x0f) | (src_reg << 4),
            off,
            imm,
        }
    }

    /// `dst_reg`.
    pub fn dst_reg(self) -> u8 {
        self.regs & 0x0f
    }

    /// `src_reg`.
    pub fn src_reg(self) -> u8 {
        self.regs >> 4
    }

    /// Sets `src_reg`, keeping `dst_reg`.
    pub fn set_src_reg(&mut self, src_reg: u8) {
        self.regs = (self.regs & 0x0f) | (src_reg << 4);
    }

    /// The instruction as clang writes it into a little-endian object.
    pub fn from_le_bytes(b: [u8; Insn::SIZE]) -> Insn {
        Insn {
            code: b[0],
            regs: b[1],
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The inverse of [`Insn::from_le_bytes`].
    pub fn to_le_bytes(self) -> [u8; Insn::SIZE] {
        let [o0, o1] = self.off.to_le_bytes();
        let [i0, i1, i2, i3] = self.imm.to_le_bytes();
        [self.code, self.regs, o0, o1, i0, i1, i2, i3]
    }

    /// A stream of instructions in a little-endian object's bytes; `None`
    /// when the length is not a whole number of instructions.
    pub fn decode(bytes: &[u8]) -> Option<Vec<Insn>> {
        let (whole, rest) = bytes.as_chunks::<{ Insn::SIZE }>();
        rest.is_empty()
            .then(|| whole.iter().map(|&b| Insn::from_le_bytes(b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_the_bytes_clang_writes() {
        // *(u64 *)(r10 - 8) = r1
        let bytes = [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0];
        let insn = Insn::from_le_bytes(bytes);
        assert_eq!(
            (
                insn.code,
                insn.dst_reg(),
                insn.src_reg(),
                insn.off,
                insn.imm
            ),
            (0x7b, 10, 1, -8, 0)
        );
        assert_eq!(insn, Insn::new(0x7b, 10, 1, -8, 0));
        assert_eq!(insn.to_le_bytes(), bytes);
    }

    #[test]
    fn setting_src_reg_keeps_dst_reg() {
        let mut insn = Insn::new(BPF_LD_IMM64, 1, 0, 0, 0);
        insn.set_src_reg(BPF_PSEUDO_MAP_VALUE);
        assert_eq!((insn.dst_reg(), insn.src_reg()), (1, BPF_PSEUDO_MAP_VALUE));
    }

    #[test]
    fn decode_takes_only_whole_instructions() {
        assert_eq!(Insn::decode(&[]), Some(Vec::new()));
        assert_eq!(Insn::decode(&[0; 12]), None);
        let two = Insn::decode(&[0x95, 0, 0, 0, 0, 0, 0, 0, 0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            two,
            Some(vec![
                Insn::new(BPF_EXIT, 0, 0, 0, 0),
                Insn::new(0xb7, 0, 0, 0, 1)
            ])
        );
    }
}
