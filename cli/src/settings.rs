//! From the checked [`Config`] to the library's settings: each key set in the file replaces
//! the library default it names; absent keys keep the defaults.

use meshwire::connmgr;
use meshwire::core::PublicKey;
use meshwire::prelude::*;
use meshwire::relay::server::RateLimit;
use meshwire::relay::{client, BehaviourConfig, ServerConfig};
use meshwire::swarm::rcmgr::Limits;
use meshwire::swarm::StreamRate;
use meshwire::transport::quic::QuicConfig;
use meshwire::transport::split_peer_id;

use crate::config::{Config, ConfigError, Dur, KadMode, RateSection, Source};

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

/// A stream rate from its keys: a rate of 0 turns the limit off; a burst alone changes the
/// default's burst.
fn rate(
    default: Option<StreamRate>,
    per_second: Option<u32>,
    burst: Option<u32>,
) -> Option<StreamRate> {
    let mut r = match per_second {
        Some(0) => return None,
        Some(per_second) => Some(StreamRate {
            per_second,
            burst: default.map_or(per_second, |d| d.burst),
        }),
        None => default,
    };
    if let (Some(b), Some(r)) = (burst, r.as_mut()) {
        r.burst = b.max(1);
    }
    r
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
    c.inbound_stream_rate = rate(
        c.inbound_stream_rate,
        s.inbound_stream_rate,
        s.inbound_stream_burst,
    );
    c.inbound_stream_rate_total = rate(
        c.inbound_stream_rate_total,
        s.inbound_stream_rate_total,
        s.inbound_stream_burst_total,
    );
    if let Some(Dur(d)) = s.idle_connection_timeout {
        c.idle_connection_timeout = Some(d);
    }
    let r = &config.resources;
    if let Some(m) = r.memory {
        c.resource_limits = Limits::for_memory(m);
    }
    let l = &mut c.resource_limits;
    for (scope, section) in [
        (&mut l.system, &r.system),
        (&mut l.transient, &r.transient),
        (&mut l.transient_peer, &r.transient_peer),
        (&mut l.peer, &r.peer),
        (&mut l.protocol, &r.protocol),
        (&mut l.protocol_peer, &r.protocol_peer),
        (&mut l.service, &r.service),
    ] {
        apply!(
            scope,
            section,
            [
                conns_inbound,
                conns_outbound,
                conns,
                streams_inbound,
                streams_outbound,
                streams,
                memory,
            ]
        );
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
    if let Some(b) = s.datagram_receive_buffer {
        c.datagram_receive_buffer = Some(b);
    }
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
    let agent = config
        .node
        .agent_version
        .clone()
        .unwrap_or_else(|| format!("meshwire-cli/{}", env!("CARGO_PKG_VERSION")));
    let mut c = identify::Config::new("/meshwire/1.0.0", key).with_agent_version(agent);
    let s = &config.identify;
    apply!(
        c,
        s,
        [
            max_message_size,
            max_listen_addrs,
            max_protocols,
            max_exchanges,
            cache_size,
            max_queued,
            push_listen_addr_updates,
        ]
    );
    apply!(dur c, s, [interval, timeout, min_push_interval]);
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
            max_inbound_streams_per_peer,
            max_failures,
            lookup_retries,
            max_addrs_per_peer,
            caching,
            max_address_cache_peers,
            max_stream_tasks,
            max_queued_commands,
        ]
    );
    apply!(dur c, s, [request_timeout, query_timeout, inbound_timeout]);
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
            max_providers_per_key,
            max_addrs_per_provider,
        ]
    );
    apply!(dur c.store, s, [record_ttl, provider_ttl]);
    if let Some(Dur(d)) = s.publication_interval {
        c.store.publication_interval = Some(d);
    }
    if let Some(Dur(d)) = s.replication_interval {
        c.store.replication_interval = Some(d);
    }
    if let Some(Dur(d)) = s.provider_publication_interval {
        c.store.provider_publication_interval = Some(d);
    }
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
            leave_fanout,
            suspicion_max_timeout_mult,
            retransmit_mult,
            gossip_fresh_transmits,
            mtu,
            max_metadata_bytes,
            max_push_pull_members,
            max_push_pull_bytes,
            max_pending_relays,
            max_queued_outputs,
        ]
    );
    apply!(dur c.swim, s, [probe_interval, probe_timeout, push_pull_timeout, dead_retention]);
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
        [
            max_inbound_push_pulls,
            max_inbound_push_pulls_per_peer,
            max_queued_datagrams_per_peer,
            max_queued_peers,
            max_announced_addresses,
            max_inbound_push_pull_bytes,
            max_fallback_streams,
            max_inbound_fallback_streams,
            max_inbound_fallback_streams_per_peer,
            max_queued_fallback_messages_per_peer,
        ]
    );
    apply!(dur c, s, [
        queued_datagram_ttl, traffic_keep_alive, dial_backoff, dial_backoff_max,
        fallback_stream_idle_timeout, fallback_stream_write_timeout,
    ]);
    c
}

