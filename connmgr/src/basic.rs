//! [`BasicConnMgr`], the watermark-based connection manager.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::decay::{advance_past, grid_ceil, grid_floor, TagState};
use crate::{
    BumpFn, Config, ConnManager, ConnMgrError, ConnMgrMetrics, ConnectionId, DecayFn, Decayer,
    DecayingTagId, DecayingValue, Direction, PeerId, TagInfo, Trimmed,
};

/// A connection manager that trims connections when their count reaches the high watermark,
/// down to the low watermark, keeping the peers with the highest tag values.
///
/// See the [crate docs](crate) for the exact rules, and [`Config`] for the settings. Trims
/// return the connections to close and stop tracking them at once; the caller closes them,
/// and the disconnect notifications that follow are ignored.
pub struct BasicConnMgr {
    cfg: Config,
    check_interval: Duration,
    /// Latest `now` given to any method.
    clock: Instant,
    peers: HashMap<PeerId, PeerEntry>,
    protected: HashMap<PeerId, HashSet<String>>,
    conn_count: usize,
    connected_peers: usize,
    last_trim: Option<Instant>,
    last_auto_trim: Option<Instant>,
    closed: bool,
    /// An inbound connection took the count above the flood limit since the last
    /// `handle_timeout`: the flood rule is due at once.
    flood_pending: bool,
    decay_epoch: Instant,
    decaying_tags: BTreeMap<DecayingTagId, TagState>,
    next_tag_id: u64,
    /// Number of decaying values held by all peers.
    decaying_values: usize,
    metrics: Option<ConnMgrMetrics>,
    /// Connections closed by the flood rule so far.
    flood_trimmed: u64,
}

/// Configuration and status of a [`BasicConnMgr`] (go-libp2p's `CMInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmInfo {
    /// The low watermark.
    pub low_water: usize,
    /// The high watermark.
    pub high_water: usize,
    /// When the last trim (explicit or automatic) ran, if any.
    pub last_trim: Option<Instant>,
    /// The grace period.
    pub grace_period: Duration,
    /// The number of tracked connections.
    pub conn_count: usize,
}

struct PeerEntry {
    first_seen: Instant,
    /// Tagged before any connection was reported.
    temp: bool,
    /// Sum of all tag values (ordinary and decaying).
    value: i64,
    tags: HashMap<String, i32>,
    decaying: Vec<DecayingValue>,
    conns: Vec<ConnEntry>,
}

impl PeerEntry {
    fn new(first_seen: Instant, temp: bool) -> Self {
        PeerEntry {
            first_seen,
            temp,
            value: 0,
            tags: HashMap::new(),
            decaying: Vec::new(),
            conns: Vec::new(),
        }
    }
}

struct ConnEntry {
    id: ConnectionId,
    opened: Instant,
    direction: Direction,
    streams: usize,
}

/// A trim candidate; the derived order is the trim order (fields compared top to bottom).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    /// 0 for temporary entries, which go first.
    rank: u8,
    value: i64,
    /// Peers without any stream first.
    has_streams: bool,
    /// Peers with an inbound connection first.
    outbound_only: bool,
    streams: usize,
    peer: PeerId,
    nconns: usize,
}

impl BasicConnMgr {
    /// Creates a manager with configuration `cfg`; `now` starts its clock and the grid of
    /// decay ticks.
    ///
    /// # Errors
    ///
    /// The errors of [`Config::validate`].
    pub fn new(cfg: Config, now: Instant) -> Result<Self, ConnMgrError> {
        cfg.validate()?;
        Ok(BasicConnMgr {
            check_interval: cfg.check_interval(),
            cfg,
            clock: now,
            peers: HashMap::new(),
            protected: HashMap::new(),
            conn_count: 0,
            connected_peers: 0,
            last_trim: None,
            last_auto_trim: None,
            closed: false,
            flood_pending: false,
            decay_epoch: now,
            decaying_tags: BTreeMap::new(),
            next_tag_id: 0,
            decaying_values: 0,
            metrics: None,
            flood_trimmed: 0,
        })
    }

