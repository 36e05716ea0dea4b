//! Hand-assembled classifiers the benches compare flowlat with: an empty one,
//! and one that only sends a record, to load the perf reader; and one that
//! gives the packet's socket a process before flowlat's classifier runs.
//! And a connect program of the tests' own, to stand beside flowlat's hooks.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use flowlat::bpf::insn::{Insn, BPF_CALL, BPF_EXIT, BPF_LD_IMM64, BPF_PSEUDO_MAP_FD};
use flowlat::bpf::{sys, BpfError};

const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const MOV32_IMM: u8 = 0xb4;
const ADD64_IMM: u8 = 0x07;
const ST_DW: u8 = 0x7a;
const ST_B: u8 = 0x72;
const LDX_W: u8 = 0x61;
const JNE_IMM: u8 = 0x55;
const BPF_FUNC_PERF_EVENT_OUTPUT: i32 = 25;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R10: u8 = 10;

/// `TC_ACT_UNSPEC`, what every classifier here returns.
const TC_ACT_UNSPEC: i32 = crate::probe::TC_ACT_UNSPEC as i32;

#[derive(Default)]
struct Asm(Vec<Insn>);

impl Asm {
    fn insn(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.0.push(Insn::new(code, dst, src, off, imm));
        self
    }
}

/// `r0 = TC_ACT_UNSPEC; exit`: what clang -O2 makes of a classifier that only
/// returns. Whatever the kernel's test run costs around a program, this pays too.
pub fn empty_classifier() -> Result<OwnedFd, BpfError> {
    let mut a = Asm::default();
    a.insn(MOV64_IMM, R0, 0, 0, TC_ACT_UNSPEC)
        .insn(BPF_EXIT, 0, 0, 0, 0);
    sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &a.0, "GPL", "bench_empty")
}

/// A cgroup connect program for `attach_type` (connect4 or connect6) that
/// refuses connects to `refuse` and lets every other go on; with `None`,
/// one that only lets them go on (`r0 = 1; exit`): what the kernel's call of
/// any connect program costs.
pub fn connect_program(attach_type: u32, refuse: Option<u16>) -> Result<OwnedFd, BpfError> {
    let mut a = Asm::default();
    if let Some(port) = refuse {
        // r2 = bpf_sock_addr.user_port (network order); r0 = 1; if r2 == port, r0 = 0.
        a.insn(LDX_W, R2, R1, 24, 0)
            .insn(MOV64_IMM, R0, 0, 0, 1)
            .insn(JNE_IMM, R2, 0, 1, i32::from(port.to_be()))
            .insn(MOV64_IMM, R0, 0, 0, 0);
    } else {
        a.insn(MOV64_IMM, R0, 0, 0, 1);
    }
    a.insn(BPF_EXIT, 0, 0, 0, 0);
    sys::prog_load_with_attach_type(
        sys::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        attach_type,
        &a.0,
        "GPL",
        "flt_test_connect",
    )
}

/// A classifier that sends one `size`-byte record (zeros, with `marks` bytes
/// set) to `events` on the current CPU for every packet, then returns.
pub fn record_sender(
    events: BorrowedFd<'_>,
    size: usize,
    marks: &[(usize, u8)],
) -> Result<OwnedFd, BpfError> {
    assert!(size.is_multiple_of(8) && size <= 256, "record size {size}");
    let base = -(size as i16);
    let mut a = Asm::default();
    a.insn(MOV64_REG, R6, R1, 0, 0);
    // The verifier wants every byte the helper reads initialised.
    for off in (0..size).step_by(8) {
        a.insn(ST_DW, R10, 0, base + off as i16, 0);
    }
    for &(off, val) in marks {
        a.insn(ST_B, R10, 0, base + off as i16, i32::from(val));
    }
    a.insn(MOV64_REG, R1, R6, 0, 0)
        .insn(BPF_LD_IMM64, R2, BPF_PSEUDO_MAP_FD, 0, events.as_raw_fd())
        .insn(0, 0, 0, 0, 0)
        // BPF_F_CURRENT_CPU is 0xffffffff: a 32-bit move of -1 zero-extends to it.
        .insn(MOV32_IMM, R3, 0, 0, -1)
        .insn(MOV64_REG, R4, R10, 0, 0)
        .insn(ADD64_IMM, R4, 0, 0, i32::from(base))
        .insn(MOV64_IMM, R5, 0, 0, size as i32)
        .insn(BPF_CALL, 0, 0, 0, BPF_FUNC_PERF_EVENT_OUTPUT)
        .insn(MOV64_IMM, R0, 0, 0, TC_ACT_UNSPEC)
        .insn(BPF_EXIT, 0, 0, 0, 0);
    sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &a.0, "GPL", "bench_sender")
}