/// `[relay_server]`: what the server admits (whether it runs at all is `enabled`, read by
/// [`crate::node::build`]).
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
            max_circuits_per_peer,
            rate_limiter_max_tracked,
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
    let rate = |r: RateSection| {
        Some(RateLimit {
            limit: r.limit,
            interval: r.interval.0,
        })
    };
    if let Some(r) = s.reservation_rate_per_peer {
        c.reservation_rate_per_peer = rate(r);
    }
    if let Some(r) = s.reservation_rate_per_ip {
        c.reservation_rate_per_ip = rate(r);
    }
    if let Some(r) = s.circuit_rate_per_peer {
        c.circuit_rate_per_peer = rate(r);
    }
    if let Some(r) = s.circuit_rate_per_ip {
        c.circuit_rate_per_ip = rate(r);
    }
    c
}

/// `[relay_server]`: the server's stream handling.
pub fn relay_server_io(config: &Config) -> BehaviourConfig {
    let s = &config.relay_server;
    let mut c = BehaviourConfig::default();
    apply!(
        c,
        s,
        [max_exchanges, max_exchanges_per_peer, circuit_buffer]
    );
    apply!(dur c, s, [exchange_timeout]);
    c
}

/// `[relay_client]`.
pub fn relay_client(config: &Config) -> client::Config {
    let s = &config.relay_client;
    let mut c = client::Config::default();
    apply!(
        c,
        s,
        [
            max_listeners,
            max_pending_dials,
            max_pending_incoming,
            max_stop_streams
        ]
    );
    apply!(dur c, s, [exchange_timeout, renew_margin]);
    c
}

/// `[rpc]`.
///
/// # Errors
///
/// [`ConfigError::Value`] for an invalid `rpc.realm`.
pub fn rpc(config: &Config, source: &Source) -> Result<meshwire::rpc::Config, ConfigError> {
    let s = &config.rpc;
    let mut c = meshwire::rpc::Config::default();
    if let Some(r) = &s.realm {
        c.engine.realm = meshwire::rpc::Realm::new(r).map_err(|e| ConfigError::Value {
            at: source.locate(r),
            key: "rpc.realm".into(),
            message: format!("{r:?}: {e}"),
        })?;
    }
    apply!(
        c.engine,
        s,
        [
            max_cached_names,
            max_providers_per_name,
            cache_max_entries,
            cache_max_bytes,
            max_calls,
            max_outstanding_per_provider,
            max_payload,
            max_interests,
            max_events,
        ]
    );
    apply!(dur c.engine, s, [provider_ttl, lookup_timeout, backoff, cache_ttl, interest_interval]);
    apply!(
        c,
        s,
        [
            max_request_bytes,
            max_response_bytes,
            max_handlers,
            max_handlers_per_peer
        ]
    );
    apply!(dur c, s, [max_call_time]);
    Ok(c)
}