    /// Reports into `metrics` from now on (the gauges are set to the current state).
    #[must_use]
    pub fn with_metrics(mut self, metrics: ConnMgrMetrics) -> Self {
        self.metrics = Some(metrics);
        self.update_gauges();
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The number of tracked connections.
    pub fn conn_count(&self) -> usize {
        self.conn_count
    }

    /// The number of peers with at least one tracked connection.
    pub fn peer_count(&self) -> usize {
        self.connected_peers
    }

    /// The tags `peer` is protected under, sorted (empty if it is not protected): what a
    /// status page shows next to [`ConnManager::is_protected`], which only answers yes or no.
    pub fn protections(&self, peer: PeerId) -> Vec<String> {
        let mut tags: Vec<String> = self
            .protected
            .get(&peer)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// Configuration and status, like go-libp2p's `GetInfo`.
    pub fn info(&self) -> CmInfo {
        CmInfo {
            low_water: self.cfg.low_water,
            high_water: self.cfg.high_water,
            last_trim: self.last_trim,
            grace_period: self.cfg.grace_period,
            conn_count: self.conn_count,
        }
    }

    fn observe(&mut self, now: Instant) {
        if now > self.clock {
            self.clock = now;
        }
    }

    fn trimming_enabled(&self) -> bool {
        self.cfg.low_water != 0 && self.cfg.high_water != 0
    }

    fn update_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.connections
                .set(i64::try_from(self.conn_count).unwrap_or(i64::MAX));
            m.peers
                .set(i64::try_from(self.connected_peers).unwrap_or(i64::MAX));
            m.protected_peers
                .set(i64::try_from(self.protected.len()).unwrap_or(i64::MAX));
        }
    }

    /// The peer's entry, created as a temporary entry (first seen now) if it has none.
    fn entry_for(&mut self, peer: PeerId) -> &mut PeerEntry {
        let clock = self.clock;
        self.peers
            .entry(peer)
            .or_insert_with(|| PeerEntry::new(clock, true))
    }

    fn remove_peer(&mut self, peer: &PeerId) -> Option<PeerEntry> {
        let entry = self.peers.remove(peer)?;
        if !entry.temp {
            self.connected_peers -= 1;
        }
        self.conn_count -= entry.conns.len();
        self.decaying_values -= entry.decaying.len();
        Some(entry)
    }

    /// Selects the connections to close at `now`, forgets them and their peers, and returns
    /// them.
    fn trim(&mut self, now: Instant) -> Trimmed {
        self.last_trim = Some(now);
        if let Some(m) = &self.metrics {
            m.trims.inc();
        }
        let low = self.cfg.low_water;
        if !self.trimming_enabled() || self.conn_count <= low {
            return Vec::new();
        }
        // Nothing can be older than the grace period if `now - grace` predates the clock's
        // representable range.
        let Some(grace_start) = now.checked_sub(self.cfg.grace_period) else {
            return Vec::new();
        };

        let check_protected = !self.protected.is_empty();
        let mut candidates = Vec::with_capacity(self.peers.len());
        let mut candidate_conns = 0usize;
        let mut temps = 0usize;
        for (id, p) in &self.peers {
            if p.first_seen > grace_start || (check_protected && self.protected.contains_key(id)) {
                continue;
            }
            let mut streams = 0usize;
            let mut inbound = false;
            let mut young = false;
            for c in &p.conns {
                if c.opened > grace_start {
                    young = true;
                    break;
                }
                streams = streams.saturating_add(c.streams);
                inbound |= c.direction.is_inbound();
            }
            if young {
                continue;
            }
            temps += usize::from(p.temp);
            candidate_conns += p.conns.len();
            candidates.push(Candidate {
                rank: u8::from(!p.temp),
                value: p.value,
                has_streams: streams > 0,
                outbound_only: !inbound,
                streams,
                peer: *id,
                nconns: p.conns.len(),
            });
        }
        if candidate_conns <= low {
            debug!(candidate_conns, low, "trim: too few trimmable connections");
            return Vec::new();
        }
        let mut target = candidate_conns - low;

        // Every non-temporary candidate holds at least one connection, so the first
        // `temps + target` candidates suffice unless some must be skipped (see below).
        let k = temps.saturating_add(target).min(candidates.len());
        if k < candidates.len() {
            candidates.select_nth_unstable(k);
        }
        candidates[..k].sort_unstable();

        let mut out: Trimmed = Vec::with_capacity(target.min(candidates.len()));
        let mut closed = 0usize;
        let mut next = 0usize;
        while target > 0 && next < candidates.len() {
            if next == k {
                candidates[k..].sort_unstable();
            }
            let c = &candidates[next];
            next += 1;
            if c.nconns > target {
                // Closing all of this peer's connections would go below the low watermark.
                continue;
            }
            let Some(entry) = self.remove_peer(&c.peer) else {
                continue;
            };
            if entry.conns.is_empty() {
                debug!(peer = %c.peer, "trim: dropping temporary entry");
                continue;
            }
            target -= entry.conns.len();
            closed += entry.conns.len();
            debug!(peer = %c.peer, value = c.value, conns = entry.conns.len(), "trim: closing peer");
            out.push((c.peer, entry.conns.into_iter().map(|c| c.id).collect()));
        }
        if let Some(m) = &self.metrics {
            m.connections_trimmed.inc_by(closed as u64);
        }
        self.update_gauges();
        debug!(
            closed,
            peers = out.len(),
            remaining = self.conn_count,
            "trim done"
        );
        out
    }

