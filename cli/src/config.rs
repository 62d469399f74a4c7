//! The node's configuration: a TOML file (every key documented in `cli/meshwire.example.toml`),
//! overridden by environment variables `MESHWIRE__<SECTION>__<KEY>`, then by `--set
//! section.key=value`, then by the dedicated flags (`--key`, `--listen`, ...).
//!
//! Every section is optional and every key in it too: an absent key keeps the library's
//! default (documented next to the key in the example file). Unknown keys, wrong types and
//! bad values are refused with one line naming the file, line, key and what is accepted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// Prefix of the environment variables that override config keys:
/// `MESHWIRE__KAD__K=30` sets `kad.k`.
pub const ENV_PREFIX: &str = "MESHWIRE__";

/// Why the configuration was refused. Each displays as one line.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}:{column}: {key}{message}")]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `section.key: ` when it could be told, else empty.
        key: String,
        /// The parser's message (names the accepted keys or the expected type).
        message: String,
    },
    /// An override (`--set` or `MESHWIRE__…`) is malformed or has a bad value.
    #[error("{origin}: {message}")]
    Override {
        /// `--set kad.k=x` or `MESHWIRE__KAD__K`.
        origin: String,
        /// Why.
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{at}{key}: {message}")]
    Value {
        /// `file:line: ` when the value was found in the file, else empty.
        at: String,
        /// `section.key`.
        key: String,
        /// Why, with what is accepted.
        message: String,
    },
}

/// A duration written as a number and a unit: `250ms`, `30s`, `5m`, `2h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid duration {s:?}: expected a whole number followed by ms, s, m or h (e.g. \"30s\")")
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = s[..split].parse().map_err(|_| bad())?;
        let d = match &s[split..] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        Ok(Dur(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole file. See `cli/meshwire.example.toml` for every key and its default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Config {
    pub node: NodeSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub connmgr: ConnMgrSection,
    pub swarm: SwarmSection,
    pub quic: QuicSection,
    pub ping: PingSection,
    pub identify: IdentifySection,
    pub kad: KadSection,
    pub swim: SwimSection,
    pub relay_server: RelayServerSection,
    pub relay_client: RelayClientSection,
    pub rpc: RpcSection,
    pub pubsub: PubsubSection,
    pub holepunch: HolepunchSection,
    pub nat: NatSection,
    pub nat_server: NatServerSection,
    pub resources: ResourcesSection,
}

/// `[node]`: identity, addresses, peers and realms.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NodeSection {
    pub key: Option<PathBuf>,
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub realms: Vec<String>,
    pub relay_listen: Vec<String>,
    pub external_addresses: Vec<String>,
    pub agent_version: Option<String>,
    pub shutdown_grace: Option<Dur>,
}

/// `[metrics]`: the HTTP server of `/metrics` and the status page.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct MetricsSection {
    pub listen: Option<String>,
    pub refresh: Option<Dur>,
}

/// `[log]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LogSection {
    pub filter: Option<String>,
    pub format: Option<LogFormat>,
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[connmgr]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ConnMgrSection {
    pub low_water: Option<usize>,
    pub high_water: Option<usize>,
    pub grace_period: Option<Dur>,
    pub silence_period: Option<Dur>,
    pub flood_headroom: Option<usize>,
    pub flood_rule: Option<bool>,
}

/// `[swarm]`: connection and stream limits.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SwarmSection {
    pub max_established_total: Option<usize>,
    pub max_established_per_peer: Option<usize>,
    pub max_established_incoming: Option<usize>,
    pub max_established_outgoing: Option<usize>,
    pub max_pending_incoming: Option<usize>,
    pub max_pending_outgoing: Option<usize>,
    pub max_inbound_streams_per_connection: Option<usize>,
    pub inbound_stream_rate: Option<u32>,
    pub inbound_stream_burst: Option<u32>,
    pub inbound_stream_rate_total: Option<u32>,
    pub inbound_stream_burst_total: Option<u32>,
    pub max_pending_stream_requests: Option<usize>,
    pub max_pending_stream_requests_per_peer: Option<usize>,
    pub dial_timeout: Option<Dur>,
    pub dial_concurrency: Option<usize>,
    pub negotiation_timeout: Option<Dur>,
    pub idle_connection_timeout: Option<Dur>,
    pub max_addresses_per_peer: Option<usize>,
    pub max_address_book_peers: Option<usize>,
}

