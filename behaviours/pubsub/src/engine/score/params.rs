//! Peer scoring parameters and thresholds (gossipsub v1.1), with rust-libp2p 0.57's defaults.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use super::super::TopicHash;

/// The score thresholds the router acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerScoreThresholds {
    /// Below it, no gossip is sent to the peer and its IHAVE/IWANT are ignored. Default -10.
    pub gossip_threshold: f64,
    /// Below it, our messages are not published to the peer (flood or fanout). Default -50.
    pub publish_threshold: f64,
    /// Below it, every RPC of the peer is ignored. Default -80.
    pub graylist_threshold: f64,
    /// At or above it, peer exchange in the peer's PRUNEs is taken. Default 10.
    pub accept_px_threshold: f64,
    /// Below it, the median mesh score triggers opportunistic grafting. Default 20.
    pub opportunistic_graft_threshold: f64,
}

impl Default for PeerScoreThresholds {
    fn default() -> Self {
        PeerScoreThresholds {
            gossip_threshold: -10.0,
            publish_threshold: -50.0,
            graylist_threshold: -80.0,
            accept_px_threshold: 10.0,
            opportunistic_graft_threshold: 20.0,
        }
    }
}

/// Why scoring parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid score parameter: {0}")]
pub struct ScoreParamsError(pub &'static str);

impl PeerScoreThresholds {
    /// Checks `graylist <= publish <= gossip <= 0`, `accept_px >= 0`,
    /// `opportunistic_graft >= 0` (rust-libp2p's rules).
    ///
    /// # Errors
    ///
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ScoreParamsError> {
        if self.gossip_threshold > 0.0 {
            return Err(ScoreParamsError("gossip_threshold must be <= 0"));
        }
        if self.publish_threshold > self.gossip_threshold {
            return Err(ScoreParamsError(
                "publish_threshold must be <= gossip_threshold",
            ));
        }
        if self.graylist_threshold > self.publish_threshold {
            return Err(ScoreParamsError(
                "graylist_threshold must be <= publish_threshold",
            ));
        }
        if self.accept_px_threshold < 0.0 || self.opportunistic_graft_threshold < 0.0 {
            return Err(ScoreParamsError(
                "accept_px and opportunistic_graft thresholds must be >= 0",
            ));
        }
        Ok(())
    }
}

/// The score's global parameters and the parameters of each scored topic.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerScoreParams {
    /// Parameters of each scored topic; other topics do not count.
    pub topics: HashMap<TopicHash, TopicScoreParams>,
    /// The most the topics together add to a score (0: no cap). Default 3600.
    pub topic_score_cap: f64,
    /// P5: the weight of the application's score. Default 10.
    pub app_specific_weight: f64,
    /// P6: the weight (≤ 0) of the square of peers sharing an IP beyond the threshold.
    /// Default -5.
    pub ip_colocation_factor_weight: f64,
    /// P6: peers from one IP tolerated. Default 10.
    pub ip_colocation_factor_threshold: f64,
    /// P6: IPs exempt.
    pub ip_colocation_factor_whitelist: HashSet<IpAddr>,
    /// P7: the weight (≤ 0) of the square of behaviour penalties beyond the threshold.
    /// Default -10.
    pub behaviour_penalty_weight: f64,
    /// P7: penalties tolerated. Default 0.
    pub behaviour_penalty_threshold: f64,
    /// P7: the decay of the penalty counter per decay interval. Default 0.2.
    pub behaviour_penalty_decay: f64,
    /// Slow peer (rust-libp2p's extension): the weight (≤ 0) of messages dropped because
    /// the peer's queue was full, beyond the threshold. Default -0.2.
    pub slow_peer_weight: f64,
    /// Slow peer: drops tolerated. Default 0.
    pub slow_peer_threshold: f64,
    /// Slow peer: the decay per interval. Default 0.2.
    pub slow_peer_decay: f64,
    /// How often counters decay. Default 1 s.
    pub decay_interval: Duration,
    /// A decayed counter below it becomes 0. Default 0.1.
    pub decay_to_zero: f64,
    /// How long a disconnected peer's non-positive score is kept (and restored on
    /// reconnection). Default 1 h.
    pub retain_score: Duration,
}

impl Default for PeerScoreParams {
    fn default() -> Self {
        PeerScoreParams {
            topics: HashMap::new(),
            topic_score_cap: 3600.0,
            app_specific_weight: 10.0,
            ip_colocation_factor_weight: -5.0,
            ip_colocation_factor_threshold: 10.0,
            ip_colocation_factor_whitelist: HashSet::new(),
            behaviour_penalty_weight: -10.0,
            behaviour_penalty_threshold: 0.0,
            behaviour_penalty_decay: 0.2,
            slow_peer_weight: -0.2,
            slow_peer_threshold: 0.0,
            slow_peer_decay: 0.2,
            decay_interval: Duration::from_secs(1),
            decay_to_zero: 0.1,
            retain_score: Duration::from_secs(3600),
        }
    }
}

