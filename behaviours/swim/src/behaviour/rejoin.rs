//! Seeds and rejoining: the seeds given to `join`, per realm, with their addresses, and the
//! periodic rejoin of a node that sees no live member in a realm.

use std::time::Instant;

use meshwire_core::PeerId;
use multiaddr::Multiaddr;

use super::config::{Error, MAX_SEEDS};
use super::metadata::bare_address_of;
use crate::engine::SwimEngine;
use crate::realm::Realm;
use crate::wire::MAX_ADDRESSES;

/// Members held dead (or former members) tried per rejoin, besides the seeds.
const REJOIN_FALLBACK: usize = 3;

/// Peers with their addresses.
pub(super) type PeerAddrs = Vec<(PeerId, Vec<Multiaddr>)>;

/// The seeds of every realm with their addresses (at most [`MAX_SEEDS`] per realm).
#[derive(Default)]
pub(super) struct Seeds(Vec<(Realm, PeerAddrs)>);

impl Seeds {
    /// `seeds` grouped by peer, each address without its `/p2p/` suffix, without `local`.
    ///
    /// # Errors
    ///
    /// [`Error::SeedAddress`] for an address whose `/p2p/` names another peer.
    pub(super) fn group(local: PeerId, seeds: &[(PeerId, Multiaddr)]) -> Result<PeerAddrs, Error> {
        let mut given: PeerAddrs = Vec::new();
        for (peer, addr) in seeds {
            let bare = bare_address_of(addr, *peer).ok_or_else(|| Error::SeedAddress {
                peer: *peer,
                addr: addr.clone(),
            })?;
            if *peer == local {
                continue;
            }
            match given.iter_mut().find(|(p, _)| p == peer) {
                Some((_, addrs)) => {
                    if !addrs.contains(&bare) {
                        addrs.push(bare);
                    }
                }
                None => given.push((*peer, vec![bare])),
            }
        }
        Ok(given)
    }

    /// Remembers `given` as seeds of `realm`.
    pub(super) fn add(&mut self, realm: &Realm, given: &PeerAddrs) {
        let index = match self.0.iter().position(|(r, _)| r == realm) {
            Some(i) => i,
            None => {
                self.0.push((realm.clone(), Vec::new()));
                self.0.len() - 1
            }
        };
        let known = &mut self.0[index].1;
        for (peer, addrs) in given {
            if let Some((_, old)) = known.iter_mut().find(|(p, _)| p == peer) {
                for a in addrs {
                    if !old.contains(a) && old.len() < MAX_ADDRESSES {
                        old.push(a.clone());
                    }
                }
            } else if known.len() < MAX_SEEDS {
                known.push((*peer, addrs.clone()));
            }
        }
    }

    /// Whether `peer` is a seed of some realm.
    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.0
            .iter()
            .any(|(_, seeds)| seeds.iter().any(|(p, _)| p == peer))
    }

    /// The addresses of `peer` as a seed (of any realm).
    fn addresses<'a>(&'a self, peer: &'a PeerId) -> impl Iterator<Item = &'a Multiaddr> {
        self.0
            .iter()
            .filter_map(move |(_, seeds)| seeds.iter().find(|(p, _)| p == peer))
            .flat_map(|(_, addrs)| addrs)
    }

    /// Rejoins every realm of `engine` in which it holds no live member, through the seeds
    /// of the realm (those for which `in_flight` says no push-pull is running) and up to
    /// [`REJOIN_FALLBACK`] members it last knew.
    pub(super) fn rejoin(
        &self,
        engine: &mut SwimEngine,
        now: Instant,
        in_flight: impl Fn(&Realm, &PeerId) -> bool,
    ) {
        let realms: Vec<Realm> = engine.realms().cloned().collect();
        for realm in realms {
            if engine.live_member_count(&realm) > 0 {
                continue;
            }
            let ids: Vec<PeerId> = self
                .0
                .iter()
                .filter(|(r, _)| *r == realm)
                .flat_map(|(_, seeds)| seeds.iter().map(|(p, _)| *p))
                .filter(|p| !in_flight(&realm, p))
                .collect();
            match engine.rejoin(now, &realm, &ids, REJOIN_FALLBACK) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(%realm, seeds = ids.len(), push_pulls = n, "swim: no live member; rejoining through the seeds and last-known members")
                }
                Err(e) => tracing::warn!(error = %e, "swim: rejoin refused"),
            }
        }
    }

    /// Addresses to dial `peer` at: its member metadata in any realm of `engine` (of its
    /// signed record while it waits unconfirmed), its seed
    /// addresses, and its last metadata as a former member (at most [`MAX_ADDRESSES`]).
    pub(super) fn dial_addresses(&self, engine: &SwimEngine, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        let mut add = |a: &Multiaddr| {
            if out.len() < MAX_ADDRESSES {
                if let Some(bare) = bare_address_of(a, *peer) {
                    if !out.contains(&bare) {
                        out.push(bare);
                    }
                }
            }
        };
        for realm in engine.realms() {
            if let Some(m) = engine.member(realm, peer) {
                m.addresses().iter().for_each(&mut add);
            }
            if let Some(m) = engine.unconfirmed_member(realm, peer) {
                m.addresses().iter().for_each(&mut add);
            }
        }
        self.addresses(peer).for_each(&mut add);
        for realm in engine.realms() {
            if let Some(m) = engine.former_member(realm, peer) {
                m.addresses().iter().for_each(&mut add);
            }
        }
        out
    }
}
