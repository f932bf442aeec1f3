//! What a process costs: CPU time and resident memory from /proc, and the children the bench
//! starts (kcert-controller, kube-controller-manager), killed when dropped.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Child;
use std::sync::OnceLock;

/// User + system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU used by named processes between `start` and `stop`.
pub struct CpuMeter {
    start: Vec<(String, u32, f64)>,
}

impl CpuMeter {
    pub fn start(processes: &[(&str, u32)]) -> CpuMeter {
        CpuMeter {
            start: processes
                .iter()
                .map(|(n, pid)| (n.to_string(), *pid, cpu_seconds(*pid).unwrap_or(0.0)))
                .collect(),
        }
    }

    /// Seconds of CPU per process since `start`.
    pub fn stop(&self) -> Vec<(String, f64)> {
        self.start
            .iter()
            .map(|(n, pid, t0)| (n.clone(), cpu_seconds(*pid).map_or(0.0, |t| t - t0)))
            .collect()
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A release binary of this workspace, next to the bench's own executable.
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        exe.is_file(),
        "{} is missing: run `cargo build --release -p kcert-controller -p kcert` first",
        exe.display()
    );
    Ok(exe)
}

/// Start `program` with `args`, its output appended to `log`.
pub fn spawn(program: &PathBuf, args: &[String], log: &std::path::Path) -> Result<Running> {
    spawn_with_env(program, args, &[], log)
}

/// [`spawn`] with environment variables added.
pub fn spawn_with_env(
    program: &PathBuf,
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    log: &std::path::Path,
) -> Result<Running> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Running(child))
}
