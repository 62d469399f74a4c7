//! From the checked [`Config`] to the library's settings: each key set in the file replaces
//! the library default it names; absent keys keep the defaults.

use meshwire::connmgr;
use meshwire::core::PublicKey;
use meshwire::prelude::*;
use meshwire::relay::{client, ServerConfig};
use meshwire::transport::quic::QuicConfig;
use meshwire::transport::split_peer_id;

use crate::config::{Config, ConfigError, Dur, KadMode, Source};

/// Copies each `Some` field of a section onto the target's field of the same name.
macro_rules! apply {
    ($target:expr, $section:expr, [$($field:ident),* $(,)?]) => {
        $(if let Some(v) = $section.$field { $target.$field = v; })*
    };
    (dur $target:expr, $section:expr, [$($field:ident),* $(,)?]) => {
        $(if let Some(Dur(v)) = $section.$field { $target.$field = v; })*
    };
}

/// The multiaddrs of `values`, each error naming `key` (and its line in the file).
///
/// # Errors
///
/// [`ConfigError::Value`] for the first value that is not a multiaddr.
pub fn addrs(values: &[String], key: &str, source: &Source) -> Result<Vec<Multiaddr>, ConfigError> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>().map_err(|e| ConfigError::Value {
                at: source.locate(v),
                key: key.to_string(),
                message: format!("{v:?} is not a multiaddr ({e}); expected e.g. \"/ip4/127.0.0.1/udp/4001/quic-v1\""),
            })
        })
        .collect()
}

/// The peers of `values` (`<address>/p2p/<peer id>`), for bootstrap and SWIM seeds.
///
/// # Errors
///
/// [`ConfigError::Value`] for a value that is not a multiaddr ending in `/p2p/<peer id>`.
pub fn peers(
    values: &[String],
    key: &str,
    source: &Source,
) -> Result<Vec<(PeerId, Multiaddr)>, ConfigError> {
    addrs(values, key, source)?
        .into_iter()
        .zip(values)
        .map(|(addr, v)| match split_peer_id(&addr, None) {
            Ok((_, Some(peer))) => Ok((peer, addr)),
            _ => Err(ConfigError::Value {
                at: source.locate(v),
                key: key.to_string(),
                message: format!(
                    "{v:?} names no peer; expected an address ending in /p2p/<peer id>"
                ),
            }),
        })
        .collect()
}

/// The SWIM realms of `node.realms`.
///
/// # Errors
///
/// [`ConfigError::Value`] for an invalid realm name.
pub fn realms(config: &Config, source: &Source) -> Result<Vec<swim::Realm>, ConfigError> {
    config
        .node
        .realms
        .iter()
        .map(|r| {
            r.parse::<swim::Realm>().map_err(|e| ConfigError::Value {
                at: source.locate(r),
                key: "node.realms".into(),
                message: format!("{r:?}: {e}"),
            })
        })
        .collect()
}

/// `[swarm]`.
pub fn swarm(config: &Config) -> SwarmConfig {
    let s = &config.swarm;
    let mut c = SwarmConfig::default();
    apply!(
        c,
        s,
        [
            max_established_total,
            max_established_per_peer,
            max_established_incoming,
            max_established_outgoing,
            max_pending_incoming,
            max_pending_outgoing,
            max_inbound_streams_per_connection,
            max_pending_stream_requests,
            max_pending_stream_requests_per_peer,
            dial_concurrency,
            max_addresses_per_peer,
            max_address_book_peers,
        ]
    );
    apply!(dur c, s, [dial_timeout, negotiation_timeout]);
    if let Some(Dur(d)) = s.idle_connection_timeout {
        c.idle_connection_timeout = Some(d);
    }
    c
}

/// `[quic]`.
pub fn quic(config: &Config) -> QuicConfig {
    let s = &config.quic;
    let mut c = QuicConfig::default();
    apply!(
        c,
        s,
        [
            max_concurrent_streams,
            stream_receive_window,
            receive_window,
            send_window,
            max_pending_incoming
        ]
    );
    apply!(dur c, s, [handshake_timeout, max_idle_timeout, keep_alive_interval]);
    c
}