/// `[pubsub]` (whether it runs is `enabled`, its topics `topics`: both read by
/// [`crate::node::build`]).
pub fn pubsub(config: &Config) -> meshwire::pubsub::Config {
    let s = &config.pubsub;
    let mut c = meshwire::pubsub::Config::default();
    apply!(
        c,
        s,
        [
            mesh_n,
            mesh_n_low,
            mesh_n_high,
            mesh_outbound_min,
            gossip_lazy,
            gossip_factor,
            history_length,
            history_gossip,
            max_seen_messages,
            max_cached_messages,
            max_transmit_size,
            max_ihave_length,
            max_ihave_messages,
            gossip_retransmission,
            backoff_slack,
            do_px,
            prune_peers,
            flood_publish,
            max_queued_control,
            max_queued_messages,
            max_messages_per_rpc,
            max_topics_per_peer,
            writer_queue,
            max_inbound_streams,
            max_inbound_streams_per_peer,
            max_outbound_streams,
            max_pending_commands,
        ]
    );
    apply!(dur c, s, [
        heartbeat_interval, heartbeat_initial_delay, fanout_ttl, duplicate_cache_time,
        prune_backoff, unsubscribe_backoff, iwant_followup_time, graft_flood_threshold,
        write_timeout, idle_timeout, reopen_delay,
    ]);
    c
}

/// `[holepunch]` (whether it runs is `enabled`, read by [`crate::node::build`]).
///
/// # Errors
///
/// [`ConfigError::Value`] for an empty `timings` or `port_windows`, or `max_attempts = 0`.
pub fn holepunch(config: &Config) -> Result<meshwire::holepunch::Config, ConfigError> {
    use crate::config::DialTimingName;
    use meshwire::holepunch::DialTiming;
    let s = &config.holepunch;
    let mut c = meshwire::holepunch::Config::default();
    apply!(c, s, [max_attempts, max_dial_addrs, max_sessions]);
    apply!(dur c, s, [exchange_timeout, attempt_timeout, responder_wait]);
    let refuse = |key: &str, message: &str| ConfigError::Value {
        at: String::new(),
        key: format!("holepunch.{key}"),
        message: message.into(),
    };
    if c.max_attempts == 0 {
        return Err(refuse("max_attempts", "must be at least 1"));
    }
    if let Some(t) = &s.timings {
        if t.is_empty() {
            return Err(refuse("timings", "needs at least one entry"));
        }
        c.timings = t
            .iter()
            .map(|t| match t {
                DialTimingName::HalfRtt => DialTiming::HalfRtt,
                DialTimingName::FullRtt => DialTiming::FullRtt,
                DialTimingName::Immediate => DialTiming::Immediate,
            })
            .collect();
    }
    if let Some(w) = &s.port_windows {
        if w.is_empty() {
            return Err(refuse("port_windows", "needs at least one entry"));
        }
        c.port_windows = w.clone();
    }
    Ok(c)
}

/// `[holepunch]`'s connector keys, around DCUtR's settings ([`holepunch`]).
///
/// # Errors
///
/// As [`holepunch`]; [`ConfigError::Value`] for spray numbers the spray refuses (zero, or
/// above its maxima).
pub fn connector(config: &Config) -> Result<meshwire::holepunch::ConnectorConfig, ConfigError> {
    use meshwire::holepunch::connect::spray::{MAX_PROBES, MAX_RATE, MAX_SOCKETS, MAX_WINDOW};
    let s = &config.holepunch;
    let mut c = meshwire::holepunch::ConnectorConfig {
        holepunch: holepunch(config)?,
        ..Default::default()
    };
    apply!(
        c,
        s,
        [
            trust_hello_addrs,
            max_spray_sockets_total,
            max_spray_packets_per_minute
        ]
    );
    apply!(dur c, s, [hello_timeout, dcutr_timeout]);
    if let Some(n) = s.connector_sessions {
        c.max_sessions = n;
    }
    let refuse = |key: &str, message: String| ConfigError::Value {
        at: String::new(),
        key: format!("holepunch.{key}"),
        message,
    };
    let check = |key: &str, v: u64, max: u64| {
        if v == 0 || v > max {
            Err(refuse(key, format!("must be 1 to {max}")))
        } else {
            Ok(())
        }
    };
    if let Some(v) = s.spray_sockets {
        check("spray_sockets", v.into(), MAX_SOCKETS.into())?;
        c.spray.sockets = v;
    }
    if let Some(v) = s.spray_probes {
        check("spray_probes", v.into(), MAX_PROBES.into())?;
        c.spray.probes = v;
    }
    if let Some(v) = s.spray_rate {
        check("spray_rate", v.into(), MAX_RATE.into())?;
        c.spray.rate = v;
    }
    if let Some(Dur(v)) = s.spray_window {
        if v.is_zero() || v > MAX_WINDOW {
            return Err(refuse(
                "spray_window",
                format!("must be above 0 and at most {MAX_WINDOW:?}"),
            ));
        }
        c.spray.window = v;
    }
    Ok(c)
}

