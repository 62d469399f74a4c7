//! Two engines and their paths on a virtual clock, for the unit and property tests.
//!
//! A path is two FIFO queues (a stream is reliable and ordered); frames in flight on a killed
//! path are lost. Every message's payload is its number (8 bytes, big endian) so the receiver
//! checks order, loss and duplication.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{PathId, PathKind, SessionConfig, SessionEngine, SessionEvent, Transmit};
use crate::wire::Frame;

pub(super) const A: usize = 0;
pub(super) const B: usize = 1;

#[derive(Debug)]
pub(super) struct Link {
    pub(super) kind: PathKind,
    /// `queues[s]`: frames written by side `s`, not yet read by the other.
    pub(super) queues: [VecDeque<Frame>; 2],
    /// Side `s` closed its end (after its queued frames are read, the other side sees EOF).
    pub(super) closed: [bool; 2],
    /// The side that opened it (the other handles the first frame as a Hello).
    pub(super) opener: usize,
    pub(super) hello_seen: bool,
}

pub(super) struct Net {
    pub(super) now: Instant,
    pub(super) engines: [SessionEngine; 2],
    pub(super) links: BTreeMap<PathId, Link>,
    pub(super) next_send: [u64; 2],
    pub(super) received: [u64; 2],
    pub(super) events: [Vec<SessionEvent>; 2],
    pub(super) frames_written: u64,
    /// Paths each side closed (`Transmit::Close`).
    pub(super) closed: [Vec<PathId>; 2],
    /// Messages carry [`padding`] bytes after their number (sizes vary, so do their costs).
    pub(super) padded: bool,
    /// `pump` takes runs of messages with [`SessionEngine::poll_data_framed`] (into buffers of
    /// at most about 200 bytes) whenever it gives some, as the driver does.
    pub(super) data_runs: bool,
}

/// The filler after message `n`'s number when the messages are padded: 0 to 60 bytes.
pub(super) fn padding(n: u64) -> usize {
    (n.wrapping_mul(37) % 61) as usize
}

impl Net {
    pub(super) fn new(config: SessionConfig) -> Net {
        let now = Instant::now();
        Net {
            now,
            engines: [
                SessionEngine::new_initiator(1, config.clone(), now),
                SessionEngine::new_responder(1, config, now),
            ],
            links: BTreeMap::new(),
            next_send: [0; 2],
            received: [0; 2],
            events: [Vec::new(), Vec::new()],
            frames_written: 0,
            closed: [Vec::new(), Vec::new()],
            padded: false,
            data_runs: false,
        }
    }

    pub(super) fn open(&mut self, side: usize, kind: PathKind) -> PathId {
        let path = self.engines[side].open_path(self.now, kind);
        self.links.insert(
            path,
            Link {
                kind,
                queues: [VecDeque::new(), VecDeque::new()],
                closed: [false; 2],
                opener: side,
                hello_seen: false,
            },
        );
        path
    }

    /// Queues up to `n` messages from `side` (fewer if the window fills); how many.
    pub(super) fn send(&mut self, side: usize, n: u64) -> u64 {
        let mut sent = 0;
        while sent < n {
            let n = self.next_send[side];
            let mut payload = n.to_be_bytes().to_vec();
            if self.padded {
                payload.resize(8 + padding(n), n as u8);
            }
            let payload = Bytes::from(payload);
            if self.engines[side].send(payload).is_err() {
                break;
            }
            self.next_send[side] += 1;
            sent += 1;
        }
        sent
    }

    /// Moves up to `n` frames of `side` into its links, then handles its events.
    pub(super) fn pump(&mut self, side: usize, n: usize) {
        let mut written = 0;
        while written < n {
            if self.data_runs && self.pump_data_run(side) {
                written += 1;
                continue;
            }
            written += 1;
            let Some(transmit) = self.engines[side].poll_transmit(self.now) else {
                break;
            };
            match transmit {
                Transmit::Frame { path, frame } => {
                    if let Some(link) = self.links.get_mut(&path) {
                        assert!(
                            !link.closed[side],
                            "{side} wrote {frame:?} on closed {path}"
                        );
                        link.queues[side].push_back(frame);
                    }
                }
                Transmit::Close { path } => {
                    if let Some(link) = self.links.get_mut(&path) {
                        link.closed[side] = true;
                    }
                    self.closed[side].push(path);
                }
            }
            self.frames_written += 1;
        }
        self.drain_events(side);
    }