/// `[quic]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct QuicSection {
    pub handshake_timeout: Option<Dur>,
    pub max_idle_timeout: Option<Dur>,
    pub keep_alive_interval: Option<Dur>,
    pub max_concurrent_streams: Option<u32>,
    pub stream_receive_window: Option<u32>,
    pub receive_window: Option<u32>,
    pub send_window: Option<u64>,
    pub max_pending_incoming: Option<usize>,
    pub datagram_receive_buffer: Option<usize>,
}

/// `[ping]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PingSection {
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub echo_timeout: Option<Dur>,
}

/// `[identify]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct IdentifySection {
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub max_message_size: Option<usize>,
    pub max_listen_addrs: Option<usize>,
    pub max_protocols: Option<usize>,
    pub max_exchanges: Option<usize>,
    pub cache_size: Option<usize>,
    pub max_queued: Option<usize>,
    pub min_push_interval: Option<Dur>,
    pub push_listen_addr_updates: Option<bool>,
}

/// `kad.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum KadMode {
    Server,
    Client,
}

/// `[kad]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct KadSection {
    pub mode: Option<KadMode>,
    pub k: Option<usize>,
    pub alpha: Option<usize>,
    pub request_timeout: Option<Dur>,
    pub query_timeout: Option<Dur>,
    pub bootstrap_interval: Option<Dur>,
    pub max_message_size: Option<usize>,
    pub max_inbound_streams: Option<usize>,
    pub max_inbound_streams_per_peer: Option<usize>,
    pub max_records: Option<usize>,
    pub max_value_bytes: Option<usize>,
    pub record_ttl: Option<Dur>,
    pub max_provider_keys: Option<usize>,
    pub max_providers_per_key: Option<usize>,
    pub provider_ttl: Option<Dur>,
    pub max_failures: Option<u32>,
    pub lookup_retries: Option<u32>,
    pub max_addrs_per_peer: Option<usize>,
    pub caching: Option<bool>,
    pub inbound_timeout: Option<Dur>,
    pub max_address_cache_peers: Option<usize>,
    pub max_stream_tasks: Option<usize>,
    pub max_queued_commands: Option<usize>,
    pub publication_interval: Option<Dur>,
    pub replication_interval: Option<Dur>,
    pub max_addrs_per_provider: Option<usize>,
    pub provider_publication_interval: Option<Dur>,
}

/// `[swim]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SwimSection {
    pub probe_interval: Option<Dur>,
    pub probe_timeout: Option<Dur>,
    pub indirect_checks: Option<usize>,
    pub suspicion_mult: Option<u32>,
    pub gossip_interval: Option<Dur>,
    pub gossip_nodes: Option<usize>,
    pub push_pull_interval: Option<Dur>,
    pub max_members: Option<usize>,
    pub leave_fanout: Option<usize>,
    pub rejoin_interval: Option<Dur>,
    pub max_inbound_push_pulls: Option<usize>,
    pub max_inbound_push_pulls_per_peer: Option<usize>,
    pub suspicion_max_timeout_mult: Option<u32>,
    pub retransmit_mult: Option<u32>,
    pub gossip_fresh_transmits: Option<u32>,
    pub push_pull_timeout: Option<Dur>,
    pub dead_retention: Option<Dur>,
    pub mtu: Option<usize>,
    pub max_metadata_bytes: Option<usize>,
    pub max_push_pull_members: Option<usize>,
    pub max_push_pull_bytes: Option<usize>,
    pub max_pending_relays: Option<usize>,
    pub max_queued_outputs: Option<usize>,
    pub max_queued_datagrams_per_peer: Option<usize>,
    pub max_queued_peers: Option<usize>,
    pub queued_datagram_ttl: Option<Dur>,
    pub max_announced_addresses: Option<usize>,
    pub traffic_keep_alive: Option<Dur>,
    pub max_inbound_push_pull_bytes: Option<usize>,
    pub dial_backoff: Option<Dur>,
    pub dial_backoff_max: Option<Dur>,
    pub max_fallback_streams: Option<usize>,
    pub max_inbound_fallback_streams: Option<usize>,
    pub max_inbound_fallback_streams_per_peer: Option<usize>,
    pub max_queued_fallback_messages_per_peer: Option<usize>,
    pub fallback_stream_idle_timeout: Option<Dur>,
    pub fallback_stream_write_timeout: Option<Dur>,
}

