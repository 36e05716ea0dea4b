//! The least BTF (BPF Type Format, `include/uapi/linux/btf.h`) a map needs:
//! some map types, socket storage (`BPF_MAP_TYPE_SK_STORAGE`) among them,
//! refuse to be created without a BTF description of their key and value
//! (`btf_fd`, `btf_key_type_id`, `btf_value_type_id` of `BPF_MAP_CREATE`).
//! Their programs need none, so flowlat compiles them without debug
//! information and describes such a map here: a 32-bit `int` key and the
//! value as an array of bytes, loaded with `BPF_BTF_LOAD`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::sys::{bpf_fd, short_len};
use super::BpfError;

/// `BPF_BTF_LOAD`.
const BPF_BTF_LOAD: libc::c_int = 18;
/// `BTF_MAGIC`.
const BTF_MAGIC: u16 = 0xeb9f;
/// `BTF_VERSION`.
const BTF_VERSION: u8 = 1;
/// `BTF_KIND_INT`.
const BTF_KIND_INT: u32 = 1;
/// `BTF_KIND_ARRAY`.
const BTF_KIND_ARRAY: u32 = 3;
/// `BTF_INT_SIGNED`: the encoding bit of a signed integer.
const BTF_INT_SIGNED: u32 = 1;
/// `sizeof(struct btf_header)`.
const HEADER_LEN: u32 = 24;

/// `bpf_attr` for `BPF_BTF_LOAD`: `btf`, `btf_log_buf`, `btf_size`,
/// `btf_log_size`, `btf_log_level`.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
}

/// A BTF object loaded into the kernel (the fd `BPF_BTF_LOAD` returned)
/// that describes one map's key and value.
#[derive(Debug)]
pub struct MapBtf {
    fd: OwnedFd,
}

impl MapBtf {
    /// Type id of the key, `int` (what socket storage requires).
    pub const KEY_TYPE_ID: u32 = 1;
    /// Type id of the value, `unsigned char[value_size]`.
    pub const VALUE_TYPE_ID: u32 = 3;

    /// The types' blob: a `struct btf_header`, then three `struct btf_type`
    /// (1: `int`, 2: `unsigned char`, 3: an array of `value_size` of 2
    /// indexed by 1), then the strings.
    pub fn blob(value_size: u32) -> Vec<u8> {
        let strings: &[u8] = b"\0int\0unsigned char\0";
        let (int_name, uchar_name) = (1u32, 5u32);
        let mut types: Vec<u32> = Vec::new();
        // struct btf_type { name_off, info (kind << 24 | vlen), size }, then
        // an INT's u32 (encoding << 24 | offset << 16 | bits).
        types.extend([int_name, BTF_KIND_INT << 24, 4, BTF_INT_SIGNED << 24 | 32]);
        types.extend([uchar_name, BTF_KIND_INT << 24, 1, 8]);
        // An array's btf_type has size 0, then struct btf_array { type,
        // index_type, nelems }.
        types.extend([0, BTF_KIND_ARRAY << 24, 0, 2, 1, value_size]);
        let type_len = (types.len() * 4) as u32;
        let mut b = Vec::with_capacity(HEADER_LEN as usize + type_len as usize + strings.len());
        b.extend(BTF_MAGIC.to_ne_bytes());
        b.push(BTF_VERSION);
        b.push(0); // flags
                   // hdr_len, type_off, type_len, str_off, str_len
        for v in [HEADER_LEN, 0, type_len, type_len, strings.len() as u32] {
            b.extend(v.to_ne_bytes());
        }
        for t in types {
            b.extend(t.to_ne_bytes());
        }
        b.extend(strings);
        b
    }

    /// `BPF_BTF_LOAD` of [`MapBtf::blob`]: the key and value of a map whose
    /// values are `value_size` bytes.
    pub fn load(value_size: u32) -> Result<MapBtf, BpfError> {
        let blob = MapBtf::blob(value_size);
        let mut a = BtfLoadAttr {
            btf: blob.as_ptr() as u64,
            btf_size: short_len(&blob),
            ..Default::default()
        };
        // SAFETY: the kernel reads btf_size bytes of `blob`, which lives to the
        // end of this function; no log is asked for; the command returns a new fd.
        let fd = unsafe { bpf_fd(BPF_BTF_LOAD, &mut a) }
            .map_err(|e| BpfError::sys("loading the BTF of a map (BPF_BTF_LOAD)", e))?;
        Ok(MapBtf { fd })
    }
}

impl AsFd for MapBtf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_is_laid_out_as_the_kernel_reads_it() {
        let b = MapBtf::blob(24);
        assert_eq!(&b[..4], &[0x9f, 0xeb, 1, 0]);
        let word = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let (type_len, str_off, str_len) = (word(12), word(16), word(20));
        assert_eq!(type_len, 14 * 4);
        assert_eq!(str_off, type_len);
        assert_eq!(b.len(), (HEADER_LEN + str_off + str_len) as usize);
        // The array's element count is the value's size in bytes.
        assert_eq!(word(HEADER_LEN as usize + 13 * 4), 24);
        let strings = &b[(HEADER_LEN + str_off) as usize..];
        assert_eq!(&strings[1..4], b"int");
    }
}
