//! The one `/proc` reader (Linux): CPU time and peak memory of a process.

/// User + system CPU seconds `pid` has used so far (`/proc/<pid>/stat`, 100 ticks/s).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

/// The state letter of `pid` (`R`, `S`, `Z` for a zombie, …); `None` when there is no such
/// process.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Peak resident set (VmHWM) of `pid`, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(super::cpu_seconds(me).is_some());
        assert!(super::peak_rss_kib(me).unwrap() > 100);
        assert_eq!(super::cpu_seconds(u32::MAX), None);
        assert!(matches!(super::state(me), Some('R' | 'S')));
        assert_eq!(super::state(u32::MAX), None);
    }
}
