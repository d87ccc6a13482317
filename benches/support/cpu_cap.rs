//! A Lambda's CPU share for one process, as a cgroup v1 CPU quota. Lambda allocates CPU in
//! proportion to memory, one full vCPU at 1,769 MB (Lambda developer guide, "Configure Lambda
//! function memory"): a function of M MB gets M/1769 of a CPU, enforced here as a quota of that
//! share of each period (128 MB: 1447 of every 20000 µs). Needs root and a cgroup v1 cpu
//! controller.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// CFS period of the caps.
pub const PERIOD_US: u64 = 20_000;
pub const FULL_VCPU_MB: u64 = 1769;

/// The quota of each period a function of `memory_mb` gets.
pub fn quota_us(memory_mb: u64) -> u64 {
    PERIOD_US * memory_mb / FULL_VCPU_MB
}

/// A cgroup v1 CPU group holding one process at `memory_mb`'s share of a CPU. Removed on drop
/// (after its process is gone: a group with tasks cannot be removed).
pub struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    const ROOT: &'static str = "/sys/fs/cgroup/cpu";

    pub fn available() -> bool {
        Path::new(Self::ROOT).join("cgroup.procs").exists()
            && std::fs::create_dir_all(Path::new(Self::ROOT).join("stigg-bench-probe")).is_ok()
            && std::fs::remove_dir(Path::new(Self::ROOT).join("stigg-bench-probe")).is_ok()
    }

    pub fn new(name: &str, memory_mb: u64) -> Self {
        let dir = Path::new(Self::ROOT).join(format!("stigg-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the cgroup (root and cgroup v1 cpu needed)");
        std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string()).unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota_us(memory_mb).to_string()).unwrap();
        Self { dir }
    }

    /// Moves the process (all its threads, and any it starts later) into the group.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// (periods, periods throttled, ns throttled) from `cpu.stat`.
    pub fn stat(&self) -> (u64, u64, u64) {
        let s = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let get = |k: &str| s.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok())).unwrap_or(0);
        (get("nr_periods "), get("nr_throttled "), get("throttled_time "))
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Anything left (the process should be dead by now) goes back to the root group first.
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.split_whitespace() {
                let _ = std::fs::write(Path::new(Self::ROOT).join("cgroup.procs"), pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}
