//! The node's own metadata: the addresses it announces (listen addresses with a specific IP,
//! loopback ones only without others, and confirmed external addresses) plus the
//! application's data.

use meshwire_core::PeerId;
use meshwire_swarm::{FromSwarm, ListenerId};
use multiaddr::{Multiaddr, Protocol};

use super::config::Config;
use crate::member::{MetaError, NodeMeta};
use crate::wire::{MAX_ADDRESSES, MAX_ADDRESS_LEN};

/// The node's listen and confirmed external addresses, from [`FromSwarm`] events.
#[derive(Default)]
pub(super) struct LocalAddrs {
    listen: Vec<(ListenerId, Multiaddr)>,
    external: Vec<Multiaddr>,
}

impl LocalAddrs {
    /// Takes in an address event; `true` if the addresses changed.
    pub(super) fn on_swarm_event(&mut self, event: &FromSwarm<'_>) -> bool {
        match *event {
            FromSwarm::NewListenAddr { listener, addr }
                if !self.listen.iter().any(|(l, a)| *l == listener && a == addr) =>
            {
                self.listen.push((listener, addr.clone()));
                true
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                let before = self.listen.len();
                self.listen.retain(|(l, _)| *l != listener);
                self.listen.len() != before
            }
            FromSwarm::ExternalAddrConfirmed { addr }
                if !self.external.contains(addr) && self.external.len() < MAX_ADDRESSES =>
            {
                self.external.push(addr.clone());
                true
            }
            FromSwarm::ExternalAddrExpired { addr } => {
                let before = self.external.len();
                self.external.retain(|a| a != addr);
                self.external.len() != before
            }
            _ => false,
        }
    }

    /// The metadata to announce for `local`: the announceable addresses (at most
    /// [`Config::max_announced_addresses`], fewer, last first, if they do not fit the
    /// metadata size limit) and [`Config::data`].
    pub(super) fn meta(&self, local: PeerId, config: &Config) -> Result<NodeMeta, MetaError> {
        let limit = config.max_announced_addresses.min(MAX_ADDRESSES);
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for a in self.listen.iter().map(|(_, a)| a).chain(&self.external) {
            let Some(bare) = bare_address_of(a, local) else {
                continue;
            };
            if announceable(&bare) && bare.len() <= MAX_ADDRESS_LEN && !addrs.contains(&bare) {
                addrs.push(bare);
            }
        }
        // Loopback addresses only when there is nothing else (a node on one host).
        if addrs.iter().any(|a| !is_loopback(a)) {
            addrs.retain(|a| !is_loopback(a));
        }
        addrs.truncate(limit);
        let max = config.swim.max_metadata_bytes;
        loop {
            let meta = NodeMeta::new(addrs.clone(), config.data.clone())?;
            if meta.encoded_len() <= max || addrs.is_empty() {
                return Ok(meta);
            }
            addrs.pop();
        }
    }
}

/// `addr` without a trailing `/p2p/<peer>`, if that names `peer` (or is absent).
pub(super) fn bare_address_of(addr: &Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    meshwire_transport::split_peer_id(addr, Some(peer))
        .ok()
        .map(|(a, _)| a)
}

/// Whether `addr` is worth announcing: not an unspecified (all-interfaces) IP.
fn announceable(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified(),
        Some(_) => true,
        None => false,
    }
}

/// Whether `addr` starts with a loopback IP.
fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}
