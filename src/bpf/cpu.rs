//! CPU lists from sysfs: which CPUs to open perf rings on, and how many value
//! slots the kernel uses for per-CPU maps.

use std::fs;
use std::io;

use super::BpfError;

const ONLINE: &str = "/sys/devices/system/cpu/online";
const POSSIBLE: &str = "/sys/devices/system/cpu/possible";

/// No kernel supports this many CPUs (`NR_CPUS` tops out at 8192); a larger id
/// means a garbled list, and refusing it keeps a bad range from allocating gigabytes.
const MAX_CPUS: u32 = 1 << 16;

/// The CPUs that are online now, from `/sys/devices/system/cpu/online`, in the
/// order the kernel lists them (ascending).
pub fn online_cpus() -> Result<Vec<u32>, BpfError> {
    read_list(ONLINE)
}

/// The number of possible CPUs: the highest id in `/sys/devices/system/cpu/possible`
/// plus one. This is `num_possible_cpus()` as the kernel uses it to size per-CPU
/// map values and to bound `BPF_MAP_TYPE_PERF_EVENT_ARRAY` keys.
pub fn possible_cpus() -> Result<u32, BpfError> {
    let cpus = read_list(POSSIBLE)?;
    // read_list never returns an empty list, so max() is always Some.
    Ok(cpus.into_iter().max().map_or(0, |max| max + 1))
}

/// Parses a kernel CPU list (`cpulist_parse` format), e.g. `0-3,5,7-8`, with an
/// optional trailing newline. Ranges are inclusive; an empty list is an error.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, BpfError> {
    parse(s).map_err(|detail| invalid(format!("parsing the CPU list {s:?}"), detail))
}

fn read_list(path: &str) -> Result<Vec<u32>, BpfError> {
    let text = fs::read_to_string(path).map_err(|e| BpfError::sys(format!("reading {path}"), e))?;
    parse(&text).map_err(|detail| invalid(format!("parsing {path} ({:?})", text.trim()), detail))
}

fn invalid(what: String, detail: String) -> BpfError {
    BpfError::sys(what, io::Error::new(io::ErrorKind::InvalidData, detail))
}

fn parse(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("the list is empty".into());
    }
    let mut cpus = Vec::new();
    for item in s.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (id(a)?, id(b)?),
            None => (id(item)?, id(item)?),
        };
        if first > last {
            return Err(format!("range {item:?} runs backwards"));
        }
        cpus.extend(first..=last);
    }
    Ok(cpus)
}

fn id(s: &str) -> Result<u32, String> {
    // u32::from_str accepts a leading '+', which no kernel list holds.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a CPU number"));
    }
    match s.parse::<u32>() {
        Ok(n) if n < MAX_CPUS => Ok(n),
        _ => Err(format!("CPU number {s} is out of range")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_lists() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-3\n").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            parse_cpu_list("0-3,5,7-8").unwrap(),
            vec![0, 1, 2, 3, 5, 7, 8]
        );
        assert_eq!(parse_cpu_list("4-4,6").unwrap(), vec![4, 6]);
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            "",
            "\n",
            "a",
            "1-",
            "-1",
            "3-1",
            "1,,2",
            "1 2",
            "0-3,",
            "+1",
            "1-2-3",
            "99999999999",
        ] {
            let err = parse_cpu_list(bad).expect_err(bad).to_string();
            assert!(err.contains("parsing the CPU list"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sysfs_lists_are_consistent() {
        let online = online_cpus().unwrap();
        let possible = possible_cpus().unwrap();
        assert!(!online.is_empty());
        assert!(
            online.iter().all(|&c| c < possible),
            "{online:?} vs {possible}"
        );
    }
}