    /// The flood rule (see [`Config::flood_headroom`]): while the count is above the flood
    /// limit, closes the newest flood candidates — inbound-only peers without tags,
    /// decaying values or protection, still in their grace period — until it is not.
    fn trim_flood(&mut self, now: Instant) -> Trimmed {
        let Some(limit) = self.cfg.flood_limit() else {
            return Vec::new();
        };
        if self.conn_count <= limit {
            return Vec::new();
        }
        // Where `now - grace` predates the clock's range, every connection is in its grace
        // period.
        let grace_start = now.checked_sub(self.cfg.grace_period);
        let young = |t: Instant| grace_start.is_none_or(|g| t > g);
        let check_protected = !self.protected.is_empty();
        // (newest connection opened, its id, peer, connections): newest first.
        let mut candidates: Vec<(Instant, ConnectionId, PeerId, usize)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !p.temp
                    && p.tags.is_empty()
                    && p.decaying.is_empty()
                    && !(check_protected && self.protected.contains_key(id))
                    && p.conns.iter().all(|c| c.direction.is_inbound())
                    && (young(p.first_seen) || p.conns.iter().any(|c| young(c.opened)))
            })
            .filter_map(|(id, p)| {
                let newest = p.conns.iter().max_by_key(|c| (c.opened, c.id))?;
                Some((newest.opened, newest.id, *id, p.conns.len()))
            })
            .collect();
        let mut excess = self.conn_count - limit;
        let k = excess.min(candidates.len());
        if k < candidates.len() {
            candidates.select_nth_unstable_by(k, |a, b| b.cmp(a));
        }
        candidates[..k].sort_unstable_by(|a, b| b.cmp(a));
        let mut out: Trimmed = Vec::new();
        let mut closed = 0usize;
        let mut next = 0usize;
        while excess > 0 && next < candidates.len() {
            if next == k {
                candidates[k..].sort_unstable_by(|a, b| b.cmp(a));
            }
            let (_, _, peer, nconns) = candidates[next];
            next += 1;
            if nconns > excess {
                // Closing all of this peer's connections would go below the limit.
                continue;
            }
            let Some(entry) = self.remove_peer(&peer) else {
                continue;
            };
            excess -= entry.conns.len();
            closed += entry.conns.len();
            out.push((peer, entry.conns.into_iter().map(|c| c.id).collect()));
        }
        if closed > 0 {
            if let Some(m) = &self.metrics {
                m.connections_trimmed.inc_by(closed as u64);
                m.connections_flood_trimmed.inc_by(closed as u64);
            }
            self.flood_trimmed += closed as u64;
            self.update_gauges();
            debug!(
                closed,
                limit,
                remaining = self.conn_count,
                "flood rule: closed the newest untagged inbound connections"
            );
        }
        out
    }

    /// Connections closed by the flood rule so far (see [`Config::flood_headroom`]).
    pub fn flood_trimmed(&self) -> u64 {
        self.flood_trimmed
    }

    /// The next grid time at which some decaying tag is due.
    fn next_decay_at(&self) -> Option<Instant> {
        self.decaying_tags
            .values()
            .map(|t| grid_ceil(self.decay_epoch, self.cfg.decay_resolution, t.next_tick))
            .min()
    }

    /// Applies every decay tick due at or before `now`, in order.
    fn run_decay(&mut self, now: Instant) {
        let mut due: Vec<DecayingTagId> = Vec::new();
        while let Some(at) = self.next_decay_at() {
            if at > now {
                break;
            }
            if self.decaying_values == 0 {
                // Nobody holds a value: only the schedules move.
                for t in self.decaying_tags.values_mut() {
                    let tick = grid_ceil(self.decay_epoch, self.cfg.decay_resolution, t.next_tick);
                    if tick <= now {
                        t.next_tick = advance_past(t.next_tick, t.interval, now);
                    }
                }
                continue;
            }
            due.clear();
            due.extend(
                self.decaying_tags
                    .iter()
                    .filter(|(_, t)| t.next_tick <= at)
                    .map(|(id, _)| *id),
            );
            let tags = &self.decaying_tags;
            let mut removed = 0usize;
            for p in self.peers.values_mut() {
                if p.decaying.is_empty() {
                    continue;
                }
                let mut delta = 0i64;
                p.decaying.retain_mut(|v| {
                    if !due.contains(&v.tag) {
                        return true;
                    }
                    let Some(state) = tags.get(&v.tag) else {
                        return true;
                    };
                    let (after, rm) = (state.decay)(v, at);
                    if rm {
                        delta -= i64::from(v.value);
                        removed += 1;
                        false
                    } else {
                        delta += i64::from(after) - i64::from(v.value);
                        v.value = after;
                        v.last_visit = at;
                        true
                    }
                });
                p.value += delta;
            }
            self.decaying_values -= removed;
            for id in &due {
                if let Some(t) = self.decaying_tags.get_mut(id) {
                    t.next_tick = advance_past(t.next_tick, t.interval, t.next_tick);
                }
            }
        }
    }
}

