//! [`GossipsubConfig`]: every parameter and limit of the engine, with rust-libp2p's defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::choke::ChokeConfig;
use super::event::{GossipMessage, MessageId};
use super::score::params::{PeerScoreParams, PeerScoreThresholds, ScoreParamsError};
use crate::qos::QosConfig;
use crate::wire::DEFAULT_MAX_TRANSMIT_SIZE;

/// A function naming messages (the default is the author and sequence number,
/// [`crate::wire::sign::default_message_id`]). Every node of a mesh must use the same one.
pub type MessageIdFn = Arc<dyn Fn(&GossipMessage) -> MessageId + Send + Sync>;

/// The engine's parameters. Defaults are rust-libp2p 0.57's (`gossipsub::Config::default()`)
/// where it has the parameter; the queue and cache bounds it lacks are this crate's.
#[derive(Clone)]
pub struct GossipsubConfig {
    /// D: the mesh degree aimed at. Default 6.
    pub mesh_n: usize,
    /// D_lo: below it the heartbeat grafts up to D. Default 5.
    pub mesh_n_low: usize,
    /// D_hi: above it the heartbeat prunes down to D. Default 12.
    pub mesh_n_high: usize,
    /// D_score: peers kept by score when pruning an oversubscribed mesh. Default 4.
    pub retain_scores: usize,
    /// D_out: outbound peers kept in every mesh. Default 2.
    pub mesh_outbound_min: usize,
    /// D_lazy: the fewest peers gossip (IHAVE) is sent to per topic and heartbeat. Default 6.
    pub gossip_lazy: usize,
    /// The share of non-mesh topic peers gossip goes to, when above D_lazy. Default 0.25.
    pub gossip_factor: f64,
    /// The heartbeat period. Default 1 s.
    pub heartbeat_interval: Duration,
    /// The delay before the first heartbeat. Default 5 s.
    pub heartbeat_initial_delay: Duration,
    /// How long a fanout set lives after the last publish to its topic. Default 60 s.
    pub fanout_ttl: Duration,
    /// Heartbeats a message stays in the message cache (served to IWANT). Default 5.
    pub history_length: usize,
    /// Heartbeats a message is gossiped in IHAVE. Default 3.
    pub history_gossip: usize,
    /// How long a message id stays in the seen cache. Default 60 s.
    pub duplicate_cache_time: Duration,
    /// The most message ids the seen cache holds (the oldest go first). Default 250,000.
    pub max_seen_messages: usize,
    /// The most messages the message cache holds (a message beyond is still forwarded but
    /// not served to IWANT; one awaiting validation is dropped). Default 50,000.
    pub max_cached_messages: usize,
    /// The largest RPC read or written, in bytes. Default 65,536.
    pub max_transmit_size: usize,
    /// The most message ids asked of one peer per heartbeat (IWANT in answer to its IHAVEs),
    /// and the most ids in one IHAVE we send. Default 5,000.
    pub max_ihave_length: usize,
    /// The most IHAVE messages taken from one peer per heartbeat. Default 10.
    pub max_ihave_messages: usize,
    /// The longest message id taken from an IHAVE, in bytes; longer ones are ignored (they
    /// would be echoed in IWANTs and held in promises). Default 256 (libp2p's default id, a
    /// peer id and a sequence number, is under 64 bytes; a hash under 64).
    pub max_message_id_len: usize,
    /// How many times one peer is sent one message in answer to IWANT. Default 3.
    pub gossip_retransmission: u32,
    /// The backoff set by a PRUNE (ours and, when it carries none, a peer's). Default 60 s.
    pub prune_backoff: Duration,
    /// The backoff of the PRUNEs sent when we unsubscribe. Default 10 s.
    pub unsubscribe_backoff: Duration,
    /// Heartbeats added to a backoff before the heartbeat grafts the peer again. Default 1.
    pub backoff_slack: u32,
    /// Send peer exchange (other topic peers) in our PRUNEs. Default `false`.
    pub do_px: bool,
    /// The most peers sent in, and taken from, a PRUNE's peer exchange. Default 16.
    pub prune_peers: usize,
    /// Publish our messages to every topic peer, not only the mesh. Default `true`.
    pub flood_publish: bool,
    /// Hold received messages until the application reports on them
    /// ([`super::GossipsubEngine::report_validation`]); a message waiting is not forwarded.
    /// Default `false` (forwarded once its signature verifies).
    pub validate_messages: bool,
    /// Accept messages authored by ourselves from peers. Default `false`.
    pub allow_self_origin: bool,
    /// Control RPCs queued per peer; beyond, new ones are dropped. Default 512.
    pub max_queued_control: usize,
    /// Data RPCs (published messages) queued per peer; beyond, new ones are dropped, so a slow
    /// peer loses its own data and nobody else's. Default 1,024.
    pub max_queued_messages: usize,
    /// The most published messages and subscription changes taken from one RPC. Default 5,000.
    pub max_messages_per_rpc: usize,
    /// The most topics one peer is recorded as subscribed to. Default 1,000.
    pub max_topics_per_peer: usize,
    /// The most wildcard patterns (`<realm>/sensors.#`) recorded per peer: each message we
    /// publish or forward is matched against every recorded pattern of every peer, so this
    /// bounds that cost; a peer's further patterns are treated as plain topics. Default 32.
    pub max_patterns_per_peer: usize,
    /// IDONTWANT (gossipsub v1.2) is sent for messages whose protobuf encoding is larger than
    /// this, in bytes; `usize::MAX` never sends it. Default 1,000 (rust-libp2p's
    /// `idontwant_message_size_threshold`; go-libp2p's is 1,024): for a smaller message an
    /// IDONTWANT (the id, ≈ 70 bytes with the default id, plus framing, to each mesh peer)
    /// costs about what the copies it may save do, and a control RPC more per mesh peer.
    pub idontwant_message_size_threshold: usize,
    /// Heartbeats a peer's IDONTWANT id is kept (it is forgotten at the `idontwant_ttl`-th
    /// heartbeat after it arrived). Default 3 (go-libp2p's `IDontWantMessageTTL`;
    /// rust-libp2p keeps them 3 s, the same at the default 1 s heartbeat).
    pub idontwant_ttl: u32,
    /// The most ids taken from one peer's RPC in IDONTWANT (the rest are ignored), and the
    /// most we put in one RPC. Default 10 (go-libp2p's `MaxIDontWantLength`, so go peers take
    /// all of ours).
    pub max_idontwant_length: usize,
    /// The most RPCs carrying IDONTWANT taken from one peer per heartbeat (the spec's
    /// `max_idontwant_messages`); later ones are ignored until the next heartbeat. Default
    /// 1,000 (go-libp2p's `MaxIDontWantMessages`).
    pub max_idontwant_messages: usize,
    /// The most IDONTWANT ids kept per peer (8-byte hashes; beyond, the oldest go first).
    /// Default 10,000 (rust-libp2p's cap; = `max_idontwant_length` × `max_idontwant_messages`).
    pub max_idontwant_ids_per_peer: usize,
    /// The message id function; `None` is rust-libp2p's default (author + sequence number).
    pub message_id_fn: Option<MessageIdFn>,
    /// Peer scoring v1.1: `None` (the default, as rust-libp2p) scores every peer 0.
    pub score_params: Option<PeerScoreParams>,
    /// The thresholds acted on when scoring is on.
    pub score_thresholds: PeerScoreThresholds,
    /// Heartbeats between opportunistic grafting rounds (scoring on). Default 60.
    pub opportunistic_graft_ticks: u64,
    /// Peers grafted per opportunistic round. Default 2.
    pub opportunistic_graft_peers: usize,
    /// How long a peer has to deliver what it advertised once we ask (IWANT) before the
    /// promise counts as broken (a P7 penalty). Default 3 s.
    pub iwant_followup_time: Duration,
    /// A GRAFT this soon after our PRUNE's backoff began costs an extra P7 penalty.
    /// Default 10 s.
    pub graft_flood_threshold: Duration,
    /// QoS 1 (`publish_with(.., Qos::AtLeastOnce)`): acknowledgement timeout, retransmissions
    /// and bounds ([`QosConfig`], module [`crate::qos`]). Its window
    /// ([`QosConfig::window`], 30 s by default) must be shorter than `duplicate_cache_time`, so
    /// a late retransmission is still a duplicate for its receiver.
    pub qos: QosConfig,
    /// Choking, a meshwire extension (module `choke`, `docs/pubsub.md`): off by default;
    /// its thresholds and bounds are [`ChokeConfig`]'s fields.
    pub choke: ChokeConfig,
    /// The seed of the engine's random choices.
    pub seed: u64,
}

