//! The node: every behaviour that has landed, composed with `#[derive(NetworkBehaviour)]`,
//! built from the configuration with all metrics in one registry.
//!
//! Extension points: a protocol that lands later is one more
//! field of [`Node`], one section in `config.rs`/`settings.rs` (and the example config), its
//! metrics registered in [`build`], and its rows in `status.rs`.

use meshwire::connmgr::{BasicConnMgr, ConnManagerHandle, ConnMgrMetrics};
use meshwire::holepunch::{self, ConnectorMetrics, HolepunchMetrics};
use meshwire::nat::{self, NatProbeMetrics};
use meshwire::prelude::*;
use meshwire::pubsub;
use meshwire::relay::{self, client, RelayMetrics};
use meshwire::rpc::{self, RpcMetrics};
use meshwire::transport::quic::QuicTransport;
use meshwire::transport::Transport;
use prometheus_client::registry::Registry;
use std::time::Instant;

use crate::config::{Config, ConfigError, Source};
use crate::settings;

/// Topics that keep their own label in the pubsub metrics; later ones are counted under
/// `"other"` (the label set stays bounded whatever peers publish).
const PUBSUB_METRIC_TOPICS: usize = 64;

/// Every behaviour of a `meshwire node`.
#[derive(NetworkBehaviour)]
pub struct Node {
    /// Circuit relay v2 client: listen through relays (`node.relay_listen`), dial circuits.
    pub relay_client: client::Behaviour,
    /// Circuit relay v2 server (`[relay_server]`; off with `enabled = false`).
    pub relay_server: Toggle<relay::Behaviour>,
    /// `/ipfs/ping/1.0.0`: RTTs of every connection.
    pub ping: ping::Behaviour,
    /// `/ipfs/id/1.0.0`: agents, protocols and addresses of peers.
    pub identify: identify::Behaviour,
    /// RPC (`[rpc]`) over the Kademlia DHT it owns (`[kad]`; reach it with [`Node::kad`]).
    pub rpc: rpc::Behaviour,
    /// Hole punching (`[holepunch]`; off with `enabled = false`): the connector upgrades
    /// relayed connections to direct ones by DCUtR, DCUtR with port prediction or the
    /// birthday spray, chosen from both peers' NAT profiles; ours comes from the NAT
    /// detector (`[nat] observers`) inside.
    pub holepunch: Toggle<holepunch::NatTraversal>,
    /// The NAT probe server (`[nat_server]`, off by default): answers other nodes'
    /// `/meshwire/natprobe/1.0.0` requests, dial-backs from another port and IP.
    pub nat_server: Toggle<nat::NatProbeServer>,
    /// Gossipsub v1.1 (`[pubsub]`; off with `enabled = false`), subscribed to `pubsub.topics`.
    pub pubsub: Toggle<pubsub::Behaviour>,
    /// SWIM membership of `node.realms` (off without realms).
    pub swim: Toggle<swim::Behaviour>,
}