impl fmt::Debug for BasicConnMgr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicConnMgr")
            .field("config", &self.cfg)
            .field("conn_count", &self.conn_count)
            .field("peers", &self.peers.len())
            .field("protected", &self.protected.len())
            .field("decaying_tags", &self.decaying_tags.len())
            .field("last_trim", &self.last_trim)
            .field("closed", &self.closed)
            .finish()
    }
}

impl ConnManager for BasicConnMgr {
    fn tag_peer(&mut self, peer: PeerId, tag: &str, value: i32) {
        let p = self.entry_for(peer);
        let old = match p.tags.get_mut(tag) {
            Some(v) => std::mem::replace(v, value),
            None => {
                p.tags.insert(tag.to_owned(), value);
                0
            }
        };
        p.value += i64::from(value) - i64::from(old);
    }

    fn untag_peer(&mut self, peer: PeerId, tag: &str) {
        let Some(p) = self.peers.get_mut(&peer) else {
            debug!(%peer, tag, "untag of an untracked peer");
            return;
        };
        if let Some(old) = p.tags.remove(tag) {
            p.value -= i64::from(old);
        }
    }

    fn upsert_tag(&mut self, peer: PeerId, tag: &str, f: &mut dyn FnMut(i32) -> i32) {
        let p = self.entry_for(peer);
        let (old, new) = match p.tags.get_mut(tag) {
            Some(v) => {
                let old = *v;
                *v = f(old);
                (old, *v)
            }
            None => {
                let new = f(0);
                p.tags.insert(tag.to_owned(), new);
                (0, new)
            }
        };
        p.value += i64::from(new) - i64::from(old);
    }