impl Default for GossipsubConfig {
    fn default() -> Self {
        GossipsubConfig {
            mesh_n: 6,
            mesh_n_low: 5,
            mesh_n_high: 12,
            retain_scores: 4,
            mesh_outbound_min: 2,
            gossip_lazy: 6,
            gossip_factor: 0.25,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_initial_delay: Duration::from_secs(5),
            fanout_ttl: Duration::from_secs(60),
            history_length: 5,
            history_gossip: 3,
            duplicate_cache_time: Duration::from_secs(60),
            max_seen_messages: 250_000,
            max_cached_messages: 50_000,
            max_transmit_size: DEFAULT_MAX_TRANSMIT_SIZE,
            max_ihave_length: 5000,
            max_ihave_messages: 10,
            max_message_id_len: 256,
            gossip_retransmission: 3,
            prune_backoff: Duration::from_secs(60),
            unsubscribe_backoff: Duration::from_secs(10),
            backoff_slack: 1,
            do_px: false,
            prune_peers: 16,
            flood_publish: true,
            validate_messages: false,
            allow_self_origin: false,
            max_queued_control: 512,
            max_queued_messages: 1024,
            max_messages_per_rpc: 5000,
            max_topics_per_peer: 1000,
            max_patterns_per_peer: 32,
            idontwant_message_size_threshold: 1000,
            idontwant_ttl: 3,
            max_idontwant_length: 10,
            max_idontwant_messages: 1000,
            max_idontwant_ids_per_peer: 10_000,
            message_id_fn: None,
            score_params: None,
            score_thresholds: PeerScoreThresholds::default(),
            opportunistic_graft_ticks: 60,
            opportunistic_graft_peers: 2,
            iwant_followup_time: Duration::from_secs(3),
            graft_flood_threshold: Duration::from_secs(10),
            qos: QosConfig::default(),
            choke: ChokeConfig::default(),
            seed: 0,
        }
    }
}

