//! Per-connection state, the bounded cache of peers' info, and the re-identify schedule.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::task::{Context, Poll, Waker};

use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::{StreamRequestId, Timer};
use multiaddr::Multiaddr;
use tokio::time::Instant;

use crate::protocol::Info;

/// Our state of one connection.
pub(crate) struct Conn {
    pub(crate) peer: PeerId,
    /// The remote's address, sent back as its observed address.
    pub(crate) remote_addr: Multiaddr,
    /// Our identify request waiting for its stream.
    pub(crate) identify_request: Option<StreamRequestId>,
    /// Our identify request's stream is being read.
    pub(crate) identify_running: bool,
    /// When the next identify request is due (`None` while one is outstanding).
    pub(crate) next_identify: Option<Instant>,
    /// Our push waiting for its stream.
    pub(crate) push_request: Option<StreamRequestId>,
    /// Our push is being written.
    pub(crate) push_running: bool,
    /// Our info changed while a push was outstanding: push again after it.
    pub(crate) push_again: bool,
    /// Inbound streams being handled.
    pub(crate) inbound: usize,
    /// When the last push we took on this connection arrived.
    pub(crate) last_push: Option<Instant>,
}

impl Conn {
    /// A connection to `peer`, at `remote_addr`, with nothing outstanding.
    pub(crate) fn new(peer: PeerId, remote_addr: Multiaddr) -> Self {
        Conn {
            peer,
            remote_addr,
            identify_request: None,
            identify_running: false,
            next_identify: None,
            push_request: None,
            push_running: false,
            push_again: false,
            inbound: 0,
            last_push: None,
        }
    }

    pub(crate) fn identify_outstanding(&self) -> bool {
        self.identify_request.is_some() || self.identify_running
    }

    pub(crate) fn push_outstanding(&self) -> bool {
        self.push_request.is_some() || self.push_running
    }
}

/// The latest info of connected peers, bounded; the least recently updated goes first.
pub(crate) struct PeerCache {
    entries: HashMap<PeerId, (Info, u64)>,
    clock: u64,
    capacity: usize,
}

impl PeerCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PeerCache {
            entries: HashMap::new(),
            clock: 0,
            capacity,
        }
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Info> {
        self.entries.get(peer).map(|(info, _)| info)
    }

    pub(crate) fn insert(&mut self, peer: PeerId, info: Info) {
        if self.capacity == 0 {
            return;
        }
        self.clock += 1;
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, stamp))| *stamp)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(peer, (info, self.clock));
    }

    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.entries.remove(peer);
    }
}

/// Deadlines of connections (re-identification), earliest first, with the timer that wakes
/// the behaviour for the earliest. Entries are not removed when plans change: the caller
/// checks that a due entry is still wanted.
#[derive(Default)]
pub(crate) struct Schedule {
    deadlines: BinaryHeap<Reverse<(Instant, ConnectionId)>>,
    timer: Timer,
    /// The waker of the last `Pending` poll, woken by an insertion (the timer must be armed
    /// for it).
    waker: Option<Waker>,
}

impl Schedule {
    pub(crate) fn insert(&mut self, at: Instant, connection: ConnectionId) {
        self.deadlines.push(Reverse((at, connection)));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The next entry whose deadline passed; `Pending` with the timer armed for the earliest
    /// one otherwise.
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<(Instant, ConnectionId)> {
        // Two rounds at most: the second only if the timer completed right after the first.
        for _ in 0..2 {
            let now = Instant::now();
            if let Some(&Reverse((at, connection))) = self.deadlines.peek() {
                if at <= now {
                    self.deadlines.pop();
                    return Poll::Ready((at, connection));
                }
            }
            let next = self.deadlines.peek().map(|&Reverse((at, _))| at);
            if self.timer.poll_at(next, cx).is_pending() {
                break;
            }
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    fn info(n: u8) -> Info {
        let key = Keypair::from_secret_bytes([n; 32]).public();
        Info {
            public_key: key,
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: vec![format!("/ip4/10.0.0.{n}/udp/1/quic-v1").parse().unwrap()],
            protocols: Vec::new(),
            observed_addr: Multiaddr::empty(),
        }
    }

    #[test]
    fn cache_is_bounded_and_drops_the_oldest() {
        let mut cache = PeerCache::new(2);
        let (a, b, c) = (info(1), info(2), info(3));
        cache.insert(a.peer_id(), a.clone());
        cache.insert(b.peer_id(), b.clone());
        // Refreshing a makes b the oldest.
        cache.insert(a.peer_id(), a.clone());
        cache.insert(c.peer_id(), c.clone());
        assert!(cache.get(&a.peer_id()).is_some());
        assert!(cache.get(&b.peer_id()).is_none());
        assert!(cache.get(&c.peer_id()).is_some());
        assert_eq!(cache.entries.len(), 2);
        let mut none = PeerCache::new(0);
        none.insert(a.peer_id(), a);
        assert!(none.entries.is_empty());
    }

    #[tokio::test]
    async fn schedule_yields_due_entries_in_order() {
        let mut s = Schedule::default();
        let now = Instant::now();
        let (c1, c2) = (ConnectionId::next(), ConnectionId::next());
        s.insert(now + std::time::Duration::from_millis(30), c2);
        s.insert(now, c1);
        let first = std::future::poll_fn(|cx| s.poll_due(cx)).await;
        assert_eq!(first, (now, c1));
        let second = std::future::poll_fn(|cx| s.poll_due(cx)).await;
        assert_eq!(second.1, c2);
        assert!(Instant::now() >= now + std::time::Duration::from_millis(30));
    }
}
