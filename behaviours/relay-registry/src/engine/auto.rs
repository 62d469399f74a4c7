//! Auto relay: which relays to hold a reservation on, and when to move.
//!
//! States of a wanted relay: chosen and asked for (`Reserving`, at most
//! [`AutoRelayConfig::reserve_timeout`]), then `Reserved`. Any failure drops it and the next
//! best relay is asked for at once; a loss of a `Reserved` one is remembered until a new
//! reservation replaces it ([`RegistryEvent::FailedOver`] with the time in between).
//!
//! An attempt still `Reserving` after [`AutoRelayConfig::hedge_after`] is hedged: it stops
//! counting toward the wanted number, so the next best relay is asked too. The first
//! acceptances fill the wanted number; once it is reached the attempts still under way are
//! released, and a surplus acceptance is released at once. Attempts in flight are at most
//! twice the wanted number.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use meshwire_core::PeerId;

use super::{
    with_p2p, Action, AutoRelayConfig, ConfigError, FindOpts, RegistryEngine, RegistryEvent,
    ReservationFailure,
};

/// Where a reservation of auto relay is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationState {
    /// Asked for, not yet accepted.
    Reserving,
    /// Held.
    Reserved,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub(super) state: ReservationState,
    pub(super) since: Instant,
    /// A `Reserving` attempt past `hedge_after`: another relay is asked alongside.
    pub(super) hedged: bool,
}

#[derive(Debug, Default)]
pub(super) struct AutoState {
    pub(super) config: Option<AutoRelayConfig>,
    pub(super) held: BTreeMap<PeerId, Held>,
    /// Reservations lost and not yet replaced, oldest first (at most `reservations`).
    lost: VecDeque<(PeerId, Instant)>,
    /// Until when the first selection may wait for its candidates' probes.
    first_wait: Option<Instant>,
    selected_once: bool,
    retry_at: Option<Instant>,
    /// `NoRelaysAvailable` was reported and nothing changed since.
    starved: bool,
}

impl RegistryEngine {
    /// Turns auto relay on (with `config`) or off (`None`: every reservation is released).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for settings that cannot work.
    pub fn set_auto_relay(
        &mut self,
        now: Instant,
        config: Option<AutoRelayConfig>,
    ) -> Result<(), ConfigError> {
        if let Some(c) = &config {
            c.validate()?;
        }
        if config.is_none() {
            let held: Vec<PeerId> = self.auto.held.keys().copied().collect();
            for relay in held {
                self.actions.push_back(Action::Release { relay });
            }
            self.auto = AutoState::default();
            self.update_reservation_gauge();
            return Ok(());
        }
        self.auto.config = config.clone();
        self.config.auto_relay = config;
        self.fill(now);
        Ok(())
    }

    /// The relays auto relay holds or is reserving on.
    pub fn auto_relays(&self) -> Vec<(PeerId, ReservationState)> {
        self.auto.held.iter().map(|(p, h)| (*p, h.state)).collect()
    }

    /// The relays auto relay holds a reservation on.
    pub fn reserved_relays(&self) -> Vec<PeerId> {
        self.auto
            .held
            .iter()
            .filter(|(_, h)| h.state == ReservationState::Reserved)
            .map(|(p, _)| *p)
            .collect()
    }

    /// A reservation on `relay` was accepted (or renewed).
    pub fn handle_reservation_accepted(&mut self, now: Instant, relay: &PeerId) {
        let wanted = self.auto.config.as_ref().map_or(0, |c| c.reservations);
        let Some(h) = self.auto.held.get_mut(relay) else {
            return;
        };
        if h.state == ReservationState::Reserved {
            return;
        }
        h.state = ReservationState::Reserved;
        h.since = now;
        let reserved = self.reserved_count();
        if reserved > wanted {
            // A hedge that lost the race.
            self.auto.held.remove(relay);
            self.actions.push_back(Action::Release { relay: *relay });
            return;
        }
        if reserved == wanted {
            let racing: Vec<PeerId> = self
                .auto
                .held
                .iter()
                .filter(|(_, h)| h.state == ReservationState::Reserving)
                .map(|(p, _)| *p)
                .collect();
            for p in racing {
                self.auto.held.remove(&p);
                self.actions.push_back(Action::Release { relay: p });
            }
        }
        self.event(RegistryEvent::ReservationAcquired { relay: *relay });
        if let Some((from, at)) = self.auto.lost.pop_front() {
            let elapsed = now.saturating_duration_since(at);
            if let Some(m) = &self.metrics {
                m.failed_over(elapsed);
            }
            self.event(RegistryEvent::FailedOver {
                from,
                to: *relay,
                elapsed,
            });
        }
        self.update_reservation_gauge();
    }