/// `[relay_server]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RelayServerSection {
    pub enabled: Option<bool>,
    pub reservation_duration: Option<Dur>,
    pub max_reservations: Option<usize>,
    pub max_reservations_per_peer: Option<usize>,
    pub max_reservations_per_ip: Option<usize>,
    pub max_circuits: Option<usize>,
    pub max_circuits_per_peer: Option<usize>,
    pub max_circuit_duration: Option<Dur>,
    pub max_circuit_bytes: Option<u64>,
    pub reservation_rate_per_peer: Option<RateSection>,
    pub reservation_rate_per_ip: Option<RateSection>,
    pub circuit_rate_per_peer: Option<RateSection>,
    pub circuit_rate_per_ip: Option<RateSection>,
    pub rate_limiter_max_tracked: Option<usize>,
    pub exchange_timeout: Option<Dur>,
    pub max_exchanges: Option<usize>,
    pub max_exchanges_per_peer: Option<usize>,
    pub circuit_buffer: Option<usize>,
}

/// `[rpc]`: named procedures found through the DHT (`meshwire rpc`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RpcSection {
    pub realm: Option<String>,
    pub provider_ttl: Option<Dur>,
    pub max_cached_names: Option<usize>,
    pub max_providers_per_name: Option<usize>,
    pub lookup_timeout: Option<Dur>,
    pub backoff: Option<Dur>,
    pub cache_max_entries: Option<usize>,
    pub cache_max_bytes: Option<usize>,
    pub cache_ttl: Option<Dur>,
    pub max_calls: Option<usize>,
    pub max_outstanding_per_provider: Option<usize>,
    pub max_payload: Option<usize>,
    pub interest_interval: Option<Dur>,
    pub max_interests: Option<usize>,
    pub max_events: Option<usize>,
    pub max_request_bytes: Option<u64>,
    pub max_response_bytes: Option<u64>,
    pub max_handlers: Option<usize>,
    pub max_handlers_per_peer: Option<usize>,
    pub max_call_time: Option<Dur>,
}

/// `[pubsub]`: gossipsub v1.1 (`meshwire chat`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PubsubSection {
    pub enabled: Option<bool>,
    pub topics: Vec<String>,
    pub mesh_n: Option<usize>,
    pub mesh_n_low: Option<usize>,
    pub mesh_n_high: Option<usize>,
    pub mesh_outbound_min: Option<usize>,
    pub gossip_lazy: Option<usize>,
    pub gossip_factor: Option<f64>,
    pub heartbeat_interval: Option<Dur>,
    pub heartbeat_initial_delay: Option<Dur>,
    pub fanout_ttl: Option<Dur>,
    pub history_length: Option<usize>,
    pub history_gossip: Option<usize>,
    pub duplicate_cache_time: Option<Dur>,
    pub max_seen_messages: Option<usize>,
    pub max_cached_messages: Option<usize>,
    pub max_transmit_size: Option<usize>,
    pub max_ihave_length: Option<usize>,
    pub max_ihave_messages: Option<usize>,
    pub gossip_retransmission: Option<u32>,
    pub prune_backoff: Option<Dur>,
    pub unsubscribe_backoff: Option<Dur>,
    pub backoff_slack: Option<u32>,
    pub do_px: Option<bool>,
    pub prune_peers: Option<usize>,
    pub flood_publish: Option<bool>,
    pub max_queued_control: Option<usize>,
    pub max_queued_messages: Option<usize>,
    pub max_messages_per_rpc: Option<usize>,
    pub max_topics_per_peer: Option<usize>,
    pub iwant_followup_time: Option<Dur>,
    pub graft_flood_threshold: Option<Dur>,
    pub writer_queue: Option<usize>,
    pub write_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub reopen_delay: Option<Dur>,
    pub max_inbound_streams: Option<usize>,
    pub max_inbound_streams_per_peer: Option<usize>,
    pub max_outbound_streams: Option<usize>,
    pub max_pending_commands: Option<usize>,
}

