//! The resource manager's scopes: limits hold at every level, shares move from the transient
//! scope to their owners, and every share comes back.

use meshwire_core::{Direction, Keypair, PeerId};
use meshwire_rcmgr::{
    Limits, RcmgrMetrics, Resource, ResourceError, ResourceManager, ScopeKind, ScopeLimits,
};
use proptest::prelude::*;

fn peer(n: u64) -> PeerId {
    Keypair::from_seed_for_tests(n).peer_id()
}

fn refused(e: ResourceError) -> (ScopeKind, Resource) {
    (e.scope, e.resource)
}

#[test]
fn system_and_transient_connection_limits_hold_and_are_counted() {
    let mut limits = Limits::for_memory(256 << 20);
    limits.system.conns_inbound = 3;
    limits.transient.conns = 2;
    let metrics = RcmgrMetrics::default();
    let rm = ResourceManager::with_metrics(limits, metrics.clone());
    let mut a = rm.open_connection(Direction::Inbound).unwrap();
    let b = rm.open_connection(Direction::Inbound).unwrap();
    // Two handshakes at once fill the transient scope.
    let e = rm.open_connection(Direction::Inbound).unwrap_err();
    assert_eq!(refused(e), (ScopeKind::Transient, Resource::Connections));
    // A finished handshake leaves it.
    a.set_peer(peer(1)).unwrap();
    assert_eq!(rm.transient_usage().conns(), 1);
    let _c = rm.open_connection(Direction::Inbound).unwrap();
    let e = rm.open_connection(Direction::Inbound).unwrap_err();
    assert_eq!(
        refused(e),
        (ScopeKind::System, Resource::InboundConnections)
    );
    assert_eq!(
        metrics.refused_count(ScopeKind::Transient, Resource::Connections),
        1
    );
    assert_eq!(
        metrics.refused_count(ScopeKind::System, Resource::InboundConnections),
        1
    );
    assert_eq!(metrics.refused_total(), 2);
    // Outbound connections have their own share (once the transient scope has room).
    drop(b);
    let _out = rm.open_connection(Direction::Outbound).unwrap();
}

#[test]
fn connection_memory_moves_with_the_connection() {
    let mut limits = Limits::for_memory(256 << 20);
    limits.connection_memory = 1 << 20;
    limits.peer.memory = 3 << 20;
    let rm = ResourceManager::new(limits);
    let p = peer(1);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = rm.open_connection(Direction::Inbound).unwrap();
        c.reserve_memory(1 << 20).unwrap();
        assert_eq!(rm.transient_usage().memory, 1 << 20);
        c.set_peer(p).unwrap();
        assert_eq!(rm.transient_usage().memory, 0);
        conns.push(c);
    }
    assert_eq!(rm.peer_usage(&p).memory, 3 << 20);
    // A connection cannot reserve past its own memory limit.
    let mut c = rm.open_connection(Direction::Inbound).unwrap();
    let e = c.reserve_memory((1 << 20) + 1).unwrap_err();
    assert_eq!(refused(e), (ScopeKind::Connection, Resource::Memory));
    // The peer's memory is full: a fourth connection's window does not move in.
    c.reserve_memory(1 << 20).unwrap();
    let e = c.set_peer(p).unwrap_err();
    assert_eq!(refused(e), (ScopeKind::Peer, Resource::Memory));
    drop(c);
    drop(conns);
    assert!(rm.system_usage().is_empty(), "{:?}", rm.system_usage());
    assert!(rm.peer_usage(&p).is_empty());
}

