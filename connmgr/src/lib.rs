//! A tag-based connection manager with the capabilities of go-libp2p's `ConnManager`.
//!
//! The manager is *sans-IO*: it never closes anything itself and never reads a clock. The
//! swarm that owns it reports connections through the notifee methods
//! ([`ConnManager::notify_connected`], [`ConnManager::notify_disconnected`]), passes the
//! current [`Instant`] in, and closes the connections that trims hand back. Parts of the
//! application influence which peers are kept by tagging them with values
//! ([`ConnManager::tag_peer`], [`ConnManager::upsert_tag`], decaying tags through
//! [`Decayer`]) or by protecting them ([`ConnManager::protect`]).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshwire_connmgr::{BasicConnMgr, Config, ConnManager};
//! use meshwire_core::{ConnectionId, Direction, Keypair};
//!
//! let start = Instant::now();
//! let config = Config { low_water: 2, high_water: 3, ..Config::default() };
//! let mut cm = BasicConnMgr::new(config, start)?;
//!
//! // Four peers connect; the one tagged "bootstrap" is worth keeping.
//! let peers: Vec<_> = (0..4u64).map(|i| Keypair::from_seed_for_tests(i).peer_id()).collect();
//! for (i, peer) in peers.iter().enumerate() {
//!     cm.notify_connected(*peer, ConnectionId::from_raw(i as u64), Direction::Outbound, start);
//! }
//! cm.tag_peer(peers[0], "bootstrap", 50);
//! cm.tag_peer(peers[1], "useful", 10);
//! cm.protect(peers[2], "relay");
//!
//! // Within the grace period (one minute by default) nothing is trimmed.
//! assert!(cm.handle_timeout(start + Duration::from_secs(1)).is_empty());
//!
//! // Later the background check, driven by the swarm's timer, trims the unprotected
//! // connections down to the low watermark: the least valuable peer goes.
//! let later = start + Duration::from_secs(120);
//! assert!(cm.poll_timeout().is_some_and(|w| w <= later));
//! let to_close = cm.handle_timeout(later);
//! assert_eq!(to_close, vec![(peers[3], vec![ConnectionId::from_raw(3)])]);
//!
//! // The swarm closes them; the later disconnect notifications are harmless.
//! for (peer, conns) in to_close {
//!     for conn in conns {
//!         cm.notify_disconnected(peer, conn, later);
//!     }
//! }
//! assert_eq!(cm.conn_count(), 3);
//! # Ok::<(), meshwire_connmgr::ConnMgrError>(())
//! ```
//!
//! # Trimming
//!
//! [`BasicConnMgr`] follows go-libp2p's `BasicConnMgr` (the `p2p/net/connmgr` package):
//!
//! * A trim considers as *candidates* only unprotected peers whose first connection is at
//!   least [`Config::grace_period`] old. It does nothing if the connection count is at or
//!   below [`Config::low_water`], or if the candidates hold fewer than `low_water`
//!   connections; otherwise it closes candidate connections until the candidates hold
//!   `low_water` connections. Protected peers and peers in their grace period are kept on
//!   top of that, exactly as in go-libp2p — except for the [flood rule](#the-flood-rule),
//!   which closes untagged inbound newcomers above the high watermark.
//! * Candidates are ordered: temporary entries (peers tagged but never connected) first,
//!   then lowest total tag value, then peers without any open stream before peers with
//!   streams, then peers with an inbound connection before outbound-only peers, then fewer
//!   streams first, and finally by [`PeerId`] so that the order is deterministic. Stream
//!   counts come from [`ConnManager::notify_streams`] and are 0 until reported.
//! * All connections of a trimmed peer are returned together, and the peer's entry (tags,
//!   decaying values) is forgotten at once, as go-libp2p does on the last disconnect.
//!   Temporary entries past the grace period are dropped by trims that have anything to do.
//! * Automatic trims ([`ConnManager::handle_timeout`]) run when the connection count is at
//!   or above [`Config::high_water`] (go's background loop skips only when *below* it) and at
//!   least [`Config::check_interval`] (the silence period) after the previous automatic
//!   trim. Explicit trims ([`ConnManager::trim_open_conns`]) ignore both the high watermark
//!   and the silence period, like go's `TrimOpenConns`.
//!
//! Two deliberate deviations from go-libp2p, both making trims more conservative:
//!
//! * The grace period applies to every connection, not only to the peer's first one: a
//!   peer that opened a new connection within the grace period is not a candidate.
//! * A peer whose connections would take the candidates below the low watermark is skipped
//!   (later, smaller peers may still be trimmed), where go closes it and overshoots.
//!   A trim therefore never takes the connection count below the low watermark.
//!
//! # The flood rule
//!
//! go-libp2p's grace period shelters every new connection for a minute, so a flood of
//! connections from fresh identities is bounded only by the resource manager: thousands of
//! connections can sit there until the grace period ends, taking the inbound slots honest
//! peers need. meshwire adds one rule ([`Config::flood_headroom`], on by default): while the
//! connection count is above `high_water + flood_headroom`, *flood candidates* — peers
//! connected only inbound, with no tag, no decaying value and no protection, still in their
//! grace period — are closed, **newest first**, until the count is back at that limit. The
//! rule runs at every [`ConnManager::handle_timeout`], without waiting for the silence
//! period ([`ConnManager::poll_timeout`] asks for a call at once after an inbound
//! connection crosses the limit), and is counted in
//! [`ConnMgrMetrics::connections_flood_trimmed`] and [`BasicConnMgr::flood_trimmed`].
//!
//! Why newest first: every peer that was connected before a flood began — whatever its age,
//! tagged or not — is older than the flood's connections, so a flood can only churn its own
//! connections and cannot displace the peers we already had by opening more. Oldest first
//! would let a flood push out every recent honest newcomer (and, at the grace period's end,
//! the ordinary trim would meet only the flood's survivors). The price: while a flood goes
//! on, an untagged honest newcomer dialing in is as new as the flood and may be closed with
//! it, which is what a hard inbound limit would do too; our own dials, tagged peers (kad
//! tags its routing-table peers) and protected peers are never flood candidates. Explicit
//! trims ([`ConnManager::trim_open_conns`]) keep go-libp2p's semantics and ignore the rule.
//!
//! # Time
//!
//! Every method that can depend on time takes `now`. The manager keeps the latest `now` it
//! was given as its clock and uses it where go-libp2p reads the clock in methods without a
//! time argument (the first-seen time of peers tagged before they connect, the time of
//! decaying-tag bumps and registrations). Instants going backwards are ignored.
//!
//! # Use from an async swarm
//!
//! The swarm owns the manager (or a [`ConnManagerHandle`] to it), calls
//! [`ConnManager::handle_timeout`] whenever its timer reaches [`ConnManager::poll_timeout`]
//! (and, if it likes, right after reporting new connections), and closes what is returned:
//! the sans-IO time vocabulary the behaviours' engines use too. [`BasicConnMgr`]'s
//! `poll_timeout` is never more than one check interval after the latest `now`, so changes
//! made through a handle (a new decaying tag, say) are picked up within that time even if
//! the swarm slept on an older timeout.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod basic;
pub mod config;
pub mod decay;
pub mod handle;
pub mod metrics;
pub mod null;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use basic::{BasicConnMgr, CmInfo};
pub use config::{Config, ConnMgrError};
pub use decay::{
    bump_overwrite, bump_sum_bounded, bump_sum_unbounded, decay_expire_when_inactive, decay_fixed,
    decay_linear, decay_none, BumpFn, DecayFn, DecayingTagId, DecayingValue,
};
pub use handle::{ConnManagerHandle, DynConnManager, MAX_QUEUED_CLOSES};
pub use meshwire_core::{ConnectionId, Direction, PeerId};
pub use metrics::ConnMgrMetrics;
pub use null::NullConnMgr;