const STX_DW: u8 = 0x7b;
const STX_W: u8 = 0x63;
const ST_W: u8 = 0x62;
const AND64_IMM: u8 = 0x57;
const JEQ_IMM: u8 = 0x15;
const R7: u8 = 7;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_TAIL_CALL: i32 = 12;
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;
/// `FLOWLAT_PROC_SLOTS`.
const PROC_SLOTS: i32 = 4096;

/// A classifier that gives the packet's socket the process `pid`, `comm`
/// in `conn_procs` (the slot of the socket's cookie, a `struct
/// flowlat_proc_slot`), as flowlat's connect hook would at connect(), then
/// tail-calls slot 0 of `progs` (a `BPF_MAP_TYPE_PROG_ARRAY` holding the
/// probe's classifier). Under `BPF_PROG_TEST_RUN` the packet's socket is
/// one the kernel makes for the run, which no connect() made.
pub fn socket_namer(
    conn_procs: BorrowedFd<'_>,
    progs: BorrowedFd<'_>,
    pid: u32,
    comm: [u8; 16],
) -> Result<OwnedFd, BpfError> {
    let word = |i: usize| u64::from_le_bytes(comm[i..i + 8].try_into().expect("8 bytes"));
    let (w0, w1) = (word(0), word(8));
    let mut a = Asm::default();
    a.insn(MOV64_REG, R6, R1, 0, 0)
        .insn(BPF_CALL, 0, 0, 0, BPF_FUNC_GET_SOCKET_COOKIE)
        .insn(MOV64_REG, R7, R0, 0, 0)
        // No socket: on to the tail call, 18 instructions on.
        .insn(JEQ_IMM, R7, 0, 18, 0)
        .insn(MOV64_REG, R1, R7, 0, 0)
        .insn(AND64_IMM, R1, 0, 0, PROC_SLOTS - 1)
        .insn(STX_W, R10, R1, -4, 0)
        .insn(MOV64_REG, R2, R10, 0, 0)
        .insn(ADD64_IMM, R2, 0, 0, -4)
        .insn(
            BPF_LD_IMM64,
            R1,
            BPF_PSEUDO_MAP_FD,
            0,
            conn_procs.as_raw_fd(),
        )
        .insn(0, 0, 0, 0, 0)
        .insn(BPF_CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM)
        .insn(JEQ_IMM, R0, 0, 9, 0)
        .insn(STX_DW, R0, R7, 0, 0)
        .insn(ST_W, R0, 0, 8, pid as i32)
        .insn(ST_W, R0, 0, 12, 0)
        .insn(BPF_LD_IMM64, R1, 0, 0, w0 as u32 as i32)
        .insn(0, 0, 0, 0, (w0 >> 32) as u32 as i32)
        .insn(STX_DW, R0, R1, 16, 0)
        .insn(BPF_LD_IMM64, R1, 0, 0, w1 as u32 as i32)
        .insn(0, 0, 0, 0, (w1 >> 32) as u32 as i32)
        .insn(STX_DW, R0, R1, 24, 0)
        // The tail call.
        .insn(MOV64_REG, R1, R6, 0, 0)
        .insn(BPF_LD_IMM64, R2, BPF_PSEUDO_MAP_FD, 0, progs.as_raw_fd())
        .insn(0, 0, 0, 0, 0)
        .insn(MOV64_IMM, R3, 0, 0, 0)
        .insn(BPF_CALL, 0, 0, 0, BPF_FUNC_TAIL_CALL)
        .insn(MOV64_IMM, R0, 0, 0, TC_ACT_UNSPEC)
        .insn(BPF_EXIT, 0, 0, 0, 0);
    sys::prog_load(sys::BPF_PROG_TYPE_SCHED_CLS, &a.0, "GPL", "test_namer")
}