/// `[nat]`: the detector's settings; `None` without observers (no detection).
///
/// # Errors
///
/// [`ConfigError::Value`] for an observer that is not `<address>/p2p/<peer id>`.
pub fn nat_detector(
    config: &Config,
    source: &Source,
) -> Result<Option<meshwire::nat::DetectorConfig>, ConfigError> {
    let s = &config.nat;
    if s.observers.is_empty() {
        return Ok(None);
    }
    let observers = peers(&s.observers, "nat.observers", source)?
        .into_iter()
        .map(|(peer, addr)| {
            let addr = split_peer_id(&addr, Some(peer)).map_or(addr, |(a, _)| a);
            meshwire::nat::Observer { peer, addr }
        })
        .collect();
    let mut c = meshwire::nat::DetectorConfig {
        observers,
        ..Default::default()
    };
    apply!(dur c, s, [request_timeout, retry_after]);
    apply!(dur c.cache, s, [refresh_after, max_age]);
    Ok(Some(c))
}

/// `[nat_server]`: the probe server's limits and its dial-back addresses (other port, other
/// IP); `None` when it is off (the default).
///
/// # Errors
///
/// [`ConfigError::Value`] for a dial-back address that is not a multiaddr.
pub fn nat_server(
    config: &Config,
    source: &Source,
) -> Result<Option<NatServerSettings>, ConfigError> {
    let s = &config.nat_server;
    if !s.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let mut c = meshwire::nat::ServerConfig::default();
    apply!(
        c,
        s,
        [requests_per_peer, dial_backs_per_second, max_concurrent]
    );
    let one = |v: &Option<String>, key: &str| -> Result<Option<Multiaddr>, ConfigError> {
        v.as_ref()
            .map(|v| addrs(std::slice::from_ref(v), key, source).map(|mut a| a.remove(0)))
            .transpose()
    };
    Ok(Some(NatServerSettings {
        config: c,
        other_port: one(&s.dial_back_other_port, "nat_server.dial_back_other_port")?,
        other_ip: one(&s.dial_back_other_ip, "nat_server.dial_back_other_ip")?,
    }))
}

