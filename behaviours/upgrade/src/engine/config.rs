//! The session engine's limits and timers.

use std::time::Duration;

/// What a message counts against the windows besides its payload: the credit and the send
/// window are in bytes, and a message of `len` bytes takes `len + MESSAGE_COST` of them (so
/// empty messages are bounded too: a window of `w` bytes holds at most `w / MESSAGE_COST`
/// messages). It covers a `Data` frame's header (at most 1 + 10 bytes and a length prefix of
/// at most 3 for the default frame bound) with room for the bookkeeping.
pub const MESSAGE_COST: u64 = 32;

/// The limits and timers of one session; every field has a `with_*` builder.
///
/// The windows are in bytes, each message counting its length plus [`MESSAGE_COST`]. Memory
/// per session is bounded by `send_window_bytes` on the sending side and by
/// `recv_window_bytes` on the receiving side: the receiver never grants credit past
/// `recv_window_bytes` beyond what the application consumed, and refuses (fails the session)
/// data that would make it hold more. With the swarm driver a delivered message may be a slice
/// of a read chunk of `max(max_message + 41, 64 KiB)` bytes and keeps that chunk alive; each
/// path's reader lets at most `max(4, 2 × recv_window_bytes / chunk)` chunks be pinned so
/// (beyond that it copies payloads until chunks are released), so with the defaults a path
/// pins at most ≈ 2 MiB of chunks besides the window (a message waiting for a gap is copied
/// and pins only itself).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The largest message, in bytes. Default 16 KiB.
    pub max_message: usize,
    /// Messages sent and not yet acknowledged (the tail kept for re-sending after a switch),
    /// at most, in bytes (each message its length plus [`MESSAGE_COST`]); one message is
    /// always taken when none is queued. Default 4 MiB.
    pub send_window_bytes: usize,
    /// Messages received and not yet consumed by the application (delivered or waiting for a
    /// gap to fill), at most, in bytes (each message its length plus [`MESSAGE_COST`]): the
    /// credit granted to the peer. At least `max_message + MESSAGE_COST` (a smaller value is
    /// raised to it). Default 1 MiB.
    pub recv_window_bytes: u64,
    /// How long an acknowledgement may wait to be coalesced with later ones. Default 5 ms.
    /// An acknowledgement goes out at once when it covers `recv_window_bytes / 8` of new
    /// messages or of new credit.
    pub ack_delay: Duration,
    /// How long a path we switched away from (a relayed one, once a direct one took over)
    /// stays ready to take the traffic back before it is fenced and drained. Default 10 s.
    pub fallback_window: Duration,
    /// How long a fenced path waits for the peer's fence before its stream is closed anyway.
    /// Default 5 s.
    pub drain_timeout: Duration,
    /// How long the session lives without any usable path before it fails. Default 30 s.
    pub path_timeout: Duration,
    /// Paths open at once (opening, active or draining), at most; a peer's `Hello` past it is
    /// refused. Default 4.
    pub max_paths: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_message: 16 * 1024,
            send_window_bytes: 4 * 1024 * 1024,
            recv_window_bytes: 1024 * 1024,
            ack_delay: Duration::from_millis(5),
            fallback_window: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            path_timeout: Duration::from_secs(30),
            max_paths: 4,
        }
    }
}

impl SessionConfig {
    /// Sets [`SessionConfig::max_message`].
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }
    /// Sets [`SessionConfig::send_window_bytes`].
    pub fn with_send_window_bytes(mut self, bytes: usize) -> Self {
        self.send_window_bytes = bytes;
        self
    }
    /// Sets [`SessionConfig::recv_window_bytes`].
    pub fn with_recv_window_bytes(mut self, bytes: u64) -> Self {
        self.recv_window_bytes = bytes;
        self
    }
    /// The credit the receiver grants: [`SessionConfig::recv_window_bytes`], at least one
    /// message of `max_message` bytes.
    pub fn effective_recv_window(&self) -> u64 {
        self.recv_window_bytes
            .max(self.max_message as u64 + MESSAGE_COST)
    }
    /// Sets [`SessionConfig::ack_delay`].
    pub fn with_ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }
    /// Sets [`SessionConfig::fallback_window`].
    pub fn with_fallback_window(mut self, window: Duration) -> Self {
        self.fallback_window = window;
        self
    }
    /// Sets [`SessionConfig::drain_timeout`].
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
    /// Sets [`SessionConfig::path_timeout`].
    pub fn with_path_timeout(mut self, timeout: Duration) -> Self {
        self.path_timeout = timeout;
        self
    }
    /// Sets [`SessionConfig::max_paths`].
    pub fn with_max_paths(mut self, paths: usize) -> Self {
        self.max_paths = paths.max(1);
        self
    }
}
