//! Loopback QUIC nodes for the registry tests: identify, ping and the registry (over
//! kademlia, with a relay server on relays and a relay client on clients), each swarm on its
//! own task, commanded through its handle; its events collected by the test.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use meshwire_kad as kad;
use meshwire_relay::client;
use meshwire_relay::ServerConfig;
use meshwire_relay_registry::{
    AutoRelayConfig, Behaviour, Event, RegistryConfig, RegistryEvent, RegistryMetrics,
};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{Multiaddr, TransportExt};
use tokio::sync::mpsc;

/// Bound on every wait of a test step (generous: the machine may be loaded).
pub const T: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub struct App {
    pub identify: meshwire_identify::Behaviour,
    pub ping: meshwire_ping::Behaviour,
    pub registry: Behaviour,
}

/// Registry settings for tests: records valid 8 s, refreshed and searched every second.
pub fn fast_config() -> RegistryConfig {
    RegistryConfig {
        record_ttl: Duration::from_secs(8),
        refresh_interval: Duration::from_secs(1),
        announce_interval: Duration::from_secs(5),
        discovery_interval: Duration::from_secs(1),
        failure_backoff: Duration::from_secs(60),
        ..RegistryConfig::default()
    }
}

/// Auto relay for tests: two reservations, a short wait for probes.
pub fn auto(reservations: usize) -> AutoRelayConfig {
    AutoRelayConfig {
        reservations,
        probe_wait: Duration::from_millis(500),
        ..AutoRelayConfig::default()
    }
}

pub struct NodeOpts {
    pub seed: Option<u64>,
    /// A relay server with these limits (its `max_reservations` is the capacity).
    pub server: Option<ServerConfig>,
    /// A relay client (and, in `registry.auto_relay`, auto relay).
    pub client: bool,
    pub registry: RegistryConfig,
    /// The NAT profile the registry reads (`Behaviour::with_nat_profile`).
    pub nat: Option<meshwire_nat::SharedNatProfile>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            seed: None,
            server: None,
            client: false,
            registry: fast_config(),
            nat: None,
        }
    }
}

/// A node running on its own task.
pub struct Node {
    pub peer: PeerId,
    /// Its QUIC listen address (without `/p2p`).
    pub addr: Multiaddr,
    pub handle: SwarmHandle<App>,
    /// Its events, each with when the swarm emitted it.
    pub events: mpsc::UnboundedReceiver<(Instant, SwarmEvent<AppEvent>)>,
    pub metrics: RegistryMetrics,
}

/// Kademlia's requests and the swarm's dials give up on a dead peer after 2 s (loopback), so
/// that a refresh stored behind a lookup that waits for a killed relay lands within the
/// records' 8 s.
pub const DHT_TIMEOUT: Duration = Duration::from_secs(2);

fn swarm_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(120)),
        dial_timeout: DHT_TIMEOUT,
        ..SwarmConfig::default()
    }
}

pub async fn start(opts: NodeOpts) -> Node {
    let key = match opts.seed {
        Some(s) => Keypair::from_seed_for_tests(s),
        None => Keypair::generate(),
    };
    let peer = key.peer_id();
    let kad = kad::Behaviour::new(
        peer,
        kad::Config::default().with_request_timeout(DHT_TIMEOUT),
    );
    let metrics = RegistryMetrics::default();
    let mut registry = Behaviour::new(key.clone(), opts.registry, kad)
        .expect("registry config")
        .with_metrics(metrics.clone());
    let ping = meshwire_ping::Behaviour::new(
        meshwire_ping::Config::new().with_interval(Duration::from_millis(500)),
    );
    registry = registry.with_rtt_table(ping.rtt_table());
    if let Some(nat) = opts.nat {
        registry = registry.with_nat_profile(nat);
    }
    if let Some(server) = opts.server {
        registry = registry
            .with_relay_server(meshwire_relay::Behaviour::new(key.clone(), server).expect("relay"));
    }
    let identify = meshwire_identify::Behaviour::new(
        meshwire_identify::Config::from_public_key(key.public())
            .with_push_listen_addr_updates(true),
    );
    let quic = QuicTransport::new(key.clone(), QuicConfig::default()).expect("quic");
    let mut swarm = if opts.client {
        let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
        registry = registry.with_relay_client(relay_client);
        let app = App {
            identify,
            ping,
            registry,
        };
        Swarm::new(quic.or_transport(relay_transport), app, swarm_config())
    } else {
        let app = App {
            identify,
            ping,
            registry,
        };
        Swarm::new(quic, app, swarm_config())
    };
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (handle, mut rx) = swarm.spawn();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if tx.send((Instant::now(), ev)).is_err() {
                // Keep draining so that the swarm never waits for us.
                while rx.recv().await.is_some() {}
            }
        }
    });
    Node {
        peer,
        addr,
        handle,
        events,
        metrics,
    }
}

impl Node {
    /// `addr/p2p/peer`.
    pub fn full_addr(&self) -> Multiaddr {
        meshwire_transport::with_peer_id(&self.addr, self.peer)
    }

    /// Runs `f` on the registry, in the swarm's task.
    pub async fn registry<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Behaviour) -> R + Send + 'static,
    ) -> R {
        tokio::time::timeout(T, self.handle.with_behaviour(move |b| f(&mut b.registry)))
            .await
            .expect("swarm answers in time")
            .expect("swarm alive")
    }

    /// Joins the DHT through `boot`.
    pub async fn join(&self, boot: &Node) {
        let (id, addr) = (boot.peer, boot.addr.clone());
        self.registry(move |r| {
            r.kad_mut().add_address(id, addr);
            let _ = r.kad_mut().bootstrap();
        })
        .await;
        self.handle
            .dial(boot.full_addr())
            .await
            .expect("dial the bootstrap node");
    }

    /// Reads events until `f` picks one (within [`T`]).
    pub async fn wait_for<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&SwarmEvent<AppEvent>) -> Option<R>,
    ) -> R {
        self.wait_for_at(what, |_, ev| f(ev)).await.1
    }

    /// Like [`Node::wait_for`], with when the event was emitted.
    pub async fn wait_for_at<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(Instant, &SwarmEvent<AppEvent>) -> Option<R>,
    ) -> (Instant, R) {
        let peer = self.peer;
        tokio::time::timeout(T, async {
            loop {
                let (at, ev) = self.events.recv().await.expect("node alive");
                if let Some(r) = f(at, &ev) {
                    return (at, r);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{peer}: timed out waiting for {what}"))
    }

    /// Drops the events read so far.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}

/// The registry event in a swarm event, if it is one.
pub fn registry_event(ev: &SwarmEvent<AppEvent>) -> Option<&RegistryEvent> {
    match ev {
        SwarmEvent::Behaviour(AppEvent::Registry(Event::Registry(e))) => Some(e),
        _ => None,
    }
}

/// Polls `f` every 100 ms until it is true (within [`T`]).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A relay server config with `capacity` reservations and no per-IP limits (every test
/// node is on 127.0.0.1).
pub fn server(capacity: usize) -> ServerConfig {
    ServerConfig {
        max_reservations: capacity,
        max_reservations_per_ip: None,
        reservation_rate_per_ip: None,
        ..ServerConfig::default()
    }
}
