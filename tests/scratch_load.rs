use flowlat::bpf::{object::Object, sys};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
#[repr(C)]
#[derive(Default)]
struct A {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}
#[test]
fn scratch() {
    let obj = Object::parse(flowlat::probe::object_bytes()).unwrap();
    let mut maps: HashMap<String, OwnedFd> = HashMap::new();
    for d in &obj.maps {
        let mut a = d.attr();
        if d.name == "events" {
            a.max_entries = 2;
        }
        maps.insert(d.name.clone(), sys::map_create(&a, "x").unwrap());
    }
    let lic = std::ffi::CString::new(obj.license.clone()).unwrap();
    for p in &obj.programs {
        let insns = p.relocate(|m| maps.get(m).map(|f| f.as_raw_fd())).unwrap();
        let mut log = vec![0u8; 1 << 20];
        let mut a = A {
            prog_type: 3,
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: lic.as_ptr() as u64,
            log_level: 4,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let r =
            unsafe { libc::syscall(libc::SYS_bpf, 5, &mut a as *mut A, std::mem::size_of::<A>()) };
        let el = t.elapsed();
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        println!(
            "{} r={} {:?} {} insns: {}",
            p.name,
            r,
            el,
            insns.len() / 8,
            String::from_utf8_lossy(&log[..end]).replace('\n', " | ")
        );
    }
}
