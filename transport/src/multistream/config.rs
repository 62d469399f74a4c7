//! The dialer's [`Version`] and the listener's limits ([`NegotiationConfig`]).

use super::protocol_name::MAX_PROTOCOL_NAME_LEN;

/// Default bound on the length of a single negotiation message read by a
/// listener, and on the size of the `ls` reply it sends (1024 bytes, as in
/// go-libp2p and js-libp2p).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1024;

/// The largest value [`NegotiationConfig::with_max_message_len`] accepts.
///
/// This is the largest frame rust-libp2p can read (a two-byte varint length).
pub const MAX_FRAME_LEN: usize = (1 << 14) - 1;

/// The smallest value [`NegotiationConfig::with_max_message_len`] accepts:
/// enough for a proposal of a [`MAX_PROTOCOL_NAME_LEN`]-byte name.
pub const MIN_MESSAGE_LEN: usize = MAX_PROTOCOL_NAME_LEN + 1;

/// Default number of `na` (and `ls`) answers a listener gives before it stops
/// the negotiation with [`NegotiationError::TooManyProposals`](super::NegotiationError::TooManyProposals).
pub const DEFAULT_MAX_REJECTIONS: usize = 16;

/// The multistream-select flavour used by a dialer.
///
/// Listeners accept dialers of either version; the difference is only in when
/// the dialer considers the negotiation settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// Plain `/multistream/1.0.0`: the dialer waits for the listener to confirm
    /// a protocol before returning (one round trip at best).
    #[default]
    V1,
    /// `/multistream/1.0.0` with optimistic selection: when exactly one
    /// protocol is proposed, the dialer returns immediately after sending the
    /// header and proposal and reads the confirmation lazily. Identical to
    /// [`Version::V1`] on the wire.
    V1Lazy,
}

/// Limits applied during negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NegotiationConfig {
    max_message_len: usize,
    max_rejections: usize,
    defer_confirmation: bool,
}

impl NegotiationConfig {
    /// The default configuration: [`DEFAULT_MAX_MESSAGE_LEN`],
    /// [`DEFAULT_MAX_REJECTIONS`], every message written before the negotiation returns.
    pub const fn new() -> Self {
        NegotiationConfig {
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_rejections: DEFAULT_MAX_REJECTIONS,
            defer_confirmation: false,
        }
    }

    /// Sets the maximum length of a negotiation message read by a listener,
    /// which also bounds the size of the `ls` reply it sends. Clamped to
    /// `[MIN_MESSAGE_LEN, MAX_FRAME_LEN]`.
    ///
    /// A dialer only ever accepts the header, `na` or the echo of its own
    /// proposal, so it always reads at most [`MIN_MESSAGE_LEN`] bytes per
    /// message regardless of this setting.
    pub const fn with_max_message_len(mut self, len: usize) -> Self {
        self.max_message_len = if len < MIN_MESSAGE_LEN {
            MIN_MESSAGE_LEN
        } else if len > MAX_FRAME_LEN {
            MAX_FRAME_LEN
        } else {
            len
        };
        self
    }

    /// Sets how many `na` (or `ls`) answers a listener gives before failing
    /// with [`NegotiationError::TooManyProposals`](super::NegotiationError::TooManyProposals). With `0` the listener
    /// answers no unsupported proposal at all.
    pub const fn with_max_rejections(mut self, max: usize) -> Self {
        self.max_rejections = max;
        self
    }

    /// With `true`, the last negotiation messages are not written before the negotiation
    /// returns but by the returned [`Negotiated`] stream's first read, write, flush or close,
    /// ahead of anything else, in the task that uses the stream — so they leave in the same
    /// packet as what that task writes in the same poll instead of a packet of their own:
    ///
    /// - a listener's confirmation (and the header echo, when the proposal came with the
    ///   header): a stream negotiated in an accepting task and served in another otherwise
    ///   sends it alone, and the dialer acknowledges the two packets at once;
    /// - a [`Version::V1Lazy`] dialer's header and single proposal, which then travel with
    ///   the first data, as rust-libp2p's lazy dialer sends them (a stream opened in one task
    ///   and written in another otherwise sends them alone).
    ///
    /// The bytes on the wire are the same, in the same order; a read does not wait for the
    /// write, it only starts it. A stream that is never used delays the other side until it
    /// is: call [`Negotiated::try_send_unsent`] before dropping it unused (meshwire's swarm
    /// streams do on drop). Default `false`: written before the negotiation returns.
    ///
    /// [`Negotiated`]: super::Negotiated
    /// [`Negotiated::try_send_unsent`]: super::Negotiated::try_send_unsent
    pub const fn with_deferred_send(mut self, defer: bool) -> Self {
        self.defer_confirmation = defer;
        self
    }

    /// Whether the last negotiation messages are left to the negotiated stream's first use.
    pub const fn defers_send(&self) -> bool {
        self.defer_confirmation
    }

    /// The maximum message length in force.
    pub const fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// The maximum number of refused proposals in force.
    pub const fn max_rejections(&self) -> usize {
        self.max_rejections
    }
}

impl Default for NegotiationConfig {
    fn default() -> Self {
        Self::new()
    }
}