/// Connections to close, grouped by peer: what trims return. The caller closes them.
pub type Trimmed = Vec<(PeerId, Vec<ConnectionId>)>;

/// Metadata recorded for a peer, returned by [`ConnManager::get_tag_info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    /// When the manager started tracking the peer: its first connection, or its first tag if
    /// it was tagged before connecting (reset when it then connects).
    pub first_seen: Instant,
    /// Sum of all tag values, ordinary and decaying (saturated to the `i32` range).
    pub value: i32,
    /// Value of each tag; decaying tags appear under their names.
    pub tags: HashMap<String, i32>,
    /// Each tracked connection and the time it was opened.
    pub conns: HashMap<ConnectionId, Instant>,
}

/// A connection manager: tracks connections, tags and protections, and decides which
/// connections to close. See the [crate docs](crate) for the trimming rules of
/// [`BasicConnMgr`].
pub trait ConnManager: Send {
    /// Sets `tag` of `peer` to `value`. Tagging a peer that has no connection creates a
    /// temporary entry that becomes the peer's entry when it connects.
    fn tag_peer(&mut self, peer: PeerId, tag: &str, value: i32);

    /// Removes `tag` from `peer`. Harmless if the peer or the tag is unknown.
    fn untag_peer(&mut self, peer: PeerId, tag: &str);

