//! The behaviour's settings ([`Config`]): the engine's as plain fields, next to the streams'.

use std::time::Duration;

use crate::engine::{
    ChokeConfig, GossipsubConfig, MessageIdFn, PeerScoreParams, PeerScoreThresholds,
};
use crate::qos::QosConfig;

/// Declares [`Config`]: the engine's fields (copied into [`GossipsubConfig`] by
/// [`Config::engine_config`], defaults from [`GossipsubConfig::default`]) and the behaviour's
/// own, each with a `with_*` builder.
macro_rules! config {
    (
        engine { $( $efield:ident : $ety:ty, $ewith:ident; )* }
        behaviour { $( $(#[$bdoc:meta])* $bfield:ident : $bty:ty = $bdefault:expr, $bwith:ident; )* }
    ) => {
        /// Settings of a [`Behaviour`](crate::Behaviour): the engine's (degrees, heartbeat,
        /// caches, limits, scoring; each documented on [`GossipsubConfig`], same name, same
        /// default) as plain fields next to the behaviour's own (streams). Every field has a
        /// `with_*` builder.
        ///
        /// ```
        /// use std::time::Duration;
        /// use meshwire_pubsub as pubsub;
        ///
        /// let config = pubsub::Config::default()
        ///     .with_mesh_n(8)
        ///     .with_mesh_n_high(16)
        ///     .with_heartbeat_interval(Duration::from_millis(700))
        ///     .with_validate_messages(true)
        ///     .with_writer_queue(32);
        /// assert_eq!((config.mesh_n, config.mesh_n_low), (8, 5));
        /// let engine = config.engine_config();
        /// assert_eq!(engine.heartbeat_interval, Duration::from_millis(700));
        /// // Or with struct update syntax:
        /// let config = pubsub::Config { flood_publish: false, ..Default::default() };
        /// assert_eq!(config.max_transmit_size, 65_536);
        /// ```
        #[derive(Clone)]
        pub struct Config {
            $(
                #[doc = concat!("[`GossipsubConfig::", stringify!($efield), "`].")]
                pub $efield: $ety,
            )*
            $( $(#[$bdoc])* pub $bfield: $bty, )*
        }

        impl std::fmt::Debug for Config {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Config")
                    .field("engine", &self.engine_config())
                    $( .field(stringify!($bfield), &self.$bfield) )*
                    .finish()
            }
        }

        impl Default for Config {
            fn default() -> Self {
                let engine = GossipsubConfig::default();
                Config {
                    $( $efield: engine.$efield, )*
                    $( $bfield: $bdefault, )*
                }
            }
        }

        impl Config {
            /// The engine's settings.
            pub fn engine_config(&self) -> GossipsubConfig {
                GossipsubConfig {
                    $( $efield: self.$efield.clone(), )*
                    ..GossipsubConfig::default()
                }
            }

            /// Takes every engine setting from `engine` (its `seed` excepted: the behaviour
            /// seeds each node differently).
            pub fn with_engine_config(mut self, engine: GossipsubConfig) -> Self {
                $( self.$efield = engine.$efield; )*
                self
            }

            $(
                #[doc = concat!("With [`Config::", stringify!($efield), "`].")]
                pub fn $ewith(mut self, value: $ety) -> Self {
                    self.$efield = value;
                    self
                }
            )*
            $(
                #[doc = concat!("With [`Config::", stringify!($bfield), "`].")]
                pub fn $bwith(mut self, value: $bty) -> Self {
                    self.$bfield = value;
                    self
                }
            )*
        }
    };
}

config! {
    engine {
        mesh_n: usize, with_mesh_n;
        mesh_n_low: usize, with_mesh_n_low;
        mesh_n_high: usize, with_mesh_n_high;
        retain_scores: usize, with_retain_scores;
        mesh_outbound_min: usize, with_mesh_outbound_min;
        gossip_lazy: usize, with_gossip_lazy;
        gossip_factor: f64, with_gossip_factor;
        heartbeat_interval: Duration, with_heartbeat_interval;
        heartbeat_initial_delay: Duration, with_heartbeat_initial_delay;
        fanout_ttl: Duration, with_fanout_ttl;
        history_length: usize, with_history_length;
        history_gossip: usize, with_history_gossip;
        duplicate_cache_time: Duration, with_duplicate_cache_time;
        max_seen_messages: usize, with_max_seen_messages;
        max_cached_messages: usize, with_max_cached_messages;
        max_transmit_size: usize, with_max_transmit_size;
        max_ihave_length: usize, with_max_ihave_length;
        max_ihave_messages: usize, with_max_ihave_messages;
        max_message_id_len: usize, with_max_message_id_len;
        gossip_retransmission: u32, with_gossip_retransmission;
        prune_backoff: Duration, with_prune_backoff;
        unsubscribe_backoff: Duration, with_unsubscribe_backoff;
        backoff_slack: u32, with_backoff_slack;
        do_px: bool, with_do_px;
        prune_peers: usize, with_prune_peers;
        flood_publish: bool, with_flood_publish;
        validate_messages: bool, with_validate_messages;
        allow_self_origin: bool, with_allow_self_origin;
        max_queued_control: usize, with_max_queued_control;
        max_queued_messages: usize, with_max_queued_messages;
        max_messages_per_rpc: usize, with_max_messages_per_rpc;
        max_topics_per_peer: usize, with_max_topics_per_peer;
        max_patterns_per_peer: usize, with_max_patterns_per_peer;
        idontwant_message_size_threshold: usize, with_idontwant_message_size_threshold;
        idontwant_ttl: u32, with_idontwant_ttl;
        max_idontwant_length: usize, with_max_idontwant_length;
        max_idontwant_messages: usize, with_max_idontwant_messages;
        max_idontwant_ids_per_peer: usize, with_max_idontwant_ids_per_peer;
        message_id_fn: Option<MessageIdFn>, with_message_id_fn;
        score_params: Option<PeerScoreParams>, with_score_params;
        score_thresholds: PeerScoreThresholds, with_score_thresholds;
        opportunistic_graft_ticks: u64, with_opportunistic_graft_ticks;
        opportunistic_graft_peers: usize, with_opportunistic_graft_peers;
        iwant_followup_time: Duration, with_iwant_followup_time;
        graft_flood_threshold: Duration, with_graft_flood_threshold;
        qos: QosConfig, with_qos;
        choke: ChokeConfig, with_choke;
    }
    behaviour {
        /// RPCs handed to a peer's writer ahead of its stream (16).
        writer_queue: usize = 16, with_writer_queue;
        /// The longest one write may take before the stream is dropped (10 s).
        write_timeout: Duration = Duration::from_secs(10), with_write_timeout;
        /// How long a stream may carry nothing before it ends, each side's (1 h).
        idle_timeout: Duration = Duration::from_secs(3600), with_idle_timeout;
        /// The least time between two attempts to open a stream to one peer (1 s).
        reopen_delay: Duration = Duration::from_secs(1), with_reopen_delay;
        /// Remotes' streams read at once, in total (1,024).
        max_inbound_streams: usize = 1024, with_max_inbound_streams;
        /// Remotes' streams read at once per peer (4).
        max_inbound_streams_per_peer: usize = 4, with_max_inbound_streams_per_peer;
        /// Our streams (one per peer) written at once (1,024).
        max_outbound_streams: usize = 1024, with_max_outbound_streams;
        /// Stream requests waiting for the swarm (256).
        max_pending_commands: usize = 256, with_max_pending_commands;
        /// QoS frames (acks, retransmissions) being written at once, one stream each (64).
        max_qos_streams: usize = 64, with_max_qos_streams;
        /// Remotes' QoS streams read at once per peer (64: a publisher's retransmission
        /// round opens one per message); more are reset.
        max_qos_inbound_streams_per_peer: usize = 64, with_max_qos_inbound_streams_per_peer;
    }
}