impl Node {
    /// The Kademlia DHT (owned by [`Node::rpc`], which finds providers through it).
    pub fn kad(&mut self) -> &mut kad::Behaviour {
        self.rpc.kad_mut()
    }
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The swarm (transport, listen address, connection manager, a behaviour's settings).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The connection manager's settings.
    #[error("connmgr: {0}")]
    ConnMgr(#[from] meshwire::connmgr::ConnMgrError),
}

/// A built node, not yet running.
pub struct Built {
    /// The swarm.
    pub swarm: Swarm<Node>,
    /// Every crate's metrics (`swarm_*`, `rcmgr_*`, `connmgr_*`, `relay_*`; the CLI's
    /// `meshwire_*` gauges are added by [`crate::metrics::Metrics::new`]).
    pub registry: Registry,
    /// The connection manager, typed.
    pub conn_manager: ConnManagerHandle<BasicConnMgr>,
}

/// Builds the node of `config` with identity `key`, listening on `node.listen`.
///
/// # Errors
///
/// [`NodeError`].
pub fn build(config: &Config, source: &Source, key: Keypair) -> Result<Built, NodeError> {
    let mut registry = Registry::default();
    let listen = settings::addrs(&config.node.listen, "node.listen", source)?;
    let realms = settings::realms(config, source)?;
    let conn_manager = ConnManagerHandle::new(
        BasicConnMgr::new(settings::connmgr(config), Instant::now())?
            .with_metrics(ConnMgrMetrics::register(&mut registry)),
    );
    let relay_metrics = RelayMetrics::register(&mut registry);
    let rpc_metrics = RpcMetrics::register(&mut registry);
    let pubsub_metrics = pubsub::GossipsubMetrics::register(&mut registry, PUBSUB_METRIC_TOPICS);
    let rpc_config = settings::rpc(config, source)?;
    let holepunch = if config.holepunch.enabled.unwrap_or(true) {
        Some((
            settings::connector(config)?,
            settings::nat_detector(config, source)?,
            HolepunchMetrics::register(&mut registry),
            ConnectorMetrics::register(&mut registry),
        ))
    } else {
        None
    };
    let nat_server = settings::nat_server(config, source)?;
    let nat_metrics = NatProbeMetrics::register(&mut registry);
    let quic_config = settings::quic(config);
    let mut builder = SwarmBuilder::new(key)
        .quic(settings::quic(config))
        .config(|_| settings::swarm(config))
        .conn_manager(&conn_manager)
        .relay_client_config(settings::relay_client(config));
    for addr in listen {
        builder = builder.listen_on(addr);
    }
    let mut swarm = builder.try_build(|ctx| {
        let ping = ping::Behaviour::new(settings::ping(config));
        Ok::<_, BehaviourError>(Node {
            relay_client: ctx.relay_client(),
            relay_server: Toggle::from(if config.relay_server.enabled.unwrap_or(true) {
                Some(
                    relay::Behaviour::with_config(
                        ctx.key().clone(),
                        settings::relay_server(config),
                        settings::relay_server_io(config),
                    )
                    .map_err(|e| BehaviourError(format!("relay_server: {e}")))?
                    .with_metrics(relay_metrics),
                )
            } else {
                None
            }),
            rpc: rpc::Behaviour::new(
                kad::Behaviour::new(ctx.peer_id(), settings::kad(config)),
                rpc_config,
            )
            .with_metrics(rpc_metrics)
            .with_rtt_table(ping.rtt_table()),
            ping,
            identify: identify::Behaviour::new(settings::identify(config, ctx.public())),
            holepunch: Toggle::from(holepunch.map(|(connector, detector, dcutr_m, conn_m)| {
                let connector = holepunch::Connector::new(connector, ctx.quic_sockets())
                    .with_metrics(conn_m)
                    .with_dcutr(|d| d.with_metrics(dcutr_m));
                let detector =
                    detector.map(|d| nat::NatDetector::new(d).with_metrics(nat_metrics.clone()));
                holepunch::NatTraversal::new(connector, detector)
            })),
            nat_server: Toggle::from(match nat_server {
                Some(s) => Some(probe_server(s, &quic_config, nat_metrics.clone())?),
                None => None,
            }),
            pubsub: Toggle::from(if config.pubsub.enabled.unwrap_or(true) {
                let mut p = pubsub::Behaviour::new(ctx.key(), settings::pubsub(config))
                    .map_err(|e| BehaviourError(format!("pubsub: {e}")))?;
                p.set_metrics(pubsub_metrics);
                for topic in &config.pubsub.topics {
                    p.subscribe(topic.as_str());
                }
                Some(p)
            } else {
                None
            }),
            swim: Toggle::from(if realms.is_empty() {
                None
            } else {
                Some(
                    swim::Behaviour::new(ctx.key(), realms, settings::swim(config))
                        .map_err(|e| BehaviourError(format!("swim: {e}")))?,
                )
            }),
        })
    })?;
    swarm.register_metrics(&mut registry);
    Ok(Built {
        swarm,
        registry,
        conn_manager,
    })
}

/// The probe server, with a QUIC transport of its own (own identity) listening on each
/// dial-back address.
fn probe_server(
    s: settings::NatServerSettings,
    quic: &meshwire::transport::quic::QuicConfig,
    metrics: NatProbeMetrics,
) -> Result<nat::NatProbeServer, BehaviourError> {
    let mut server = nat::NatProbeServer::new(s.config).with_metrics(metrics);
    for (from, addr) in [
        (nat::wire::DialBackFrom::OtherPort, s.other_port),
        (nat::wire::DialBackFrom::OtherAddress, s.other_ip),
    ] {
        let Some(addr) = addr else { continue };
        let mut t = QuicTransport::new(Keypair::generate(), quic.clone())
            .map_err(|e| BehaviourError(format!("nat_server: dial-back transport: {e}")))?;
        t.listen_on(addr.clone())
            .map_err(|e| BehaviourError(format!("nat_server: dial-back address {addr}: {e}")))?;
        server = server.with_dial_back(from, t);
    }
    Ok(server)
}

/// A behaviour's settings were refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BehaviourError(String);
