//! Members: their state, incarnation number and metadata.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use thiserror::Error;

use crate::varint::varint_len;

/// The most addresses one member may announce.
pub const MAX_ADDRESSES: usize = 16;
/// The longest binary multiaddr accepted.
pub const MAX_ADDRESS_LEN: usize = 255;
/// The hard cap on a member's opaque metadata on the wire (the configured limit,
/// [`SwimConfig::max_metadata_bytes`](crate::SwimConfig::max_metadata_bytes), is usually far
/// lower).
pub const MAX_META_DATA_LEN: usize = 16 * 1024;

/// What a node believes about a member.
///
/// Precedence between states follows SWIM and memberlist; see [`crate`] docs, "Rules".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemberState {
    /// Answering probes (as far as we know).
    Alive,
    /// A probe failed; the member has until its suspicion timeout to refute.
    Suspect,
    /// Declared failed (suspicion timed out, or we heard so).
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// `Alive` or `Suspect`: a member still counted in the group.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            2 => MemberState::Dead,
            3 => MemberState::Left,
            _ => return None,
        })
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        })
    }
}

/// Why member metadata was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// More than [`MAX_ADDRESSES`] addresses.
    #[error("{count} addresses, more than {MAX_ADDRESSES}")]
    TooManyAddresses {
        /// How many were given.
        count: usize,
    },
    /// One address is longer than [`MAX_ADDRESS_LEN`] bytes in binary form.
    #[error("an address of {len} bytes is longer than {MAX_ADDRESS_LEN}")]
    AddressTooLong {
        /// Its binary length.
        len: usize,
    },
    /// The opaque data is longer than [`MAX_META_DATA_LEN`].
    #[error("metadata of {len} bytes is longer than {MAX_META_DATA_LEN}")]
    DataTooLong {
        /// Its length.
        len: usize,
    },
    /// The encoded metadata (addresses and data) is larger than the configured
    /// [`Config::max_metadata_bytes`](crate::SwimConfig::max_metadata_bytes).
    #[error("encoded metadata of {len} bytes exceeds the configured limit of {limit}")]
    TooLarge {
        /// Its encoded length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// A member's metadata: the addresses it can be reached at and opaque application data.
///
/// Its encoded size ([`NodeMeta::encoded_len`]) is bounded by
/// [`Config::max_metadata_bytes`](crate::SwimConfig::max_metadata_bytes) (512 by default), so an
/// alive update always fits in one datagram.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NodeMeta {
    addresses: Vec<Multiaddr>,
    data: Bytes,
}

impl NodeMeta {
    /// Metadata with these addresses and data. Checks the wire limits (at most
    /// [`MAX_ADDRESSES`] addresses of at most [`MAX_ADDRESS_LEN`] bytes each, at most
    /// [`MAX_META_DATA_LEN`] bytes of data); the configured size limit is checked by the engine.
    pub fn new(addresses: Vec<Multiaddr>, data: impl Into<Bytes>) -> Result<Self, MetaError> {
        let data = data.into();
        if addresses.len() > MAX_ADDRESSES {
            return Err(MetaError::TooManyAddresses {
                count: addresses.len(),
            });
        }
        if let Some(a) = addresses.iter().find(|a| a.len() > MAX_ADDRESS_LEN) {
            return Err(MetaError::AddressTooLong { len: a.len() });
        }
        if data.len() > MAX_META_DATA_LEN {
            return Err(MetaError::DataTooLong { len: data.len() });
        }
        Ok(NodeMeta { addresses, data })
    }

    /// Metadata with no address and no data.
    pub fn empty() -> Self {
        NodeMeta::default()
    }

    /// The member's addresses.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// The opaque application data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Appends the wire encoding (`docs/swim.md`, section 2: `meta`).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.addresses.len() as u8);
        for a in &self.addresses {
            let b = a.as_ref();
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        crate::varint::put_varint(out, self.data.len() as u64);
        out.extend_from_slice(&self.data);
    }

    /// The size of this metadata on the wire, in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + self.addresses.iter().map(|a| 1 + a.len()).sum::<usize>()
            + varint_len(self.data.len() as u64)
            + self.data.len()
    }
}

impl fmt::Debug for NodeMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeMeta")
            .field("addresses", &self.addresses)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A snapshot of one member, as returned by [`SwimEngine::members`](crate::SwimEngine::members) and in
/// events.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// Its identity.
    pub peer: PeerId,
    /// What we believe about it.
    pub state: MemberState,
    /// Its incarnation number as we know it.
    pub incarnation: u64,
    /// Its addresses and application data.
    pub meta: Arc<NodeMeta>,
}

impl Member {
    /// The member's addresses.
    pub fn addresses(&self) -> &[Multiaddr] {
        self.meta.addresses()
    }

    /// The member's application data.
    pub fn data(&self) -> &Bytes {
        self.meta.data()
    }
}
