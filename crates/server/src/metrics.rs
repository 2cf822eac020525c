//! Prometheus metrics, rendered in the text exposition format. Counters and histograms live
//! here; gauges of engine state (fund balances, breaker states, open interest) are read from the
//! engine at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds: 50 µs .. 10 s.
const BOUNDS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 10.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BOUNDS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (command, outcome) -> count; outcome is accepted, rejected or failed.
    commands: BTreeMap<(&'static str, &'static str), u64>,
    /// event name -> count.
    events: BTreeMap<String, u64>,
    /// HTTP (route, status) -> count.
    requests: BTreeMap<(String, u16), u64>,
    /// route -> request latency.
    latency: BTreeMap<String, Histogram>,
    commit: Histogram,
    batch_sizes: Histogram,
    commit_failures: u64,
    rate_limited: u64,
    /// Automatic snapshots written (durable) and failed, and the newest one's seq (recovered
    /// from or written).
    snapshots_written: u64,
    snapshots_failed: u64,
    snapshot_seq: u64,
}

/// The service's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn command(&self, kind: &'static str, outcome: &'static str) {
        self.with(|m| *m.commands.entry((kind, outcome)).or_default() += 1);
    }

    /// Add the counts of one group commit (one lock for the whole group).
    pub fn add(&self, commands: &BTreeMap<(&'static str, &'static str), u64>, events: &BTreeMap<&str, u64>) {
        self.with(|m| {
            for (k, n) in commands {
                *m.commands.entry(*k).or_default() += n;
            }
            for (name, n) in events {
                match m.events.get_mut(*name) {
                    Some(c) => *c += n,
                    None => {
                        m.events.insert(name.to_string(), *n);
                    }
                }
            }
        });
    }

    pub fn event(&self, name: &str) {
        self.with(|m| match m.events.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                m.events.insert(name.to_string(), 1);
            }
        });
    }

    /// One group commit: how long the write, fdatasync and apply took, and how many commands.
    pub fn commit(&self, took: Duration, commands: usize) {
        self.with(|m| {
            m.commit.observe(took.as_secs_f64());
            // Batch sizes share the bucket bounds, scaled: 1 "second" = 1,000 commands.
            m.batch_sizes.observe(commands as f64 / 1000.0);
        });
    }

    pub fn commit_failed(&self) {
        self.with(|m| m.commit_failures += 1);
    }

    /// An automatic snapshot of the state after `seq` is on disk.
    pub fn snapshot_written(&self, seq: u64) {
        self.with(|m| {
            m.snapshots_written += 1;
            m.snapshot_seq = seq;
        });
    }

    /// Recovery started from the snapshot of the state after `seq`.
    pub fn snapshot_recovered(&self, seq: u64) {
        self.with(|m| m.snapshot_seq = seq);
    }

    pub fn snapshot_failed(&self) {
        self.with(|m| m.snapshots_failed += 1);
    }

    pub fn rate_limited(&self) {
        self.with(|m| m.rate_limited += 1);
    }

    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.with(|m| {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
            m.latency.entry(route.to_string()).or_default().observe(took.as_secs_f64());
        });
    }

    /// The counters and histograms in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.with(|m| {
            out.push_str("# HELP ballast_commands_total Commands by kind and outcome (accepted, rejected by the engine, failed: not durable).\n# TYPE ballast_commands_total counter\n");
            for ((kind, outcome), n) in &m.commands {
                let _ = writeln!(out, "ballast_commands_total{{cmd=\"{kind}\",outcome=\"{outcome}\"}} {n}");
            }
            out.push_str("# HELP ballast_events_total Engine events by name (liquidations, ADL, governance, ...).\n# TYPE ballast_events_total counter\n");
            for (name, n) in &m.events {
                let _ = writeln!(out, "ballast_events_total{{event=\"{name}\"}} {n}");
            }
            let liquidations: u64 = ["liquidated", "liquidation_filled", "backstop_takeover"]
                .iter()
                .filter_map(|e| m.events.get(*e))
                .sum();
            out.push_str("# HELP ballast_liquidations_total Liquidation steps: liquidator takeovers, liquidation fills and backstop takeovers.\n# TYPE ballast_liquidations_total counter\n");
            let _ = writeln!(out, "ballast_liquidations_total {liquidations}");
            out.push_str("# HELP ballast_http_requests_total HTTP requests by route and status.\n# TYPE ballast_http_requests_total counter\n");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(out, "ballast_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
            out.push_str("# HELP ballast_http_request_seconds Request latency by route (for commands: until durable).\n# TYPE ballast_http_request_seconds histogram\n");
            for (route, h) in &m.latency {
                h.render(out, "ballast_http_request_seconds", &format!("route=\"{route}\""));
            }
            out.push_str("# HELP ballast_journal_commit_seconds One group commit: journal write, fdatasync and apply.\n# TYPE ballast_journal_commit_seconds histogram\n");
            m.commit.render(out, "ballast_journal_commit_seconds", "");
            out.push_str("# HELP ballast_journal_batch_kilocommands Commands per group commit, in thousands.\n# TYPE ballast_journal_batch_kilocommands histogram\n");
            m.batch_sizes.render(out, "ballast_journal_batch_kilocommands", "");
            out.push_str("# HELP ballast_journal_commit_failures_total Group commits that failed (not acknowledged).\n# TYPE ballast_journal_commit_failures_total counter\n");
            let _ = writeln!(out, "ballast_journal_commit_failures_total {}", m.commit_failures);
            out.push_str("# HELP ballast_snapshots_total Automatic snapshots by outcome (written: durable on disk; failed: the commands stay durable; tried again after another snapshot_every commands).\n# TYPE ballast_snapshots_total counter\n");
            let _ = writeln!(out, "ballast_snapshots_total{{outcome=\"written\"}} {}", m.snapshots_written);
            let _ = writeln!(out, "ballast_snapshots_total{{outcome=\"failed\"}} {}", m.snapshots_failed);
            out.push_str("# HELP ballast_snapshot_seq Sequence number of the newest snapshot: the one recovery started from, then each one written (0: none).\n# TYPE ballast_snapshot_seq gauge\n");
            let _ = writeln!(out, "ballast_snapshot_seq {}", m.snapshot_seq);
            out.push_str("# HELP ballast_rate_limited_total Requests refused by the per-key rate limit.\n# TYPE ballast_rate_limited_total counter\n");
            let _ = writeln!(out, "ballast_rate_limited_total {}", m.rate_limited);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.0003);
        h.observe(0.003);
        h.observe(100.0);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
