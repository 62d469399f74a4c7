//! Connection-manager tags of routing-table peers.
//!
//! A connected peer entering the routing table is tagged (`"kad"` = 5 by default, as
//! go-libp2p's kad-dht tags its routing-table peers) and untagged when it leaves. The
//! connection manager forgets a peer's tags when its last connection closes, so the tag is
//! set again whenever a routing-table peer connects; peers that are not connected are not
//! tagged (the connection manager would keep a temporary entry for them).

use meshwire_core::PeerId;
use meshwire_swarm::{ConnManagerCommand, ToSwarm};

/// The tag given to routing-table peers, if any.
#[derive(Debug, Clone)]
pub(super) struct Tags {
    tag: Option<(String, i32)>,
}

impl Tags {
    /// Tags with `tag` (`None`: tags nothing).
    pub fn new(tag: Option<(String, i32)>) -> Self {
        Tags { tag }
    }

    /// The command tagging `peer`.
    pub fn tag<E>(&self, peer: PeerId) -> Option<ToSwarm<E>> {
        let (tag, value) = self.tag.as_ref()?;
        Some(ToSwarm::ConnManager(ConnManagerCommand::TagPeer {
            peer,
            tag: tag.clone(),
            value: *value,
        }))
    }

    /// The command untagging `peer`.
    pub fn untag<E>(&self, peer: PeerId) -> Option<ToSwarm<E>> {
        let (tag, _) = self.tag.as_ref()?;
        Some(ToSwarm::ConnManager(ConnManagerCommand::UntagPeer {
            peer,
            tag: tag.clone(),
        }))
    }
}