impl fmt::Debug for GossipsubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipsubConfig")
            .field("mesh_n", &self.mesh_n)
            .field("mesh_n_low", &self.mesh_n_low)
            .field("mesh_n_high", &self.mesh_n_high)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_transmit_size", &self.max_transmit_size)
            .field("flood_publish", &self.flood_publish)
            .field(
                "idontwant_message_size_threshold",
                &self.idontwant_message_size_threshold,
            )
            .field("validate_messages", &self.validate_messages)
            .field("custom_message_id_fn", &self.message_id_fn.is_some())
            .field("scoring", &self.score_params.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a [`GossipsubConfig`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The degrees must satisfy `D_out < D_lo <= D <= D_hi`, `D_out <= D / 2` and
    /// `D_score <= D`.
    #[error("mesh degrees must satisfy D_out < D_lo <= D <= D_hi, D_out <= D/2, D_score <= D")]
    Degrees,
    /// `history_gossip` must be at least 1 and at most `history_length`.
    #[error("history_gossip must be in 1..=history_length")]
    History,
    /// The heartbeat interval must not be zero.
    #[error("heartbeat_interval must not be zero")]
    Heartbeat,
    /// `max_transmit_size` must be at least 100 bytes (rust-libp2p's floor).
    #[error("max_transmit_size must be at least 100 bytes")]
    TransmitSize,
    /// Every queue, cache and IDONTWANT bound must be at least 1.
    #[error("queue, cache and IDONTWANT bounds must be at least 1")]
    Bounds,
    /// A QoS bound is zero, `ack_timeout` zero, or more than 16 retransmissions.
    #[error("QoS bounds must be at least 1, ack_timeout not zero, retransmissions at most 16")]
    Qos,
    /// The QoS retransmission window is not shorter than `duplicate_cache_time`.
    #[error("QoS window {window:?} must be shorter than duplicate_cache_time {seen:?}")]
    QosWindow {
        /// [`QosConfig::window`].
        window: Duration,
        /// `duplicate_cache_time`.
        seen: Duration,
    },
    /// A choke bound is out of range ([`ChokeConfig::is_valid`]).
    #[error("choke bounds: 1 <= min_unchoked <= max_unchoked, decay in (0, 1], late_ratio in [0, 1], min_samples > 0, max_pending and max_tracked >= 1")]
    Choke,
    /// The score parameters or thresholds are inconsistent.
    #[error(transparent)]
    Score(#[from] ScoreParamsError),
}

impl GossipsubConfig {
    /// Checks the relations between parameters.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let degrees_ok = self.mesh_outbound_min < self.mesh_n_low
            && self.mesh_n_low <= self.mesh_n
            && self.mesh_n <= self.mesh_n_high
            && self.mesh_outbound_min <= self.mesh_n / 2
            && self.retain_scores <= self.mesh_n;
        if !degrees_ok {
            return Err(ConfigError::Degrees);
        }
        if self.history_gossip == 0 || self.history_gossip > self.history_length {
            return Err(ConfigError::History);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Heartbeat);
        }
        if self.max_transmit_size < 100 {
            return Err(ConfigError::TransmitSize);
        }
        let bounds = [
            self.max_seen_messages,
            self.max_cached_messages,
            self.max_queued_control,
            self.max_queued_messages,
            self.max_messages_per_rpc,
            self.max_topics_per_peer,
            self.max_patterns_per_peer,
            self.max_idontwant_length,
            self.max_idontwant_messages,
            self.max_idontwant_ids_per_peer,
        ];
        if bounds.contains(&0) || self.opportunistic_graft_ticks == 0 || self.idontwant_ttl == 0 {
            return Err(ConfigError::Bounds);
        }
        if !self.qos.is_valid() {
            return Err(ConfigError::Qos);
        }
        if !self.choke.is_valid() {
            return Err(ConfigError::Choke);
        }
        if self.qos.window() >= self.duplicate_cache_time {
            return Err(ConfigError::QosWindow {
                window: self.qos.window(),
                seen: self.duplicate_cache_time,
            });
        }
        if let Some(params) = &self.score_params {
            params.validate()?;
            self.score_thresholds.validate()?;
        }
        Ok(())
    }
}