    /// A run of messages of `side` encoded by [`SessionEngine::poll_data_framed`], decoded
    /// onto the current path's link; `false` if it gave none.
    fn pump_data_run(&mut self, side: usize) -> bool {
        let Some(path) = self.engines[side].current_path() else {
            return false;
        };
        let mut buf = bytes::BytesMut::new();
        if self.engines[side].poll_data_framed(self.now, &mut buf, 200) == 0 {
            return false;
        }
        let mut at: &[u8] = &buf;
        while let Ok((len, rest)) = unsigned_varint::decode::usize(at) {
            let frame = Frame::decode(&rest[..len], usize::MAX).expect("a frame it encoded");
            if let Some(link) = self.links.get_mut(&path) {
                assert!(
                    !link.closed[side],
                    "{side} wrote {frame:?} on closed {path}"
                );
                link.queues[side].push_back(frame);
            }
            at = &rest[len..];
            self.frames_written += 1;
        }
        true
    }

    pub(super) fn drain_events(&mut self, side: usize) {
        while let Some(event) = self.engines[side].poll_event() {
            assert!(
                !matches!(event, SessionEvent::Failed(_)),
                "side {side} failed: {event:?}"
            );
            self.events[side].push(event);
        }
    }

    /// Delivers up to `n` frames written by `from` on `path`, as the driver does: the frames
    /// read together go into the engine in one [`SessionEngine::handle_frames`]; an empty
    /// queue of a closed end is an EOF for the reader, which then closes its end too.
    pub(super) fn deliver(&mut self, path: PathId, from: usize, n: usize) {
        let to = 1 - from;
        let mut batch = Vec::new();
        for _ in 0..n {
            let Some(link) = self.links.get_mut(&path) else {
                break;
            };
            let Some(frame) = link.queues[from].pop_front() else {
                if link.closed[from] {
                    self.handle_batch(to, path, &mut batch);
                    // EOF: the reader's stream ends; it stops reading and writing.
                    self.links.remove(&path);
                    for side in [A, B] {
                        self.engines[side].handle_path_closed(self.now, path);
                        self.drain_events(side);
                    }
                }
                break;
            };
            let kind = link.kind;
            let first = to != link.opener && !link.hello_seen;
            link.hello_seen = true;
            match frame {
                Frame::Hello {
                    path: id,
                    recv_next,
                    recv_limit,
                    ..
                } if first => {
                    self.handle_batch(to, path, &mut batch);
                    let result = self.engines[to]
                        .handle_hello(self.now, kind, id, recv_next, recv_limit)
                        .map(|_| ());
                    assert_eq!(result, Ok(()), "side {to} refused a Hello on {path}");
                    self.drain_events(to);
                }
                frame => batch.push(frame),
            }
        }
        self.handle_batch(to, path, &mut batch);
    }

    /// The frames read together on `path` go into the engine of `to`.
    fn handle_batch(&mut self, to: usize, path: PathId, batch: &mut Vec<Frame>) {
        if batch.is_empty() {
            return;
        }
        let result = self.engines[to].handle_frames(self.now, path, batch.drain(..));
        assert_eq!(result, Ok(()), "side {to} refused a frame on {path}");
        self.drain_events(to);
    }

    /// The path's stream dies: frames in flight are lost, both sides see it closed.
    pub(super) fn kill(&mut self, path: PathId) {
        if self.links.remove(&path).is_some() {
            for side in [A, B] {
                self.engines[side].handle_path_closed(self.now, path);
                self.drain_events(side);
            }
        }
    }

    pub(super) fn tick(&mut self, by: Duration) {
        self.now += by;
        for side in [A, B] {
            self.engines[side].handle_timeout(self.now);
            self.drain_events(side);
        }
    }

    /// Reads every readable message of `side`, checking each is the next number.
    pub(super) fn read(&mut self, side: usize) {
        while let Some(payload) = self.engines[side].recv() {
            let mut number = [0u8; 8];
            number.copy_from_slice(&payload[..8]);
            let n = self.received[side];
            assert_eq!(
                u64::from_be_bytes(number),
                n,
                "side {side}: out of order, lost or duplicated"
            );
            let len = if self.padded { 8 + padding(n) } else { 8 };
            assert_eq!(payload.len(), len, "side {side}: message {n} changed");
            self.received[side] += 1;
        }
    }

    /// Pumps, delivers and reads everything until nothing moves.
    pub(super) fn settle(&mut self) {
        for _ in 0..10_000 {
            let before = self.progress();
            for side in [A, B] {
                self.pump(side, usize::MAX);
            }
            let paths: Vec<PathId> = self.links.keys().copied().collect();
            for path in paths {
                for side in [A, B] {
                    self.deliver(path, side, usize::MAX);
                }
            }
            for side in [A, B] {
                self.read(side);
            }
            if self.progress() == before && self.in_flight() == 0 {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn progress(&self) -> (u64, u64, u64, usize) {
        (
            self.frames_written,
            self.received[A],
            self.received[B],
            self.events[A].len() + self.events[B].len(),
        )
    }

    pub(super) fn in_flight(&self) -> usize {
        self.links
            .values()
            .map(|l| {
                l.queues[0].len() + l.queues[1].len() + usize::from(l.closed[0] || l.closed[1])
            })
            .sum()
    }
}
