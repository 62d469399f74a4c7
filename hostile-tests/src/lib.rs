//! meshwire under attack. The `victim` binary is a default node (ping, identify and kademlia
//! with default configs, the default resource limits) that prints what it holds every 200 ms;
//! `tests/hostile.rs` runs it in its own process (so its memory is its own), attacks it from
//! the test process on loopback and checks, while an honest peer keeps pinging it and looking
//! up keys through it, that its memory stays bounded, the honest peer is answered in time and
//! the defence's counter moved.
//!
//! `cargo test -p hostile-tests -- --nocapture` prints each attack's figures.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// One status line of the victim: `status key=value ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Resident memory, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// CPU time used so far, clock ticks (user + system).
    pub cpu_ticks: u64,
    /// Connections held (resource manager, system scope).
    pub conns: u64,
    /// Streams held.
    pub streams: u64,
    /// Requests the resource manager refused so far.
    pub refused: u64,
    /// Inbound ping streams reset because an echo could not be written in time.
    pub echo_timeouts: u64,
    /// Inbound streams the swarm refused or failed.
    pub inbound_stream_errors: u64,
    /// Inbound kademlia requests that failed (malformed, too large, timed out).
    pub kad_inbound_failures: u64,
    /// The most listen addresses identify kept for any peer.
    pub max_peer_addrs: u64,
    /// Identify pushes delayed for coming sooner than the push interval.
    pub pushes_delayed: u64,
}

impl Status {
    /// Formats the status as the victim prints it.
    pub fn to_line(&self) -> String {
        format!(
            "status rss_kib={} cpu_ticks={} conns={} streams={} refused={} echo_timeouts={} inbound_stream_errors={} kad_inbound_failures={} max_peer_addrs={} pushes_delayed={}",
            self.rss_kib,
            self.cpu_ticks,
            self.conns,
            self.streams,
            self.refused,
            self.echo_timeouts,
            self.inbound_stream_errors,
            self.kad_inbound_failures,
            self.max_peer_addrs,
            self.pushes_delayed
        )
    }

    /// Parses a line printed by [`Status::to_line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<Status> {
        let rest = line.strip_prefix("status ")?;
        let mut s = Status::default();
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "rss_kib" => s.rss_kib = v,
                "cpu_ticks" => s.cpu_ticks = v,
                "conns" => s.conns = v,
                "streams" => s.streams = v,
                "refused" => s.refused = v,
                "echo_timeouts" => s.echo_timeouts = v,
                "inbound_stream_errors" => s.inbound_stream_errors = v,
                "kad_inbound_failures" => s.kad_inbound_failures = v,
                "max_peer_addrs" => s.max_peer_addrs = v,
                "pushes_delayed" => s.pushes_delayed = v,
                _ => {}
            }
        }
        Some(s)
    }
}

/// This process's resident memory (KiB) and CPU time (clock ticks), from `/proc/self`.
pub fn self_usage() -> (u64, u64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    // Fields 14 and 15 of /proc/self/stat, counted after the command name's closing paren.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    (rss, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_usage_reads() {
        let s = Status {
            rss_kib: 1,
            cpu_ticks: 2,
            conns: 3,
            streams: 4,
            refused: 5,
            echo_timeouts: 6,
            inbound_stream_errors: 7,
            kad_inbound_failures: 8,
            max_peer_addrs: 9,
            pushes_delayed: 10,
        };
        assert_eq!(Status::parse(&s.to_line()), Some(s));
        assert_eq!(Status::parse("listening /ip4/1.2.3.4"), None);
        let (rss, _cpu) = self_usage();
        assert!(rss > 0);
    }
}