    fn get_tag_info(&self, peer: PeerId) -> Option<TagInfo> {
        let p = self.peers.get(&peer)?;
        let mut tags = p.tags.clone();
        for v in &p.decaying {
            if let Some(t) = self.decaying_tags.get(&v.tag) {
                tags.insert(t.name.clone(), v.value);
            }
        }
        Some(TagInfo {
            first_seen: p.first_seen,
            value: i32::try_from(p.value).unwrap_or(if p.value < 0 { i32::MIN } else { i32::MAX }),
            tags,
            conns: p.conns.iter().map(|c| (c.id, c.opened)).collect(),
        })
    }

    fn trim_open_conns(&mut self, now: Instant) -> Trimmed {
        self.observe(now);
        if !self.closed {
            self.run_decay(now);
        }
        self.trim(now)
    }

    fn notify_connected(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        direction: Direction,
        now: Instant,
    ) {
        self.observe(now);
        let mut new_peer = false;
        let p = match self.peers.entry(peer) {
            Entry::Occupied(o) => {
                let p = o.into_mut();
                if p.temp {
                    // Tagged before connecting: the entry becomes real, first seen now.
                    p.temp = false;
                    p.first_seen = now;
                    new_peer = true;
                }
                p
            }
            Entry::Vacant(v) => {
                new_peer = true;
                v.insert(PeerEntry::new(now, false))
            }
        };
        if p.conns.iter().any(|c| c.id == conn) {
            debug!(%peer, %conn, "connected notification for a tracked connection");
            return;
        }
        p.conns.push(ConnEntry {
            id: conn,
            opened: now,
            direction,
            streams: 0,
        });
        self.conn_count += 1;
        if new_peer {
            self.connected_peers += 1;
        }
        if direction.is_inbound() && self.cfg.flood_limit().is_some_and(|l| self.conn_count > l) {
            self.flood_pending = true;
        }
        self.update_gauges();
    }

    fn notify_disconnected(&mut self, peer: PeerId, conn: ConnectionId, now: Instant) {
        self.observe(now);
        let Some(p) = self.peers.get_mut(&peer) else {
            debug!(%peer, %conn, "disconnected notification for an untracked peer");
            return;
        };
        let Some(i) = p.conns.iter().position(|c| c.id == conn) else {
            debug!(%peer, %conn, "disconnected notification for an untracked connection");
            return;
        };
        p.conns.swap_remove(i);
        self.conn_count -= 1;
        if p.conns.is_empty() {
            self.remove_peer(&peer);
        }
        self.update_gauges();
    }

    fn notify_streams(&mut self, peer: PeerId, conn: ConnectionId, streams: usize) {
        if let Some(c) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.conns.iter_mut().find(|c| c.id == conn))
        {
            c.streams = streams;
        }
    }

    fn protect(&mut self, peer: PeerId, tag: &str) {
        let tags = self.protected.entry(peer).or_default();
        if !tags.contains(tag) {
            tags.insert(tag.to_owned());
        }
        self.update_gauges();
    }

    fn unprotect(&mut self, peer: PeerId, tag: &str) -> bool {
        let Some(tags) = self.protected.get_mut(&peer) else {
            return false;
        };
        tags.remove(tag);
        if tags.is_empty() {
            self.protected.remove(&peer);
            self.update_gauges();
            return false;
        }
        true
    }

    fn is_protected(&self, peer: PeerId, tag: Option<&str>) -> bool {
        match (self.protected.get(&peer), tag) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(tags), Some(tag)) => tags.contains(tag),
        }
    }

    fn close(&mut self) {
        self.closed = true;
    }

    fn handle_timeout(&mut self, now: Instant) -> Trimmed {
        self.observe(now);
        if self.closed {
            return Vec::new();
        }
        self.run_decay(now);
        self.flood_pending = false;
        let mut out = self.trim_flood(now);
        let due = self
            .last_auto_trim
            .is_none_or(|t| now.saturating_duration_since(t) >= self.check_interval);
        if self.trimming_enabled() && self.conn_count >= self.cfg.high_water && due {
            self.last_auto_trim = Some(now);
            out.extend(self.trim(now));
        }
        out
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let heartbeat = self
            .clock
            .checked_add(self.check_interval)
            .unwrap_or(self.clock);
        let mut wake = heartbeat;
        if self.flood_pending {
            wake = self.clock;
        }
        if let Some(d) = self.next_decay_at() {
            wake = wake.min(d);
        }
        if self.trimming_enabled() && self.conn_count >= self.cfg.high_water {
            let due = match self.last_auto_trim {
                Some(t) => t.checked_add(self.check_interval).unwrap_or(t),
                None => self.clock,
            };
            wake = wake.min(due.max(self.clock));
        }
        Some(wake)
    }
}

