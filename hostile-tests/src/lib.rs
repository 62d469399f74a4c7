//! meshwire under attack. The `victim` binary is a default node (ping, identify and kademlia
//! with default configs, the default resource limits) that prints what it holds every 200 ms;
//! the tests run it in its own process (so its memory and CPU are its own) and attack it on
//! loopback — the floods (`tests/floods.rs`) from the `attacker` binary, a process of its own
//! running one of the attacks of [`attack`], the protocol abuses (`tests/hostile.rs`) from
//! swarms in the test process — and check, while an honest peer keeps pinging it and looking
//! up keys through it, that its memory stays bounded, the honest peer is answered in time and
//! the defence's counter moved.
//!
//! The victim and the attacker talk to the tests in lines: [`Status`] and [`AttackerStatus`].
//! The attacker writes its streams' bytes by hand:
//!
//! ```
//! use hostile_tests::{propose, AttackerStatus};
//!
//! let line = AttackerStatus { connected: 3, ..Default::default() }.to_line();
//! assert_eq!(AttackerStatus::parse(&line).map(|s| s.connected), Some(3));
//! // What a lazy dialer sends to open a ping stream: the header and the proposal at once.
//! assert!(propose("/ipfs/ping/1.0.0").ends_with(b"/ipfs/ping/1.0.0\n"));
//! ```
//!
//! `cargo test -p hostile-tests -- --nocapture --test-threads 1` prints each attack's figures
//! (`docs/security.md` has them).

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attack;

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
    /// Connections the connection manager closed (every trim).
    pub trimmed: u64,
    /// Connections the connection manager's flood rule closed.
    pub flood_trimmed: u64,
    /// Inbound connections refused or failed before establishment (resource manager,
    /// limits, handshakes).
    pub incoming_errors: u64,
    /// Identify exchanges and pushes that failed (malformed, too large, timed out).
    pub identify_errors: u64,
    /// Inbound streams negotiated and handed to a behaviour so far.
    pub inbound_streams: u64,
}

/// The status keys, in the order [`Status::to_line`] prints them.
const KEYS: [&str; 15] = [
    "rss_kib",
    "cpu_ticks",
    "conns",
    "streams",
    "refused",
    "echo_timeouts",
    "inbound_stream_errors",
    "kad_inbound_failures",
    "max_peer_addrs",
    "pushes_delayed",
    "trimmed",
    "flood_trimmed",
    "incoming_errors",
    "identify_errors",
    "inbound_streams",
];

impl Status {
    fn values(&self) -> [u64; 15] {
        [
            self.rss_kib,
            self.cpu_ticks,
            self.conns,
            self.streams,
            self.refused,
            self.echo_timeouts,
            self.inbound_stream_errors,
            self.kad_inbound_failures,
            self.max_peer_addrs,
            self.pushes_delayed,
            self.trimmed,
            self.flood_trimmed,
            self.incoming_errors,
            self.identify_errors,
            self.inbound_streams,
        ]
    }

    fn field(&mut self, key: &str) -> Option<&mut u64> {
        Some(match key {
            "rss_kib" => &mut self.rss_kib,
            "cpu_ticks" => &mut self.cpu_ticks,
            "conns" => &mut self.conns,
            "streams" => &mut self.streams,
            "refused" => &mut self.refused,
            "echo_timeouts" => &mut self.echo_timeouts,
            "inbound_stream_errors" => &mut self.inbound_stream_errors,
            "kad_inbound_failures" => &mut self.kad_inbound_failures,
            "max_peer_addrs" => &mut self.max_peer_addrs,
            "pushes_delayed" => &mut self.pushes_delayed,
            "trimmed" => &mut self.trimmed,
            "flood_trimmed" => &mut self.flood_trimmed,
            "incoming_errors" => &mut self.incoming_errors,
            "identify_errors" => &mut self.identify_errors,
            "inbound_streams" => &mut self.inbound_streams,
            _ => return None,
        })
    }

    /// Formats the status as the victim prints it.
    pub fn to_line(&self) -> String {
        let mut line = String::from("status");
        for (k, v) in KEYS.iter().zip(self.values()) {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }

    /// Parses a line printed by [`Status::to_line`]; `None` for any other line. Unknown keys
    /// are ignored.
    pub fn parse(line: &str) -> Option<Status> {
        let rest = line.strip_prefix("status ")?;
        let mut s = Status::default();
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            if let Some(f) = s.field(k) {
                *f = v;
            }
        }
        Some(s)
    }
}

/// One status line of the `attacker` binary: `attacker key=value ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttackerStatus {
    /// Connections established so far.
    pub connected: u64,
    /// Dials that failed (handshake refused or timed out).
    pub dial_failures: u64,
    /// Established connections that the victim closed (or that timed out) so far.
    pub closed: u64,
    /// Streams opened so far.
    pub streams_opened: u64,
    /// Streams open now.
    pub streams_open: u64,
}

impl AttackerStatus {
    /// Formats the status as the attacker prints it.
    pub fn to_line(&self) -> String {
        format!(
            "attacker connected={} dial_failures={} closed={} streams_opened={} streams_open={}",
            self.connected, self.dial_failures, self.closed, self.streams_opened, self.streams_open
        )
    }

    /// Parses a line printed by [`AttackerStatus::to_line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<AttackerStatus> {
        let rest = line.strip_prefix("attacker ")?;
        let mut s = AttackerStatus::default();
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "connected" => s.connected = v,
                "dial_failures" => s.dial_failures = v,
                "closed" => s.closed = v,
                "streams_opened" => s.streams_opened = v,
                "streams_open" => s.streams_open = v,
                _ => {}
            }
        }
        Some(s)
    }
}

/// An unsigned varint.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One multistream-select message: `msg` and a newline, length-prefixed.
pub fn ms(msg: &str) -> Vec<u8> {
    let mut out = varint(msg.len() as u64 + 1);
    out.extend_from_slice(msg.as_bytes());
    out.push(b'\n');
    out
}

/// The dialer's side of multistream-select for `protocol`, sent at once (header and
/// proposal), as a lazy dialer does.
pub fn propose(protocol: &str) -> Vec<u8> {
    let mut out = ms("/multistream/1.0.0");
    out.extend(ms(protocol));
    out
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
            trimmed: 11,
            flood_trimmed: 12,
            incoming_errors: 13,
            identify_errors: 14,
            inbound_streams: 15,
        };
        assert_eq!(Status::parse(&s.to_line()), Some(s));
        assert_eq!(Status::parse("listening /ip4/1.2.3.4"), None);
        let a = AttackerStatus {
            connected: 1,
            dial_failures: 2,
            closed: 3,
            streams_opened: 4,
            streams_open: 5,
        };
        assert_eq!(AttackerStatus::parse(&a.to_line()), Some(a));
        assert_eq!(AttackerStatus::parse(&s.to_line()), None);
        assert_eq!(propose("/a"), b"\x13/multistream/1.0.0\n\x03/a\n");
        let (rss, _cpu) = self_usage();
        assert!(rss > 0);
    }
}