impl PeerScoreParams {
    /// Checks the signs and ranges rust-libp2p checks.
    ///
    /// # Errors
    ///
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ScoreParamsError> {
        for t in self.topics.values() {
            t.validate()?;
        }
        if self.topic_score_cap < 0.0 {
            return Err(ScoreParamsError("topic_score_cap must be >= 0"));
        }
        if self.ip_colocation_factor_weight > 0.0 || self.ip_colocation_factor_threshold < 1.0 {
            return Err(ScoreParamsError(
                "ip_colocation_factor_weight must be <= 0 and its threshold >= 1",
            ));
        }
        if self.behaviour_penalty_weight > 0.0 || self.slow_peer_weight > 0.0 {
            return Err(ScoreParamsError(
                "behaviour and slow peer weights must be <= 0",
            ));
        }
        let decays = [self.behaviour_penalty_decay, self.slow_peer_decay];
        if decays.iter().any(|d| *d <= 0.0 || *d >= 1.0) {
            return Err(ScoreParamsError("decays must be in (0, 1)"));
        }
        if self.decay_interval < Duration::from_secs(1) {
            return Err(ScoreParamsError("decay_interval must be at least 1 s"));
        }
        if self.decay_to_zero <= 0.0 || self.decay_to_zero >= 1.0 {
            return Err(ScoreParamsError("decay_to_zero must be in (0, 1)"));
        }
        Ok(())
    }
}

/// One topic's score parameters (P1–P4).
#[derive(Clone, Debug, PartialEq)]
pub struct TopicScoreParams {
    /// The topic's weight in the score. Default 0.5.
    pub topic_weight: f64,
    /// P1: the weight of time in the mesh. Default 1.
    pub time_in_mesh_weight: f64,
    /// P1: the unit of time in the mesh. Default 1 ms.
    pub time_in_mesh_quantum: Duration,
    /// P1: the most units counted. Default 3600.
    pub time_in_mesh_cap: f64,
    /// P2: the weight of first deliveries. Default 1.
    pub first_message_deliveries_weight: f64,
    /// P2: decay per interval. Default 0.5.
    pub first_message_deliveries_decay: f64,
    /// P2: cap. Default 2000.
    pub first_message_deliveries_cap: f64,
    /// P3: the weight (≤ 0) of the square of the mesh delivery deficit. Default -1.
    pub mesh_message_deliveries_weight: f64,
    /// P3: decay per interval. Default 0.5.
    pub mesh_message_deliveries_decay: f64,
    /// P3: cap. Default 100.
    pub mesh_message_deliveries_cap: f64,
    /// P3: deliveries expected per decay period. Default 20.
    pub mesh_message_deliveries_threshold: f64,
    /// P3: how late after the first a mesh peer's copy still counts. Default 10 ms.
    pub mesh_message_deliveries_window: Duration,
    /// P3: time in the mesh before the deficit counts. Default 5 s.
    pub mesh_message_deliveries_activation: Duration,
    /// P3b: the weight (≤ 0) of the sticky mesh failure penalty. Default -1.
    pub mesh_failure_penalty_weight: f64,
    /// P3b: decay per interval. Default 0.5.
    pub mesh_failure_penalty_decay: f64,
    /// P4: the weight (≤ 0) of the square of invalid deliveries. Default -1.
    pub invalid_message_deliveries_weight: f64,
    /// P4: decay per interval. Default 0.3.
    pub invalid_message_deliveries_decay: f64,
}

impl Default for TopicScoreParams {
    fn default() -> Self {
        TopicScoreParams {
            topic_weight: 0.5,
            time_in_mesh_weight: 1.0,
            time_in_mesh_quantum: Duration::from_millis(1),
            time_in_mesh_cap: 3600.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: 0.5,
            first_message_deliveries_cap: 2000.0,
            mesh_message_deliveries_weight: -1.0,
            mesh_message_deliveries_decay: 0.5,
            mesh_message_deliveries_cap: 100.0,
            mesh_message_deliveries_threshold: 20.0,
            mesh_message_deliveries_window: Duration::from_millis(10),
            mesh_message_deliveries_activation: Duration::from_secs(5),
            mesh_failure_penalty_weight: -1.0,
            mesh_failure_penalty_decay: 0.5,
            invalid_message_deliveries_weight: -1.0,
            invalid_message_deliveries_decay: 0.3,
        }
    }
}

impl TopicScoreParams {
    /// Checks signs, decays in (0, 1) and a non-zero quantum.
    ///
    /// # Errors
    ///
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ScoreParamsError> {
        if self.topic_weight < 0.0 {
            return Err(ScoreParamsError("topic_weight must be >= 0"));
        }
        if self.time_in_mesh_quantum.is_zero() || self.time_in_mesh_weight < 0.0 {
            return Err(ScoreParamsError(
                "time_in_mesh_quantum must be > 0 and its weight >= 0",
            ));
        }
        if self.first_message_deliveries_weight < 0.0 {
            return Err(ScoreParamsError(
                "first_message_deliveries_weight must be >= 0",
            ));
        }
        let negative = [
            self.mesh_message_deliveries_weight,
            self.mesh_failure_penalty_weight,
            self.invalid_message_deliveries_weight,
        ];
        if negative.iter().any(|w| *w > 0.0) {
            return Err(ScoreParamsError("P3, P3b and P4 weights must be <= 0"));
        }
        let decays = [
            self.first_message_deliveries_decay,
            self.mesh_message_deliveries_decay,
            self.mesh_failure_penalty_decay,
            self.invalid_message_deliveries_decay,
        ];
        if decays.iter().any(|d| *d <= 0.0 || *d >= 1.0) {
            return Err(ScoreParamsError("decays must be in (0, 1)"));
        }
        if self.mesh_message_deliveries_threshold < 0.0 {
            return Err(ScoreParamsError(
                "mesh_message_deliveries_threshold must be >= 0",
            ));
        }
        Ok(())
    }
}