/// `[holepunch]`: DCUtR, direct connections from relayed ones.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct HolepunchSection {
    pub enabled: Option<bool>,
    pub max_attempts: Option<u8>,
    pub exchange_timeout: Option<Dur>,
    pub attempt_timeout: Option<Dur>,
    pub responder_wait: Option<Dur>,
    pub timings: Option<Vec<DialTimingName>>,
    pub port_windows: Option<Vec<u16>>,
    pub max_dial_addrs: Option<usize>,
    pub max_sessions: Option<usize>,
    pub connector_sessions: Option<usize>,
    pub hello_timeout: Option<Dur>,
    pub dcutr_timeout: Option<Dur>,
    pub trust_hello_addrs: Option<bool>,
    pub spray_sockets: Option<u16>,
    pub spray_probes: Option<u16>,
    pub spray_rate: Option<u32>,
    pub spray_window: Option<Dur>,
    pub max_spray_sockets_total: Option<usize>,
    pub max_spray_packets_per_minute: Option<u32>,
}

/// `[nat]`: NAT type detection against probe servers (`/meshwire/natprobe/1.0.0`); its
/// profile is what the hole-punching connector chooses its method from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NatSection {
    pub observers: Vec<String>,
    pub request_timeout: Option<Dur>,
    pub retry_after: Option<Dur>,
    pub refresh_after: Option<Dur>,
    pub max_age: Option<Dur>,
    pub startup_wait: Option<Dur>,
}

/// `[nat_server]`: answer other nodes' NAT probes (a public node).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NatServerSection {
    pub enabled: Option<bool>,
    pub dial_back_other_port: Option<String>,
    pub dial_back_other_ip: Option<String>,
    pub requests_per_peer: Option<u32>,
    pub dial_backs_per_second: Option<u32>,
    pub max_concurrent: Option<usize>,
}

/// An entry of `holepunch.timings`: when the initiator dials after `SYNC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialTimingName {
    /// Half the measured round trip (the spec's timing).
    HalfRtt,
    /// A full round trip.
    FullRtt,
    /// At once.
    Immediate,
}

/// `[relay_client]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RelayClientSection {
    pub max_listeners: Option<usize>,
    pub max_pending_dials: Option<usize>,
    pub exchange_timeout: Option<Dur>,
    pub max_pending_incoming: Option<usize>,
    pub max_stop_streams: Option<usize>,
    pub renew_margin: Option<Dur>,
}

/// A token bucket of the relay server: `{ limit = 30, interval = "2m" }`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RateSection {
    pub limit: u32,
    pub interval: Dur,
}

/// `[resources]`: the resource manager's limits. `memory` sizes every scope from one budget
/// (`Limits::for_memory`; default: from the machine's memory); the scope tables then
/// override single limits.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ResourcesSection {
    pub memory: Option<u64>,
    pub system: ScopeSection,
    pub transient: ScopeSection,
    pub transient_peer: ScopeSection,
    pub peer: ScopeSection,
    pub protocol: ScopeSection,
    pub protocol_peer: ScopeSection,
    pub service: ScopeSection,
}

