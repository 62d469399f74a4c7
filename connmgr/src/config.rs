//! [`Config`] of [`BasicConnMgr`](crate::BasicConnMgr) and the crate's error type.

use std::time::Duration;

use thiserror::Error;

use crate::DecayingTagId;

/// Settings of a [`BasicConnMgr`](crate::BasicConnMgr).
///
/// The defaults are those of go-libp2p's default connection manager: watermarks 160/192,
/// a one-minute grace period, a ten-second silence period and a one-minute decay resolution,
/// plus meshwire's flood rule ([`Config::flood_headroom`], on by default with no headroom:
/// go-libp2p has no such rule).
///
/// Setting `low_water` or `high_water` to 0 disables trimming altogether (as in go-libp2p);
/// tags, protection and decay keep working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Trims close connections until this many trimmable connections remain.
    pub low_water: usize,
    /// Automatic trims start once the connection count reaches this number.
    pub high_water: usize,
    /// Connections (and peers) younger than this are never trimmed.
    pub grace_period: Duration,
    /// Minimum time between two automatic trims; also the period of the background check.
    /// When zero, half the grace period is used instead (go-libp2p's rule); both being zero
    /// is rejected.
    pub silence_period: Duration,
    /// Decaying tags are processed on a grid of this step; intervals shorter than it are
    /// raised to it. Must not be zero.
    pub decay_resolution: Duration,
    /// The flood rule: while the connection count is above `high_water + flood_headroom`,
    /// the grace period stops sheltering *flood candidates* — peers connected only inbound,
    /// with no tag, no decaying value and no protection, that are still in their grace
    /// period. The newest of them are closed at each
    /// [`handle_timeout`](crate::ConnManager::handle_timeout) (not subject to the silence
    /// period) until the count is back at `high_water + flood_headroom`. Outbound
    /// connections, tagged and protected peers, and peers past their grace period are never
    /// flood candidates (the ordinary trim handles the latter).
    ///
    /// `None` turns the rule off: the grace period shelters every connection, as in
    /// go-libp2p, where only the resource manager bounds a flood of fresh identities.
    /// Default `Some(0)`: untagged inbound newcomers are admitted up to the high watermark.
    /// See the [crate docs](crate#the-flood-rule) for why newest first.
    pub flood_headroom: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            low_water: 160,
            high_water: 192,
            grace_period: Duration::from_secs(60),
            silence_period: Duration::from_secs(10),
            decay_resolution: Duration::from_secs(60),
            flood_headroom: Some(0),
        }
    }
}

impl Config {
    /// The connection count above which the flood rule trims (`high_water +
    /// flood_headroom`), or `None` when the rule or trimming is off.
    pub fn flood_limit(&self) -> Option<usize> {
        let headroom = self.flood_headroom?;
        if self.low_water == 0 || self.high_water == 0 {
            return None;
        }
        Some(self.high_water.saturating_add(headroom))
    }

    /// The default configuration with the given watermarks.
    pub fn with_watermarks(low_water: usize, high_water: usize) -> Self {
        Config {
            low_water,
            high_water,
            ..Config::default()
        }
    }

    /// Checks the configuration: `low_water <= high_water`, a non-zero decay resolution and a
    /// non-zero background check interval.
    ///
    /// # Errors
    ///
    /// [`ConnMgrError::LowAboveHigh`], [`ConnMgrError::ZeroDecayResolution`] or
    /// [`ConnMgrError::ZeroCheckInterval`] for the first rule broken.
    pub fn validate(&self) -> Result<(), ConnMgrError> {
        if self.low_water > self.high_water {
            return Err(ConnMgrError::LowAboveHigh {
                low: self.low_water,
                high: self.high_water,
            });
        }
        if self.decay_resolution.is_zero() {
            return Err(ConnMgrError::ZeroDecayResolution);
        }
        if self.check_interval().is_zero() {
            return Err(ConnMgrError::ZeroCheckInterval);
        }
        Ok(())
    }

    /// Period of the background check and minimum gap between automatic trims: the silence
    /// period, or half the grace period when the silence period is zero.
    pub fn check_interval(&self) -> Duration {
        if self.silence_period.is_zero() {
            self.grace_period / 2
        } else {
            self.silence_period
        }
    }
}

/// Errors of this crate.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnMgrError {
    /// The configuration's low watermark is above its high watermark.
    #[error("low watermark {low} is above high watermark {high}")]
    LowAboveHigh {
        /// The configured low watermark.
        low: usize,
        /// The configured high watermark.
        high: usize,
    },
    /// The configuration's decay resolution is zero.
    #[error("decay resolution must not be zero")]
    ZeroDecayResolution,
    /// Both the silence period and the grace period are zero, so the background check would
    /// have no period.
    #[error("silence period and grace period are both zero")]
    ZeroCheckInterval,
    /// A decaying tag with this name is already registered.
    #[error("decaying tag {0:?} already exists")]
    DuplicateDecayingTag(String),
    /// The decaying tag was never registered with this manager.
    #[error("unknown decaying tag {0}")]
    UnknownDecayingTag(DecayingTagId),
    /// The decaying tag has been closed; it accepts no more bumps or removals.
    #[error("decaying tag {0} has been closed")]
    DecayingTagClosed(DecayingTagId),
    /// The connection manager has been closed; decaying tags are no longer available.
    #[error("connection manager is closed")]
    Closed,
}