    /// Sets `tag` of `peer` to `f(current)`, where `current` is the tag's value or 0.
    fn upsert_tag(&mut self, peer: PeerId, tag: &str, f: &mut dyn FnMut(i32) -> i32);

    /// The metadata of `peer`, or `None` if the manager does not track it.
    fn get_tag_info(&self, peer: PeerId) -> Option<TagInfo>;

    /// Runs a trim now, regardless of the high watermark and the silence period, and returns
    /// the connections to close.
    fn trim_open_conns(&mut self, now: Instant) -> Trimmed;

    /// Reports that connection `conn` to `peer` opened at `now`.
    fn notify_connected(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        direction: Direction,
        now: Instant,
    );

    /// Reports that connection `conn` to `peer` closed. Unknown connections are ignored.
    fn notify_disconnected(&mut self, peer: PeerId, conn: ConnectionId, now: Instant);

    /// Reports that connection `conn` to `peer` now has `streams` open streams (a hint for
    /// the trim order).
    fn notify_streams(&mut self, peer: PeerId, conn: ConnectionId, streams: usize);

    /// Protects `peer` from trimming under `tag`. Idempotent per tag, not reference-counted.
    fn protect(&mut self, peer: PeerId, tag: &str);

    /// Removes the protection of `peer` under `tag`; returns whether the peer is still
    /// protected under another tag.
    fn unprotect(&mut self, peer: PeerId, tag: &str) -> bool;

    /// Whether `peer` is protected under `tag`, or under any tag when `tag` is `None`.
    fn is_protected(&self, peer: PeerId, tag: Option<&str>) -> bool;

    /// Stops background work: [`handle_timeout`](Self::handle_timeout) does nothing
    /// afterwards and [`poll_timeout`](Self::poll_timeout) returns `None`.
    fn close(&mut self);

    /// Runs the background work due at `now` (decay ticks, an automatic trim) and returns
    /// the connections to close.
    fn handle_timeout(&mut self, now: Instant) -> Trimmed;

    /// When [`handle_timeout`](Self::handle_timeout) should be called next, or `None` if never.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Decaying tags (go-libp2p's `connmgr.Decayer`). See [`decay`].
pub trait Decayer: ConnManager {
    /// Registers a decaying tag called `name`, decayed by `decay` every `interval` (raised
    /// to the decay resolution if shorter) and bumped with `bump`. Its first decay is one
    /// interval after the latest resolution tick.
    ///
    /// # Errors
    ///
    /// [`ConnMgrError::DuplicateDecayingTag`] if a registered tag has this name,
    /// [`ConnMgrError::Closed`] after [`ConnManager::close`].
    fn register_decaying_tag(
        &mut self,
        name: &str,
        interval: Duration,
        decay: DecayFn,
        bump: BumpFn,
    ) -> Result<DecayingTagId, ConnMgrError>;

    /// Bumps `peer`'s value of `tag` by `delta` (through the tag's [`BumpFn`]). Creates a
    /// temporary entry for a peer without connections.
    ///
    /// # Errors
    ///
    /// [`ConnMgrError::DecayingTagClosed`], [`ConnMgrError::UnknownDecayingTag`] or
    /// [`ConnMgrError::Closed`].
    fn bump(&mut self, peer: PeerId, tag: DecayingTagId, delta: i32) -> Result<(), ConnMgrError>;

    /// Removes `peer`'s value of `tag`. Harmless if the peer has none.
    ///
    /// # Errors
    ///
    /// As for [`bump`](Self::bump).
    fn remove_decaying(&mut self, peer: PeerId, tag: DecayingTagId) -> Result<(), ConnMgrError>;

    /// Closes `tag`: removes its values from all peers and refuses further bumps. Closing a
    /// closed tag again is harmless.
    ///
    /// # Errors
    ///
    /// [`ConnMgrError::UnknownDecayingTag`] for an id this manager never handed out.
    fn close_decaying_tag(&mut self, tag: DecayingTagId) -> Result<(), ConnMgrError>;
}
