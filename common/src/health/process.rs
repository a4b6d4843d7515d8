//! The standard Prometheus process metrics, read from `/proc/self` at each scrape.
//!
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds` and
//! `process_start_time_seconds`, named as the Prometheus client libraries name them
//! (<https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics>). The
//! maintained collector for prometheus-client (`kubert-prometheus-process`) is built on an
//! older prometheus-client than ours, so this is the small collector it would be. Off Linux
//! (no `/proc`), nothing is reported.

use std::fs;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// Clock ticks per second of the times in `/proc/<pid>/stat`. The kernel reports them in
/// `USER_HZ`, which is 100 on every architecture Linux exports to user space (the crate
/// forbids the `unsafe` a `sysconf(_SC_CLK_TCK)` call would need).
const USER_HZ: f64 = 100.0;

/// Reads `/proc/self` when Prometheus scrapes.
#[derive(Debug)]
pub(super) struct ProcessCollector {
    /// When the process started, in seconds since the Unix epoch (it never changes).
    start_time: Option<f64>,
}

// === impl ProcessCollector ===

impl ProcessCollector {
    /// Reads the process's start time once.
    pub(super) fn new() -> Self {
        let start_time = read("/proc/self/stat")
            .and_then(|stat| Stat::parse(&stat))
            .zip(read("/proc/stat").and_then(|s| boot_time(&s)))
            .map(|(stat, boot)| boot + stat.start_ticks as f64 / USER_HZ);
        Self { start_time }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stat) = read("/proc/self/stat").and_then(|s| Stat::parse(&s)) else {
            return Ok(());
        };
        let cpu = (stat.user_ticks + stat.system_ticks) as f64 / USER_HZ;
        ConstCounter::new(cpu).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)
        };
        if let Some(rss) = read("/proc/self/status").and_then(|s| resident_bytes(&s)) {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss as f64,
            )?;
        }
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.virtual_bytes as f64,
        )?;
        if let Ok(fds) = fs::read_dir("/proc/self/fd") {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                fds.count() as f64,
            )?;
        }
        if let Some(max) = read("/proc/self/limits").and_then(|s| max_open_files(&s)) {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            )?;
        }
        if let Some(start) = self.start_time {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            )?;
        }
        Ok(())
    }
}

/// The fields of `/proc/<pid>/stat` the metrics need.
#[derive(Debug, PartialEq)]
struct Stat {
    /// Field 14, `utime`, in clock ticks.
    user_ticks: u64,
    /// Field 15, `stime`, in clock ticks.
    system_ticks: u64,
    /// Field 22, `starttime`: clock ticks after boot.
    start_ticks: u64,
    /// Field 23, `vsize`, in bytes.
    virtual_bytes: u64,
}

// === impl Stat ===

impl Stat {
    /// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold
    /// spaces and parentheses itself, so the fields are counted from the last `)`.
    fn parse(text: &str) -> Option<Self> {
        let (_, rest) = text.rsplit_once(')')?;
        // `rest` starts at field 3 (the state).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            user_ticks: field(14)?,
            system_ticks: field(15)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
        })
    }
}

/// `btime` of `/proc/stat`: the boot time in seconds since the Unix epoch.
fn boot_time(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (the file says kB; no page size needed).
fn resident_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`unlimited`: none).
fn max_open_files(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse::<f64>().ok()
}

/// The file's text, or `None` (no `/proc`, not Linux).
fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long ago the process started.
    fn uptime(collector: &ProcessCollector) -> Option<Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        collector
            .start_time
            .map(|start| Duration::from_secs_f64((now - start).max(0.0)))
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 37 0 0 20 0 9 0 123456 98765432 3000 18446744073709551615";
        assert_eq!(
            Stat::parse(text),
            Some(Stat {
                user_ticks: 250,
                system_ticks: 37,
                start_ticks: 123456,
                virtual_bytes: 98765432,
            })
        );
        assert_eq!(Stat::parse("4242 (cut"), None);
        assert_eq!(Stat::parse("4242 (short) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time_are_read() {
        assert_eq!(
            resident_bytes("Name:\tworker\nVmSize:\t  90000 kB\nVmRSS:\t   14336 kB\n"),
            Some(14336 * 1024)
        );
        assert_eq!(resident_bytes("Name:\tworker\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            max_open_files("Max open files            unlimited   unlimited  files\n"),
            None
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1.7e9)
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_reports_every_metric() {
        let collector = ProcessCollector::new();
        let age = uptime(&collector).expect("a start time");
        assert!(age < Duration::from_secs(24 * 3600), "started {age:?} ago");
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(collector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing:\n{text}"
            );
        }
    }
}