#[test]
fn muxer_memory_is_charged_to_the_peer_and_the_system_not_the_connection_limit() {
    let mut limits = Limits::for_memory(256 << 20);
    limits.connection_memory = 1 << 20;
    limits.peer.memory = 20 << 20;
    let rm = ResourceManager::new(limits);
    let p = peer(1);
    let mut c = rm.open_connection(Direction::Outbound).unwrap();
    c.reserve_memory(1 << 20).unwrap();
    c.set_peer(p).unwrap();
    // A Yamux window of 16 MiB: past the per-connection limit, within the peer's.
    c.reserve_muxer_memory(16 << 20).unwrap();
    assert_eq!(c.memory(), 17 << 20);
    assert_eq!(rm.peer_usage(&p).memory, 17 << 20);
    assert_eq!(rm.system_usage().memory, 17 << 20);
    // The peer's share bounds it: a second such connection does not fit.
    let mut d = rm.open_connection(Direction::Outbound).unwrap();
    d.set_peer(p).unwrap();
    let e = d.reserve_muxer_memory(16 << 20).unwrap_err();
    assert_eq!(refused(e), (ScopeKind::Peer, Resource::Memory));
    drop(d);
    drop(c);
    assert!(rm.system_usage().is_empty(), "{:?}", rm.system_usage());
    assert!(rm.peer_usage(&p).is_empty());
}

#[test]
fn streams_per_peer_per_protocol_and_stream_memory() {
    let mut limits = Limits::for_memory(256 << 20);
    limits.protocol_peer = ScopeLimits::streams(2, 2, 4);
    limits.stream_memory = 1000;
    let rm = ResourceManager::new(limits);
    let (p, q) = (peer(1), peer(2));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = rm.open_stream(p, Direction::Inbound).unwrap();
        s.set_protocol("/ipfs/kad/1.0.0").unwrap();
        held.push(s);
    }
    let mut third = rm.open_stream(p, Direction::Inbound).unwrap();
    let e = third.set_protocol("/ipfs/kad/1.0.0").unwrap_err();
    assert_eq!(
        refused(e),
        (ScopeKind::ProtocolPeer, Resource::InboundStreams)
    );
    // The same peer on another protocol, and another peer on this one, are fine.
    third.set_protocol("/ipfs/id/1.0.0").unwrap();
    let mut other = rm.open_stream(q, Direction::Inbound).unwrap();
    other.set_protocol("/ipfs/kad/1.0.0").unwrap();
    assert_eq!(rm.protocol_usage("/ipfs/kad/1.0.0").streams_inbound, 3);
    // Stream memory: per stream, and given back when the reservation drops.
    let r = held[0].reserve_memory(600).unwrap();
    let e = held[0].reserve_memory(600).unwrap_err();
    assert_eq!(refused(e), (ScopeKind::Stream, Resource::Memory));
    let _r2 = held[1].reserve_memory(600).unwrap();
    drop(r);
    let _r3 = held[0].reserve_memory(1000).unwrap();
    assert_eq!(rm.peer_usage(&p).memory, 1600);
}

#[test]
fn peer_overrides_and_service_memory() {
    let mut limits = Limits::for_memory(256 << 20);
    limits.peer.conns_inbound = 1;
    let trusted = peer(9);
    limits.peers.insert(
        trusted,
        ScopeLimits {
            conns_inbound: 10,
            conns: 10,
            ..limits.peer
        },
    );
    limits.service.memory = 100;
    let rm = ResourceManager::new(limits);
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut c = rm.open_connection(Direction::Inbound).unwrap();
        c.set_peer(trusted).unwrap();
        held.push(c);
    }
    let mut c = rm.open_connection(Direction::Inbound).unwrap();
    c.set_peer(peer(1)).unwrap();
    let mut d = rm.open_connection(Direction::Inbound).unwrap();
    assert!(d.set_peer(peer(1)).is_err());
    let r = rm.reserve_service_memory("kad-store", 80).unwrap();
    assert!(rm.reserve_service_memory("kad-store", 30).is_err());
    assert!(rm.reserve_service_memory("swim", 30).is_ok());
    assert_eq!(rm.service_usage("kad-store").memory, 80);
    drop(r);
    assert_eq!(rm.service_usage("kad-store").memory, 0);
}

#[derive(Debug, Clone)]
enum Op {
    Conn {
        inbound: bool,
        peer: u8,
        memory: u32,
    },
    Stream {
        inbound: bool,
        peer: u8,
        protocol: u8,
        memory: u32,
    },
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), 0..4u8, 0..3_000_000u32).prop_map(|(inbound, peer, memory)| Op::Conn {
            inbound,
            peer,
            memory
        }),
        (any::<bool>(), 0..4u8, 0..3u8, 0..300_000u32).prop_map(
            |(inbound, peer, protocol, memory)| {
                Op::Stream {
                    inbound,
                    peer,
                    protocol,
                    memory,
                }
            }
        ),
        (0..64usize).prop_map(Op::Drop),
    ]
}