/// `[connmgr]`.
pub fn connmgr(config: &Config) -> connmgr::Config {
    let s = &config.connmgr;
    let mut c = connmgr::Config::default();
    apply!(c, s, [low_water, high_water]);
    apply!(dur c, s, [grace_period, silence_period]);
    if let Some(h) = s.flood_headroom {
        c.flood_headroom = Some(h);
    }
    if s.flood_rule == Some(false) {
        c.flood_headroom = None;
    }
    c
}

/// `[ping]`.
pub fn ping(config: &Config) -> ping::Config {
    let mut c = ping::Config::new();
    apply!(dur c, config.ping, [interval, timeout, echo_timeout]);
    c
}

/// `[identify]` and `node.agent_version`.
pub fn identify(config: &Config, key: PublicKey) -> identify::Config {
    let mut c = identify::Config::new("/meshwire/1.0.0", key).with_agent_version(
        config
            .node
            .agent_version
            .clone()
            .unwrap_or_else(|| format!("meshwire-cli/{}", env!("CARGO_PKG_VERSION"))),
    );
    let s = &config.identify;
    apply!(
        c,
        s,
        [
            max_message_size,
            max_listen_addrs,
            max_protocols,
            max_exchanges
        ]
    );
    apply!(dur c, s, [interval, timeout]);
    c
}

/// `[kad]`.
pub fn kad(config: &Config) -> kad::Config {
    let s = &config.kad;
    let mut c = kad::Config::new();
    apply!(
        c,
        s,
        [
            k,
            alpha,
            max_message_size,
            max_inbound_streams,
            max_inbound_streams_per_peer
        ]
    );
    apply!(dur c, s, [request_timeout, query_timeout]);
    if let Some(Dur(d)) = s.bootstrap_interval {
        c.bootstrap_interval = Some(d);
    }
    if let Some(mode) = s.mode {
        c.mode = match mode {
            KadMode::Server => kad::Mode::Server,
            KadMode::Client => kad::Mode::Client,
        };
    }
    apply!(
        c.store,
        s,
        [
            max_records,
            max_value_bytes,
            max_provider_keys,
            max_providers_per_key
        ]
    );
    apply!(dur c.store, s, [record_ttl, provider_ttl]);
    c
}

/// `[swim]`.
pub fn swim(config: &Config) -> swim::Config {
    let s = &config.swim;
    let mut c = swim::Config::default();
    apply!(
        c.swim,
        s,
        [
            indirect_checks,
            suspicion_mult,
            gossip_nodes,
            max_members,
            leave_fanout
        ]
    );
    apply!(dur c.swim, s, [probe_interval, probe_timeout]);
    if let Some(Dur(d)) = s.gossip_interval {
        c.swim.gossip_interval = Some(d);
    }
    if let Some(Dur(d)) = s.push_pull_interval {
        c.swim.push_pull_interval = Some(d);
    }
    if let Some(Dur(d)) = s.rejoin_interval {
        c.rejoin_interval = Some(d);
    }
    apply!(
        c,
        s,
        [max_inbound_push_pulls, max_inbound_push_pulls_per_peer]
    );
    c
}

/// `[relay_server]` (whether it runs at all is `enabled`, read by [`crate::node::build`]).
pub fn relay_server(config: &Config) -> ServerConfig {
    let s = &config.relay_server;
    let mut c = ServerConfig::default();
    apply!(
        c,
        s,
        [
            max_reservations,
            max_reservations_per_peer,
            max_circuits,
            max_circuits_per_peer
        ]
    );
    apply!(dur c, s, [reservation_duration]);
    if let Some(n) = s.max_reservations_per_ip {
        c.max_reservations_per_ip = Some(n);
    }
    if let Some(Dur(d)) = s.max_circuit_duration {
        c.max_circuit_duration = Some(d);
    }
    if let Some(b) = s.max_circuit_bytes {
        c.max_circuit_bytes = Some(b);
    }
    c
}

/// `[relay_client]`.
pub fn relay_client(config: &Config) -> client::Config {
    let s = &config.relay_client;
    let mut c = client::Config::default();
    apply!(c, s, [max_listeners, max_pending_dials]);
    apply!(dur c, s, [exchange_timeout]);
    c
}