    /// A reservation on `relay` failed or was lost: the relay is marked (full, or backed off
    /// for [`failure_backoff`](super::RegistryConfig::failure_backoff)) and another is chosen.
    pub fn handle_reservation_failed(
        &mut self,
        now: Instant,
        relay: &PeerId,
        reason: ReservationFailure,
    ) {
        let Some(h) = self.auto.held.remove(relay) else {
            return;
        };
        let backoff = self.config.failure_backoff;
        if let Some(e) = self.index.get_mut(relay) {
            match reason {
                ReservationFailure::Full => e.full = true,
                _ => e.down_until = Some(now + backoff),
            }
        }
        if h.state == ReservationState::Reserved {
            self.event(RegistryEvent::ReservationLost {
                relay: *relay,
                reason,
            });
            let wanted = self.auto.config.as_ref().map_or(0, |c| c.reservations);
            self.auto.lost.push_back((*relay, now));
            while self.auto.lost.len() > wanted {
                self.auto.lost.pop_front();
            }
        } else {
            self.event(RegistryEvent::ReservationFailed {
                relay: *relay,
                reason,
            });
        }
        self.update_reservation_gauge();
        self.fill(now);
    }

    fn reserved_count(&self) -> usize {
        self.auto
            .held
            .values()
            .filter(|h| h.state == ReservationState::Reserved)
            .count()
    }

    fn update_reservation_gauge(&self) {
        if let Some(m) = &self.metrics {
            m.reservations.set(self.reserved_count() as i64);
        }
    }

    /// Asks for reservations until `reservations` relays are held or being reserved on.
    pub(super) fn fill(&mut self, now: Instant) {
        let Some(cfg) = self.auto.config.clone() else {
            return;
        };
        let local = self.local;
        self.start_probes(now, &local);
        // Attempts past `hedge_after` do not count: their replacements are asked alongside.
        let have = self
            .auto
            .held
            .values()
            .filter(|h| h.state == ReservationState::Reserved || !h.hedged)
            .count();
        let room = (2 * cfg.reservations).saturating_sub(self.auto.held.len());
        let missing = cfg.reservations.saturating_sub(have).min(room);
        if missing == 0 {
            if have >= cfg.reservations {
                self.auto.retry_at = None;
                self.auto.starved = false;
            }
            return;
        }
        let opts = FindOpts {
            max_results: missing,
            exclude: self.auto.held.keys().copied().collect(),
            max_latency: None,
        };
        let ranked = self.ranked(now, &local, &opts);
        if !self.auto.selected_once && !ranked.is_empty() {
            // The first selection waits (a little) for the RTTs of its candidates.
            let until = *self.auto.first_wait.get_or_insert(now + cfg.probe_wait);
            if now < until && !self.probes.is_empty() {
                self.auto.retry_at = Some(until);
                return;
            }
        }
        for (relay, score) in ranked {
            self.auto.selected_once = true;
            self.auto.held.insert(
                relay.node_id,
                Held {
                    state: ReservationState::Reserving,
                    since: now,
                    hedged: false,
                },
            );
            self.actions.push_back(Action::Reserve {
                relay: relay.node_id,
                addr: with_p2p(&relay.endpoint, relay.node_id),
            });
            if let Some(m) = &self.metrics {
                m.selected("auto");
            }
            self.event(RegistryEvent::Reserving {
                relay: relay.node_id,
                score,
            });
        }
        let held = self
            .auto
            .held
            .values()
            .filter(|h| h.state == ReservationState::Reserved || !h.hedged)
            .count();
        if held < cfg.reservations {
            if !self.auto.starved {
                self.auto.starved = true;
                self.event(RegistryEvent::NoRelaysAvailable {
                    held,
                    wanted: cfg.reservations,
                });
            }
            self.auto.retry_at = Some(now + cfg.retry_interval);
        } else {
            self.auto.starved = false;
            self.auto.retry_at = None;
        }
    }

    pub(super) fn auto_timeout(&self) -> Option<Instant> {
        let cfg = self.auto.config.as_ref()?;
        let reserving = self
            .auto
            .held
            .values()
            .filter(|h| h.state == ReservationState::Reserving)
            .map(|h| {
                if h.hedged {
                    h.since + cfg.reserve_timeout
                } else {
                    h.since + cfg.hedge_after.min(cfg.reserve_timeout)
                }
            })
            .min();
        [reserving, self.auto.retry_at].into_iter().flatten().min()
    }

    pub(super) fn auto_handle_timeout(&mut self, now: Instant) {
        let Some(cfg) = self.auto.config.clone() else {
            return;
        };
        let late: Vec<PeerId> = self
            .auto
            .held
            .iter()
            .filter(|(_, h)| {
                h.state == ReservationState::Reserving && h.since + cfg.reserve_timeout <= now
            })
            .map(|(p, _)| *p)
            .collect();
        for relay in late {
            self.actions.push_back(Action::Release { relay });
            self.handle_reservation_failed(now, &relay, ReservationFailure::Timeout);
        }
        let mut hedge = false;
        for h in self.auto.held.values_mut() {
            if h.state == ReservationState::Reserving
                && !h.hedged
                && h.since + cfg.hedge_after <= now
            {
                h.hedged = true;
                hedge = true;
            }
        }
        if hedge || self.auto.retry_at.is_some_and(|t| t <= now) {
            self.auto.retry_at = None;
            self.fill(now);
        }
    }
}