#[allow(dead_code)] // held for their Drop
enum Held {
    Conn(meshwire_rcmgr::ConnectionScope),
    Stream(
        meshwire_rcmgr::StreamScope,
        Option<meshwire_rcmgr::Reservation>,
    ),
}

proptest! {
    /// Whatever is granted or refused, no scope ever holds more than its limit, and once
    /// everything is dropped nothing is held.
    #[test]
    fn limits_hold_and_everything_comes_back(ops in proptest::collection::vec(op(), 1..200)) {
        let mut limits = Limits::for_memory(64 << 20);
        limits.system.conns = 6;
        limits.peer.conns = 3;
        limits.peer.streams = 5;
        limits.protocol_peer = ScopeLimits::streams(2, 2, 3);
        let system = limits.system;
        let peer_limits = limits.peer;
        let rm = ResourceManager::new(limits);
        let mut held: Vec<Held> = Vec::new();
        for op in ops {
            match op {
                Op::Conn { inbound, peer: p, memory } => {
                    let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
                    if let Ok(mut c) = rm.open_connection(dir) {
                        let _ = c.reserve_memory(memory.into());
                        if c.set_peer(peer(p.into())).is_ok() {
                            held.push(Held::Conn(c));
                        }
                    }
                }
                Op::Stream { inbound, peer: p, protocol, memory } => {
                    let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
                    if let Ok(mut s) = rm.open_stream(peer(p.into()), dir) {
                        if s.set_protocol(&format!("/p/{protocol}")).is_ok() {
                            let r = s.reserve_memory(memory.into()).ok();
                            held.push(Held::Stream(s, r));
                        }
                    }
                }
                Op::Drop(i) => {
                    if !held.is_empty() {
                        let i = i % held.len();
                        held.swap_remove(i);
                    }
                }
            }
            let sys = rm.system_usage();
            prop_assert!(sys.conns() <= system.conns);
            prop_assert!(sys.memory <= system.memory);
            for p in 0..4u64 {
                let u = rm.peer_usage(&peer(p));
                prop_assert!(u.conns() <= peer_limits.conns);
                prop_assert!(u.streams() <= peer_limits.streams);
                prop_assert!(u.memory <= sys.memory);
            }
            let conns = held.iter().filter(|h| matches!(h, Held::Conn(_))).count();
            prop_assert_eq!(sys.conns() as usize, conns);
            let streams = held.len() - conns;
            prop_assert_eq!(sys.streams() as usize, streams);
        }
        drop(held);
        prop_assert!(rm.system_usage().is_empty());
        prop_assert!(rm.transient_usage().is_empty());
        for p in 0..4u64 {
            prop_assert!(rm.peer_usage(&peer(p)).is_empty());
        }
    }
}

#[test]
fn one_peer_cannot_hold_the_transient_scope() {
    let mut limits = Limits::for_memory(256 << 20);
    limits.transient.streams = 40;
    limits.transient_peer = ScopeLimits::streams(16, 16, 16);
    let rm = ResourceManager::new(limits);
    let (greedy, honest) = (peer(1), peer(2));
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(rm.open_stream(greedy, Direction::Inbound).unwrap());
    }
    let e = rm.open_stream(greedy, Direction::Inbound).unwrap_err();
    assert_eq!(
        refused(e),
        (ScopeKind::TransientPeer, Resource::InboundStreams)
    );
    // Another peer still negotiates.
    let mut s = rm.open_stream(honest, Direction::Inbound).unwrap();
    // Once negotiated, a stream leaves the peer's transient share.
    held[0].set_protocol("/ipfs/ping/1.0.0").unwrap();
    held.push(rm.open_stream(greedy, Direction::Inbound).unwrap());
    s.set_protocol("/ipfs/ping/1.0.0").unwrap();
    assert_eq!(rm.transient_usage().streams(), 16);
    drop(held);
    drop(s);
    assert!(rm.system_usage().is_empty());
    assert!(rm.transient_usage().is_empty());
}
