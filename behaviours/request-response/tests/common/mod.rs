//! Two swarms on the in-memory transport, both driven by the test: `b` listens, `a` knows
//! its address, and `next` yields whichever behaviour event comes first.

#![allow(dead_code)]

use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_swarm::{Multiaddr, NetworkBehaviour, PeerId, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::memory::MemoryTransport;

/// The longest a test waits for one event.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn swarm<B: NetworkBehaviour>(behaviour: B) -> Swarm<B> {
    let transport = MemoryTransport::new(Keypair::generate().peer_id());
    Swarm::new(transport, behaviour, SwarmConfig::default())
}

pub async fn listen<B: NetworkBehaviour>(s: &mut Swarm<B>) -> Multiaddr {
    s.listen_on("/memory/0".parse().unwrap()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.next_event().await {
            return address;
        }
    }
}

/// Which swarm an event came from.
#[derive(Debug)]
pub enum Side<A, B> {
    A(A),
    B(B),
}

pub struct Pair<A: NetworkBehaviour, B: NetworkBehaviour> {
    pub a: Swarm<A>,
    pub b: Swarm<B>,
}

impl<A: NetworkBehaviour, B: NetworkBehaviour> Pair<A, B> {
    /// `b` listens; `a` has its address in the address book, so a request dials it.
    pub async fn new(a: A, b: B) -> Self {
        let (mut a, mut b) = (swarm(a), swarm(b));
        let addr = listen(&mut b).await;
        a.add_peer_address(b.local_peer_id(), addr);
        Pair { a, b }
    }

    pub fn a_peer(&self) -> PeerId {
        self.a.local_peer_id()
    }

    pub fn b_peer(&self) -> PeerId {
        self.b.local_peer_id()
    }

    /// The next behaviour event of either swarm (other swarm events are skipped); panics
    /// after [`WAIT`].
    pub async fn next(&mut self) -> Side<A::Event, B::Event> {
        self.next_within(WAIT).await.expect("no event in time")
    }

    /// The next behaviour event within `within`, or `None`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Side<A::Event, B::Event>> {
        let step = async {
            loop {
                tokio::select! {
                    ev = self.a.next_event() => if let SwarmEvent::Behaviour(e) = ev { return Side::A(e) },
                    ev = self.b.next_event() => if let SwarmEvent::Behaviour(e) = ev { return Side::B(e) },
                }
            }
        };
        tokio::time::timeout(within, step).await.ok()
    }

    /// Drives both swarms for `d`, collecting their behaviour events.
    pub async fn run_for(&mut self, d: Duration) -> Vec<Side<A::Event, B::Event>> {
        let mut out = Vec::new();
        let end = tokio::time::Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(ev) => out.push(ev),
                None => return out,
            }
        }
    }
}