/// One scope of `[resources]`, e.g. `[resources.peer]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ScopeSection {
    pub conns_inbound: Option<u32>,
    pub conns_outbound: Option<u32>,
    pub conns: Option<u32>,
    pub streams_inbound: Option<u32>,
    pub streams_outbound: Option<u32>,
    pub streams: Option<u32>,
    pub memory: Option<u64>,
}

/// The file's text and where it came from, kept to point errors at lines.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// The file (empty without a file).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl Source {
    /// `file:line: ` of the first line holding `needle` as a TOML string, or empty.
    pub fn locate(&self, needle: &str) -> String {
        let quoted = format!("\"{needle}\"");
        self.text
            .lines()
            .position(|l| l.contains(&quoted))
            .map(|i| format!("{}:{}: ", self.path.display(), i + 1))
            .unwrap_or_default()
    }
}

/// Reads and checks the file at `path` (no overrides).
///
/// # Errors
///
/// [`ConfigError::Io`] or [`ConfigError::File`].
pub fn read(path: &Path) -> Result<(toml::Table, Source), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let source = Source {
        path: path.to_path_buf(),
        text,
    };
    let table = parse(&source)?;
    Ok((table, source))
}

/// Parses `source.text`: syntax and schema (types, unknown keys) with the line of the error.
///
/// # Errors
///
/// [`ConfigError::File`].
pub fn parse(source: &Source) -> Result<toml::Table, ConfigError> {
    let at = |e: toml::de::Error| {
        let start = e.span().map_or(0, |s| s.start).min(source.text.len());
        let before = &source.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::File {
            path: source.path.clone(),
            line,
            column,
            key: key_at(&source.text, line).map_or(String::new(), |k| format!("{k}: ")),
            message: e.message().replace('\n', " ").trim().to_string(),
        }
    };
    toml::from_str::<Config>(&source.text).map_err(at)?;
    toml::from_str::<toml::Table>(&source.text).map_err(at)
}

/// `section.key` of the assignment on 1-based `line`, if it is one.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim();
    let section = lines[..line - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && l.ends_with(']')).then(|| l.trim_matches(['[', ']']).trim())
    });
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

/// Sets `section.key` in `table` to `raw` (a TOML value: `30`, `true`, `"30s"`, `["a", "b"]`;
/// anything that does not parse as one is taken as a string).
///
/// # Errors
///
/// [`ConfigError::Override`] if `name` is not `section.key` or the result does not match the
/// schema (unknown key, wrong type).
pub fn set(
    table: &mut toml::Table,
    name: &str,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Override {
        origin: origin.to_string(),
        message,
    };
    let (section, key) = name
        .split_once('.')
        .ok_or_else(|| err(format!("{name:?} is not section.key (e.g. kad.k)")))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(sec) = entry else {
        return Err(err(format!("{section} is not a section")));
    };
    sec.insert(key.to_string(), value);
    let mut check = toml::Table::new();
    let mut only = toml::Table::new();
    only.insert(key.to_string(), sec[key].clone());
    check.insert(section.to_string(), toml::Value::Table(only));
    toml::Value::Table(check)
        .try_into::<Config>()
        .map_err(|e| err(format!("{name}: {}", e.message().replace('\n', " ").trim())))?;
    Ok(())
}

/// Applies the `MESHWIRE__<SECTION>__<KEY>` variables of `vars` to `table`.
///
/// # Errors
///
/// As [`set`].
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let rest = &var[ENV_PREFIX.len()..];
        let name = rest.to_ascii_lowercase().replacen("__", ".", 1);
        set(table, &name, &value, &var)?;
    }
    Ok(())
}

/// The typed configuration of a checked table.
///
/// # Errors
///
/// [`ConfigError::Override`] (the table was checked key by key, so this is unexpected).
pub fn finish(table: toml::Table) -> Result<Config, ConfigError> {
    toml::Value::Table(table)
        .try_into::<Config>()
        .map_err(|e| ConfigError::Override {
            origin: "configuration".into(),
            message: e.message().replace('\n', " "),
        })
}

#[cfg(test)]
mod tests;