impl Decayer for BasicConnMgr {
    fn register_decaying_tag(
        &mut self,
        name: &str,
        interval: Duration,
        decay: DecayFn,
        bump: BumpFn,
    ) -> Result<DecayingTagId, ConnMgrError> {
        if self.closed {
            return Err(ConnMgrError::Closed);
        }
        if self.decaying_tags.values().any(|t| t.name == name) {
            return Err(ConnMgrError::DuplicateDecayingTag(name.to_owned()));
        }
        let resolution = self.cfg.decay_resolution;
        if interval < resolution {
            debug!(
                name,
                ?interval,
                ?resolution,
                "decay interval raised to the resolution"
            );
        }
        let interval = interval.max(resolution);
        let last_tick = grid_floor(self.decay_epoch, resolution, self.clock);
        let next_tick = last_tick.checked_add(interval).unwrap_or(last_tick);
        let id = DecayingTagId(self.next_tag_id);
        self.next_tag_id += 1;
        self.decaying_tags.insert(
            id,
            TagState {
                name: name.to_owned(),
                interval,
                next_tick,
                decay,
                bump,
            },
        );
        Ok(id)
    }

    fn bump(&mut self, peer: PeerId, tag: DecayingTagId, delta: i32) -> Result<(), ConnMgrError> {
        if self.closed {
            return Err(ConnMgrError::Closed);
        }
        self.check_tag(tag)?;
        let now = self.clock;
        let mut added = false;
        let p = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerEntry::new(now, true));
        let i = match p.decaying.iter().position(|v| v.tag == tag) {
            Some(i) => i,
            None => {
                p.decaying.push(DecayingValue {
                    tag,
                    peer,
                    added: now,
                    last_visit: now,
                    last_bump: now,
                    value: 0,
                });
                added = true;
                p.decaying.len() - 1
            }
        };
        let v = &mut p.decaying[i];
        let old = v.value;
        if let Some(state) = self.decaying_tags.get(&tag) {
            v.value = (state.bump)(v, delta);
        }
        v.last_visit = now;
        v.last_bump = now;
        p.value += i64::from(v.value) - i64::from(old);
        if added {
            self.decaying_values += 1;
        }
        Ok(())
    }

    fn remove_decaying(&mut self, peer: PeerId, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        if self.closed {
            return Err(ConnMgrError::Closed);
        }
        self.check_tag(tag)?;
        if let Some(p) = self.peers.get_mut(&peer) {
            if let Some(i) = p.decaying.iter().position(|v| v.tag == tag) {
                let v = p.decaying.swap_remove(i);
                p.value -= i64::from(v.value);
                self.decaying_values -= 1;
            }
        }
        Ok(())
    }

    fn close_decaying_tag(&mut self, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        match self.check_tag(tag) {
            Ok(()) => {}
            Err(ConnMgrError::DecayingTagClosed(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.decaying_tags.remove(&tag);
        let mut removed = 0usize;
        for p in self.peers.values_mut() {
            if let Some(i) = p.decaying.iter().position(|v| v.tag == tag) {
                let v = p.decaying.swap_remove(i);
                p.value -= i64::from(v.value);
                removed += 1;
            }
        }
        self.decaying_values -= removed;
        Ok(())
    }
}

impl BasicConnMgr {
    fn check_tag(&self, tag: DecayingTagId) -> Result<(), ConnMgrError> {
        if self.decaying_tags.contains_key(&tag) {
            Ok(())
        } else if tag.0 < self.next_tag_id {
            Err(ConnMgrError::DecayingTagClosed(tag))
        } else {
            Err(ConnMgrError::UnknownDecayingTag(tag))
        }
    }
}
