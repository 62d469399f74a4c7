//! Loopback QUIC nodes for the RPC tests: ping and RPC (over kademlia), each swarm on its
//! own task, commanded through its handle.

#![allow(dead_code)]

use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_kad as kad;
use meshwire_rpc::{Behaviour, Config, RpcMetrics};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;

/// Bound on every wait of a test step (generous: the machine may be loaded).
pub const T: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub struct App {
    pub ping: meshwire_ping::Behaviour,
    pub rpc: Behaviour,
}

pub struct Node {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub handle: SwarmHandle<App>,
    pub metrics: RpcMetrics,
    /// The swarm's events.
    pub events: tokio::sync::mpsc::UnboundedReceiver<SwarmEvent<AppEvent>>,
}

/// A node with the swarm's stream limits raised (see below).
pub async fn start(config: Config) -> Node {
    start_with(config, true).await
}

/// A node; with `raise_limits` the swarm's stream limits per peer are raised.
pub async fn start_with(config: Config, raise_limits: bool) -> Node {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let kad = kad::Behaviour::new(
        peer,
        kad::Config::default().with_request_timeout(Duration::from_secs(2)),
    );
    let ping = meshwire_ping::Behaviour::new(
        meshwire_ping::Config::new().with_interval(Duration::from_millis(500)),
    );
    let metrics = RpcMetrics::default();
    let rpc = Behaviour::new(kad, config)
        .with_metrics(metrics.clone())
        .with_rtt_table(ping.rtt_table());
    let quic = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut limits = meshwire_swarm::rcmgr::Limits::from_machine();
    // The default lets one peer hold 16 streams under negotiation and 32 per protocol:
    // the strategy runs put up to `CONCURRENCY` calls on one provider.
    if raise_limits {
        limits.transient_peer = meshwire_swarm::rcmgr::ScopeLimits::streams(512, 512, 1024);
        limits.protocol_peer = meshwire_swarm::rcmgr::ScopeLimits::streams(512, 512, 1024);
    }
    let swarm_config = SwarmConfig {
        resource_limits: limits,
        idle_connection_timeout: Some(Duration::from_secs(120)),
        dial_timeout: Duration::from_secs(2),
        ..SwarmConfig::default()
    };
    let mut swarm = Swarm::new(quic, App { ping, rpc }, swarm_config);
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (handle, mut rx) = swarm.spawn();
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if tx.send(ev).is_err() {
                // Keep draining so that the swarm never waits for us.
                while rx.recv().await.is_some() {}
            }
        }
    });
    Node {
        peer,
        addr,
        handle,
        metrics,
        events,
    }
}

impl Node {
    /// Runs `f` on the RPC behaviour, in the swarm's task.
    pub async fn rpc<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Behaviour) -> R + Send + 'static,
    ) -> R {
        tokio::time::timeout(T, self.handle.with_behaviour(move |b| f(&mut b.rpc)))
            .await
            .expect("swarm answers in time")
            .expect("swarm alive")
    }

    /// Reads events until `f` picks one (within [`T`]).
    pub async fn wait_for<R>(&mut self, mut f: impl FnMut(SwarmEvent<AppEvent>) -> Option<R>) -> R {
        tokio::time::timeout(T, async {
            loop {
                let ev = self.events.recv().await.expect("node alive");
                if let Some(r) = f(ev) {
                    return r;
                }
            }
        })
        .await
        .expect("event in time")
    }

    /// Joins the DHT through `boot`.
    pub async fn join(&self, boot: &Node) {
        let (id, addr) = (boot.peer, boot.addr.clone());
        self.rpc(move |r| {
            r.kad_mut().add_address(id, addr);
            let _ = r.kad_mut().bootstrap();
        })
        .await;
        self.handle
            .dial(meshwire_transport::with_peer_id(&boot.addr, boot.peer))
            .await
            .expect("dial the bootstrap node");
    }
}