/// What [`nat_server`] reads.
#[derive(Clone, Debug)]
pub struct NatServerSettings {
    /// The server's limits.
    pub config: meshwire::nat::ServerConfig,
    /// Where the dial-backs "from another port" leave from (same IP as a listen address).
    pub other_port: Option<Multiaddr>,
    /// Where the dial-backs "from another IP" leave from.
    pub other_ip: Option<Multiaddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        let source = Source {
            path: "t.toml".into(),
            text: text.into(),
        };
        crate::config::finish(crate::config::parse(&source).unwrap()).unwrap()
    }

    #[test]
    fn set_keys_replace_defaults_and_absent_keys_keep_them() {
        let c = config(
            r#"
[connmgr]
low_water = 10
high_water = 20
grace_period = "5s"
flood_rule = false
[swarm]
max_established_per_peer = 2
idle_connection_timeout = "1m"
[kad]
mode = "client"
k = 30
record_ttl = "1h"
caching = false
publication_interval = "2h"
max_addrs_per_provider = 3
[swim]
probe_interval = "250ms"
max_fallback_streams = 7
dial_backoff = "3s"
mtu = 900
[relay_server]
max_reservations = 3
circuit_rate_per_ip = { limit = 5, interval = "10s" }
circuit_buffer = 4096
[relay_client]
renew_margin = "1m"
max_stop_streams = 3
[quic]
datagram_receive_buffer = 1000
max_idle_timeout = "3s"
[identify]
cache_size = 7
push_listen_addr_updates = true
min_push_interval = "2s"
[ping]
interval = "1s"
[pubsub]
mesh_n = 7
heartbeat_initial_delay = "100ms"
writer_queue = 3
[holepunch]
max_attempts = 2
attempt_timeout = "4s"
timings = ["immediate", "half_rtt"]
port_windows = [0, 3]
[rpc]
realm = "blue"
lookup_timeout = "3s"
max_handlers = 9
max_call_time = "5s"
[resources]
memory = 268435456
[resources.peer]
streams = 99
"#,
        );
        let cm = connmgr(&c);
        assert_eq!((cm.low_water, cm.high_water), (10, 20));
        assert_eq!(cm.grace_period, Duration::from_secs(5));
        assert_eq!(cm.flood_headroom, None);
        assert_eq!(cm.silence_period, connmgr::Config::default().silence_period);
        let s = swarm(&c);
        assert_eq!(s.max_established_per_peer, 2);
        assert_eq!(s.idle_connection_timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.resource_limits.peer.streams, 99);
        assert_eq!(s.resource_limits.system.memory, 268_435_456);
        let k = kad(&c);
        assert_eq!((k.k, k.mode), (30, kad::Mode::Client));
        assert_eq!(k.store.record_ttl, Duration::from_secs(3600));
        assert_eq!(k.alpha, kad::Config::new().alpha);
        let w = swim(&c);
        assert_eq!(w.swim.probe_interval, Duration::from_millis(250));
        assert_eq!(w.max_fallback_streams, 7);
        let r = relay_server(&c);
        assert_eq!(r.max_reservations, 3);
        assert_eq!(
            r.circuit_rate_per_ip,
            Some(RateLimit {
                limit: 5,
                interval: Duration::from_secs(10)
            })
        );
        assert_eq!(relay_server_io(&c).circuit_buffer, 4096);
        assert_eq!(relay_client(&c).renew_margin, Duration::from_secs(60));
        assert_eq!(relay_client(&c).max_stop_streams, 3);
        let q = quic(&c);
        assert_eq!(q.datagram_receive_buffer, Some(1000));
        assert_eq!(q.max_idle_timeout, Duration::from_secs(3));
        let key = meshwire::core::Keypair::generate().public();
        let i = identify(&c, key);
        assert_eq!(i.cache_size, 7);
        assert!(i.push_listen_addr_updates);
        assert_eq!(i.min_push_interval, Duration::from_secs(2));
        assert_eq!(ping(&c).interval, Duration::from_secs(1));
        assert!(!k.caching);
        assert_eq!(
            k.store.publication_interval,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(k.store.max_addrs_per_provider, 3);
        assert_eq!(w.dial_backoff, Duration::from_secs(3));
        assert_eq!(w.swim.mtu, 900);
        let r = rpc(&c, &Source::default()).unwrap();
        assert_eq!(r.engine.realm.as_str(), "blue");
        assert_eq!(r.engine.lookup_timeout, Duration::from_secs(3));
        assert_eq!(
            (r.max_handlers, r.max_call_time),
            (9, Duration::from_secs(5))
        );
        let d = meshwire::rpc::Config::default();
        assert_eq!(r.max_handlers_per_peer, d.max_handlers_per_peer);
        assert_eq!(r.engine.cache_ttl, d.engine.cache_ttl);
        let p = pubsub(&c);
        assert_eq!((p.mesh_n, p.writer_queue), (7, 3));
        assert_eq!(p.heartbeat_initial_delay, Duration::from_millis(100));
        let d = meshwire::pubsub::Config::default();
        assert_eq!(
            (p.mesh_n_high, p.heartbeat_interval),
            (d.mesh_n_high, d.heartbeat_interval)
        );
        let h = holepunch(&c).unwrap();
        assert_eq!(
            (h.max_attempts, h.port_windows.as_slice()),
            (2, &[0, 3][..])
        );
        assert_eq!(h.attempt_timeout, Duration::from_secs(4));
        use meshwire::holepunch::DialTiming;
        assert_eq!(h.timings, [DialTiming::Immediate, DialTiming::HalfRtt]);
        let d = meshwire::holepunch::Config::default();
        assert_eq!(
            (h.max_sessions, h.exchange_timeout),
            (d.max_sessions, d.exchange_timeout)
        );
    }

    #[test]
    fn holepunch_refuses_empty_lists_and_zero_attempts() {
        for (text, key) in [
            ("[holepunch]\ntimings = []\n", "holepunch.timings"),
            ("[holepunch]\nport_windows = []\n", "holepunch.port_windows"),
            ("[holepunch]\nmax_attempts = 0\n", "holepunch.max_attempts"),
        ] {
            let err = holepunch(&config(text)).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
        let bad = crate::config::parse(&Source {
            path: "t.toml".into(),
            text: "[holepunch]\ntimings = [\"soon\"]\n".into(),
        })
        .and_then(crate::config::finish);
        assert!(bad.unwrap_err().to_string().contains("half_rtt"));
    }

    #[test]
    fn connector_keys_and_spray_limits() {
        let c = connector(&config(
            "[holepunch]\nmax_attempts = 2\nspray_sockets = 64\nspray_window = \"3s\"\n\
             trust_hello_addrs = true\nconnector_sessions = 5\n",
        ))
        .unwrap();
        assert_eq!(
            c.holepunch.max_attempts, 2,
            "DCUtR's keys reach the connector"
        );
        assert_eq!(
            (c.spray.sockets, c.spray.window),
            (64, Duration::from_secs(3))
        );
        assert!(c.trust_hello_addrs);
        assert_eq!(c.max_sessions, 5);
        let d = connector(&config("")).unwrap();
        assert!(!d.trust_hello_addrs, "spray targets are checked by default");
        for (text, key) in [
            (
                "[holepunch]\nspray_sockets = 0\n",
                "holepunch.spray_sockets",
            ),
            (
                "[holepunch]\nspray_probes = 9000\n",
                "holepunch.spray_probes",
            ),
            (
                "[holepunch]\nspray_window = \"1h\"\n",
                "holepunch.spray_window",
            ),
        ] {
            let err = connector(&config(text)).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn nat_observers_and_server() {
        let peer = meshwire::core::Keypair::generate().peer_id();
        let text = format!(
            "[nat]\nobservers = [\"/ip4/198.51.100.10/udp/4001/quic-v1/p2p/{peer}\", \
             \"/ip4/203.0.113.10/udp/4001/quic-v1/p2p/{peer}\"]\nretry_after = \"5s\"\n\
             refresh_after = \"1m\"\n[nat_server]\nenabled = true\n\
             dial_back_other_ip = \"/ip4/203.0.113.10/udp/4003/quic-v1\"\n\
             dial_backs_per_second = 3\n"
        );
        let c = config(&text);
        let d = nat_detector(&c, &Source::default()).unwrap().unwrap();
        assert_eq!(d.observers.len(), 2);
        assert_eq!(d.observers[0].peer, peer);
        assert_eq!(
            d.observers[0].addr.to_string(),
            "/ip4/198.51.100.10/udp/4001/quic-v1",
            "the observer's address without its /p2p"
        );
        assert_eq!(d.retry_after, Duration::from_secs(5));
        assert_eq!(d.cache.refresh_after, Duration::from_secs(60));
        let s = nat_server(&c, &Source::default()).unwrap().unwrap();
        assert_eq!(s.config.dial_backs_per_second, 3);
        assert_eq!(s.other_port, None);
        assert_eq!(
            s.other_ip.map(|a| a.to_string()).as_deref(),
            Some("/ip4/203.0.113.10/udp/4003/quic-v1")
        );
        // Off by default, and no observers: no detector.
        assert!(nat_server(&config(""), &Source::default())
            .unwrap()
            .is_none());
        assert!(nat_detector(&config(""), &Source::default())
            .unwrap()
            .is_none());
        let bad = config("[nat]\nobservers = [\"/ip4/198.51.100.10/udp/4001/quic-v1\"]\n");
        let err = nat_detector(&bad, &Source::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nat.observers") && err.contains("/p2p"),
            "{err}"
        );
    }
}
