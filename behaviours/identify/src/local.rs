//! Address handling: what we advertise (our listen and confirmed external addresses and our
//! protocols, as the swarm reports them), our message built from it, and which of a peer's
//! announced addresses are new.

use std::collections::{HashMap, HashSet};

use meshwire_swarm::{FromSwarm, ListenerId, StreamProtocol};
use multiaddr::Multiaddr;

use crate::config::{Config, MAX_EXTERNAL_ADDRESSES};
use crate::protocol::{encode_frame, wire, Error, Info};
use meshwire_swarm::toolkit::FrameError;

/// What the local node advertises.
#[derive(Debug, Default)]
pub(crate) struct LocalInfo {
    /// Our listen addresses, per listener.
    listen_addrs: HashMap<ListenerId, Vec<Multiaddr>>,
    /// Our confirmed external addresses.
    external_addrs: Vec<Multiaddr>,
    /// Every protocol of the local node.
    protocols: Vec<StreamProtocol>,
}

impl LocalInfo {
    /// Follows the swarm's reports of our addresses and protocols; `true` if what we
    /// advertise changed.
    pub(crate) fn on_swarm_event(&mut self, event: &FromSwarm<'_>) -> bool {
        match *event {
            FromSwarm::NewListenAddr { listener, addr } => {
                let addrs = self.listen_addrs.entry(listener).or_default();
                let fresh = !addrs.contains(addr);
                if fresh {
                    addrs.push(addr.clone());
                }
                fresh
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                self.listen_addrs.remove(&listener).is_some()
            }
            FromSwarm::ExternalAddrConfirmed { addr } => {
                let fresh = !self.external_addrs.contains(addr)
                    && self.external_addrs.len() < MAX_EXTERNAL_ADDRESSES;
                if fresh {
                    self.external_addrs.push(addr.clone());
                }
                fresh
            }
            FromSwarm::ExternalAddrExpired { addr } => {
                let before = self.external_addrs.len();
                self.external_addrs.retain(|a| a != addr);
                self.external_addrs.len() != before
            }
            FromSwarm::LocalProtocolsChanged { protocols } => {
                let changed = self.protocols != protocols;
                if changed {
                    self.protocols = protocols.to_vec();
                }
                changed
            }
            _ => false,
        }
    }

    /// The addresses we advertise: listen addresses, then confirmed external ones, each once.
    fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let mut listeners: Vec<_> = self.listen_addrs.iter().collect();
        listeners.sort_by_key(|(id, _)| **id);
        let mut seen = HashSet::new();
        listeners
            .into_iter()
            .flat_map(|(_, addrs)| addrs)
            .chain(&self.external_addrs)
            .filter(|a| seen.insert(*a))
            .cloned()
            .collect()
    }

    /// Our message for a remote whose address we see as `observed`, trimmed of listen
    /// addresses until it fits [`Config::max_message_size`].
    pub(crate) fn frame(
        &self,
        config: &Config,
        observed: Option<&Multiaddr>,
    ) -> Result<Vec<u8>, Error> {
        let mut msg = wire::Identify {
            protocol_version: Some(config.protocol_version.clone()),
            agent_version: Some(config.agent_version.clone()),
            public_key: Some(config.local_public_key.encode_protobuf()),
            listen_addrs: self.advertised_addrs().iter().map(|a| a.to_vec()).collect(),
            observed_addr: observed.filter(|a| !a.is_empty()).map(|a| a.to_vec()),
            protocols: self
                .protocols
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            signed_peer_record: None,
        };
        let mut dropped = 0usize;
        loop {
            match encode_frame(&msg, config.max_message_size) {
                Err(Error::Frame(FrameError::TooLarge { .. })) if !msg.listen_addrs.is_empty() => {
                    msg.listen_addrs.pop();
                    dropped += 1;
                }
                other => {
                    if dropped > 0 {
                        tracing::warn!(
                            dropped,
                            max = config.max_message_size,
                            "identify: our message is too large; listen addresses left out"
                        );
                    }
                    return other;
                }
            }
        }
    }
}

/// The listen addresses of `info` that `known` (the peer's previous info) did not have, in
/// linear time.
pub(crate) fn new_peer_addrs<'a>(
    known: Option<&Info>,
    info: &'a Info,
) -> impl Iterator<Item = &'a Multiaddr> {
    let known: HashSet<Multiaddr> = known
        .map(|k| k.listen_addrs.iter().cloned().collect())
        .unwrap_or_default();
    info.listen_addrs
        .iter()
        .filter(move |a| !known.contains(*a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    #[test]
    fn our_message_is_trimmed_to_fit() {
        let key = Keypair::generate();
        let config = Config::from_public_key(key.public()).with_max_message_size(300);
        let mut local = LocalInfo::default();
        let addrs: Vec<Multiaddr> = (0..50)
            .map(|i| format!("/ip4/10.0.0.{i}/udp/4001/quic-v1").parse().unwrap())
            .collect();
        local.listen_addrs.insert(ListenerId::next(), addrs);
        let frame = local.frame(&config, None).unwrap();
        assert!(frame.len() <= 302);
        let (msg, _) = crate::protocol::decode_frame(&frame, 300).unwrap().unwrap();
        let info = Info::from_wire(&key.peer_id(), msg, config.limits()).unwrap();
        assert!(!info.listen_addrs.is_empty() && info.listen_addrs.len() < 50);
    }

    #[test]
    fn advertised_addresses_are_distinct_and_new_ones_found() {
        let key = Keypair::generate();
        let a: Multiaddr = "/ip4/10.0.0.1/udp/1/quic-v1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.0.0.2/udp/1/quic-v1".parse().unwrap();
        let mut local = LocalInfo::default();
        let l = ListenerId::next();
        assert!(local.on_swarm_event(&FromSwarm::NewListenAddr {
            listener: l,
            addr: &a
        }));
        assert!(!local.on_swarm_event(&FromSwarm::NewListenAddr {
            listener: l,
            addr: &a
        }));
        assert!(local.on_swarm_event(&FromSwarm::ExternalAddrConfirmed { addr: &a }));
        assert!(local.on_swarm_event(&FromSwarm::ExternalAddrConfirmed { addr: &b }));
        assert_eq!(local.advertised_addrs(), vec![a.clone(), b.clone()]);

        let mut old = Info {
            public_key: key.public(),
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: vec![a.clone()],
            protocols: Vec::new(),
            observed_addr: Multiaddr::empty(),
        };
        let mut new = old.clone();
        new.listen_addrs.push(b.clone());
        let fresh: Vec<_> = new_peer_addrs(Some(&old), &new).collect();
        assert_eq!(fresh, vec![&b]);
        old.listen_addrs.clear();
        assert_eq!(new_peer_addrs(None, &new).count(), 2);
    }
}
