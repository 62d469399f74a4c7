//! The wire format of `/meshwire/swim/2.0.0` (specified in `docs/swim.md`).
//!
//! A compact, hand-written binary format: every message starts with a version byte
//! ([`WIRE_VERSION`]), a type byte and the realm; integers are unsigned LEB128 varints;
//! peer IDs, addresses and realms are length-prefixed. Decoding is strict (unknown versions,
//! types, kinds and flags, trailing bytes and every out-of-range length are typed
//! [`DecodeError`]s), never panics, and allocates in proportion to the input, with every list
//! length checked against both the remaining input and a [`Limits`] before any allocation.

use std::sync::Arc;

use bytes::Bytes;
use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use thiserror::Error;

use crate::member::{MemberState, NodeMeta};
pub use crate::member::{MAX_ADDRESSES, MAX_ADDRESS_LEN, MAX_META_DATA_LEN};
use crate::realm::{Realm, RealmError, MAX_REALM_LEN};
use crate::record::{AliveRecord, Signature, SIGNATURE_LEN};
use crate::varint::put_varint;
pub use crate::varint::varint_len;

/// The protocol id negotiated for push-pull streams (and naming the datagram protocol).
pub const PROTOCOL_NAME: &str = "/meshwire/swim/2.0.0";
/// The protocol id of the fallback streams that carry probe traffic (the messages otherwise
/// sent as datagrams, one frame each) over connections without datagrams, such as relayed
/// ones.
pub const STREAM_PROTOCOL_NAME: &str = "/meshwire/swim/2.0.0/stream";
/// The version byte that starts every message.
pub const WIRE_VERSION: u8 = 2;
/// The longest binary peer ID accepted (an identity multihash of a 42-byte key).
pub const MAX_PEER_ID_LEN: usize = 44;
/// The smallest possible encoded update (a `left` update with a 2-byte peer ID).
pub const MIN_UPDATE_LEN: usize = 1 + 1 + 2 + 1;
/// The smallest possible encoded push-pull record.
const MIN_RECORD_LEN: usize = 1 + 1 + 2 + 1 + 1 + 2 + SIGNATURE_LEN;

const T_PING: u8 = 1;
const T_ACK: u8 = 2;
const T_PING_REQ: u8 = 3;
const T_NACK: u8 = 4;
const T_GOSSIP: u8 = 5;
const T_PUSH_PULL: u8 = 6;

const U_ALIVE: u8 = 0;
const U_SUSPECT: u8 = 1;
const U_DEAD: u8 = 2;
const U_LEFT: u8 = 3;

const F_JOIN: u8 = 0x01;
const F_RESPONSE: u8 = 0x02;

/// Bounds applied while decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest datagram accepted (probe messages and gossip).
    pub max_datagram_bytes: usize,
    /// The largest push-pull message accepted.
    pub max_push_pull_bytes: usize,
    /// The most member records in one push-pull message.
    pub max_push_pull_members: usize,
    /// The most updates piggybacked on one datagram.
    pub max_updates: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_datagram_bytes: 64 * 1024,
            max_push_pull_bytes: 4 * 1024 * 1024,
            max_push_pull_members: 8192,
            max_updates: 1024,
        }
    }
}

/// Why bytes could not be decoded into a [`Message`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is empty.
    #[error("empty message")]
    Empty,
    /// The input ended in the middle of a field.
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    /// The first byte is not a version we speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// Unknown message type byte.
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    /// Unknown update kind byte.
    #[error("unknown update kind {0}")]
    UnknownUpdateKind(u8),
    /// Unknown member state byte in a push-pull record.
    #[error("unknown member state {0}")]
    UnknownMemberState(u8),
    /// Push-pull flags with unknown bits set.
    #[error("invalid push-pull flags {0:#04x}")]
    InvalidFlags(u8),
    /// A varint is longer than 10 bytes or larger than its field allows.
    #[error("varint out of range in {0}")]
    VarintOverflow(&'static str),
    /// The realm is not valid UTF-8 or not a valid realm name.
    #[error("invalid realm")]
    InvalidRealm(#[source] Option<RealmError>),
    /// A peer ID is not a valid binary peer ID.
    #[error("invalid peer id")]
    InvalidPeerId,
    /// An address is not a valid binary multiaddr.
    #[error("invalid multiaddr")]
    InvalidMultiaddr,
    /// A length or count is above its limit.
    #[error("{what} is {value}, above the limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A push-pull record's signed alive incarnation is above the record's incarnation.
    #[error("signed alive incarnation {signed} above the record's incarnation {incarnation}")]
    SignedAboveIncarnation {
        /// The record's incarnation.
        incarnation: u64,
        /// The incarnation of its signed alive record.
        signed: u64,
    },
    /// Bytes are left after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// One SWIM message: the realm it is about and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The realm (membership) the message belongs to.
    pub realm: Realm,
    /// What it says.
    pub body: Body,
}

/// The message bodies. All but [`Body::PushPull`] travel as datagrams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A direct probe; answered with an [`Ack`] carrying the same `seq`.
    Ping(Ping),
    /// The answer to a ping (or a relayed answer to a ping-req).
    Ack(Ack),
    /// Asks the receiver to probe `target` and relay its ack.
    PingReq(PingReq),
    /// From an indirect prober: "I could not reach the target in time".
    Nack(Nack),
    /// Updates only (dissemination rounds and graceful leave).
    Gossip(Gossip),
    /// Full state exchange (join and anti-entropy), over a stream.
    PushPull(PushPull),
}

/// A direct probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// The prober's sequence number, echoed in the ack.
    pub seq: u32,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// The answer to a ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The sequence number of the ping (or ping-req) answered.
    pub seq: u32,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// An indirect probe request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReq {
    /// The requester's sequence number, used in the relayed ack or nack.
    pub seq: u32,
    /// The member to probe.
    pub target: PeerId,
    /// Send a nack if the target has not answered within this many milliseconds; 0 asks
    /// for no nack.
    pub nack_timeout_ms: u32,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// Negative acknowledgement from an indirect prober (Lifeguard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The requester's sequence number from the ping-req.
    pub seq: u32,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// A carrier of updates only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gossip {
    /// The updates.
    pub updates: Vec<Update>,
}

/// A full-state exchange. The initiator sends a request (`response == false`) with its
/// state; the responder answers with its own (`response == true`); both merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushPull {
    /// Set on the request of a join.
    pub join: bool,
    /// Set on the answer.
    pub response: bool,
    /// The sender's view of the membership, itself first.
    pub members: Vec<MemberRecord>,
}

/// One member's full state, in push-pull messages: its state as the sender believes it,
/// and the member's own latest signed alive record that the sender holds (shared, not
/// copied: see [`AliveRecord`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// Its incarnation (of its state).
    pub incarnation: u64,
    /// Its state as the sender believes it.
    pub state: MemberState,
    /// The member's signed alive record; its incarnation (the *signed incarnation*) is at
    /// most `incarnation`.
    pub record: Arc<AliveRecord>,
}

/// A membership update, disseminated by piggybacking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The member the update is about.
    pub peer: PeerId,
    /// The incarnation it is about.
    pub incarnation: u64,
    /// What happened.
    pub kind: UpdateKind,
}

/// What an [`Update`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// The member is alive at this incarnation, with this metadata: its own signed claim.
    /// The record's peer and incarnation are the update's (build it with
    /// [`Update::alive`]).
    Alive {
        /// The member's signed alive record (see [`crate::record`]).
        record: Arc<AliveRecord>,
    },
    /// `from` suspects the member (its probe failed).
    Suspect {
        /// The accuser.
        from: PeerId,
    },
    /// `from` declared the member failed.
    Dead {
        /// The declarer.
        from: PeerId,
    },
    /// The member left gracefully.
    Left,
}

fn peer_len(p: &PeerId) -> usize {
    1 + p.as_bytes().len()
}

fn put_peer(out: &mut Vec<u8>, p: &PeerId) {
    let b = p.as_bytes();
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn put_meta(out: &mut Vec<u8>, m: &NodeMeta) {
    m.encode_into(out);
}

impl Update {
    /// The alive update carrying `record` (about its peer, at its incarnation).
    pub fn alive(record: Arc<AliveRecord>) -> Self {
        Update {
            peer: record.peer,
            incarnation: record.incarnation,
            kind: UpdateKind::Alive { record },
        }
    }

    /// The size of this update on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + peer_len(&self.peer)
            + varint_len(self.incarnation)
            + match &self.kind {
                UpdateKind::Alive { record } => record.meta.encoded_len() + SIGNATURE_LEN,
                UpdateKind::Suspect { from } | UpdateKind::Dead { from } => peer_len(from),
                UpdateKind::Left => 0,
            }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let kind = match &self.kind {
            UpdateKind::Alive { .. } => U_ALIVE,
            UpdateKind::Suspect { .. } => U_SUSPECT,
            UpdateKind::Dead { .. } => U_DEAD,
            UpdateKind::Left => U_LEFT,
        };
        out.push(kind);
        put_peer(out, &self.peer);
        put_varint(out, self.incarnation);
        match &self.kind {
            UpdateKind::Alive { record } => {
                put_meta(out, &record.meta);
                out.extend_from_slice(record.signature.as_bytes());
            }
            UpdateKind::Suspect { from } | UpdateKind::Dead { from } => put_peer(out, from),
            UpdateKind::Left => {}
        }
    }
}

impl MemberRecord {
    /// The member.
    pub fn peer(&self) -> &PeerId {
        &self.record.peer
    }

    /// The incarnation of its signed alive record.
    pub fn signed_incarnation(&self) -> u64 {
        self.record.incarnation
    }

    /// The size of this record on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + peer_len(&self.record.peer)
            + varint_len(self.incarnation)
            + varint_len(self.record.incarnation)
            + self.record.meta.encoded_len()
            + SIGNATURE_LEN
    }
}

fn updates_len(updates: &[Update]) -> usize {
    varint_len(updates.len() as u64) + updates.iter().map(Update::encoded_len).sum::<usize>()
}

impl Body {
    /// The piggybacked updates, if this body carries any.
    pub fn updates(&self) -> &[Update] {
        match self {
            Body::Ping(p) => &p.updates,
            Body::Ack(a) => &a.updates,
            Body::PingReq(r) => &r.updates,
            Body::Nack(n) => &n.updates,
            Body::Gossip(g) => &g.updates,
            Body::PushPull(_) => &[],
        }
    }

    pub(crate) fn set_updates(&mut self, updates: Vec<Update>) {
        match self {
            Body::Ping(p) => p.updates = updates,
            Body::Ack(a) => a.updates = updates,
            Body::PingReq(r) => r.updates = updates,
            Body::Nack(n) => n.updates = updates,
            Body::Gossip(g) => g.updates = updates,
            Body::PushPull(_) => {}
        }
    }

    /// The encoded size of the body's own fields, without the update list (and its count).
    pub(crate) fn fixed_len(&self) -> usize {
        match self {
            Body::Ping(p) => varint_len(u64::from(p.seq)),
            Body::Ack(a) => varint_len(u64::from(a.seq)),
            Body::PingReq(r) => {
                varint_len(u64::from(r.seq))
                    + peer_len(&r.target)
                    + varint_len(u64::from(r.nack_timeout_ms))
            }
            Body::Nack(n) => varint_len(u64::from(n.seq)),
            Body::Gossip(_) => 0,
            Body::PushPull(pp) => {
                1 + varint_len(pp.members.len() as u64)
                    + pp.members
                        .iter()
                        .map(MemberRecord::encoded_len)
                        .sum::<usize>()
            }
        }
    }

    fn type_code(&self) -> u8 {
        match self {
            Body::Ping(_) => T_PING,
            Body::Ack(_) => T_ACK,
            Body::PingReq(_) => T_PING_REQ,
            Body::Nack(_) => T_NACK,
            Body::Gossip(_) => T_GOSSIP,
            Body::PushPull(_) => T_PUSH_PULL,
        }
    }
}

/// The size of the message header (version, type, realm) for a realm.
pub(crate) fn header_len(realm: &Realm) -> usize {
    3 + realm.len()
}

impl Message {
    /// The exact size of [`Message::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let updates = match &self.body {
            Body::PushPull(_) => 0,
            b => updates_len(b.updates()),
        };
        header_len(&self.realm) + self.body.fixed_len() + updates
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(WIRE_VERSION);
        out.push(self.body.type_code());
        out.push(self.realm.len() as u8);
        out.extend_from_slice(self.realm.as_str().as_bytes());
        let updates = match &self.body {
            Body::Ping(p) => {
                put_varint(out, u64::from(p.seq));
                &p.updates
            }
            Body::Ack(a) => {
                put_varint(out, u64::from(a.seq));
                &a.updates
            }
            Body::PingReq(r) => {
                put_varint(out, u64::from(r.seq));
                put_peer(out, &r.target);
                put_varint(out, u64::from(r.nack_timeout_ms));
                &r.updates
            }
            Body::Nack(n) => {
                put_varint(out, u64::from(n.seq));
                &n.updates
            }
            Body::Gossip(g) => &g.updates,
            Body::PushPull(pp) => {
                let mut flags = 0;
                if pp.join {
                    flags |= F_JOIN;
                }
                if pp.response {
                    flags |= F_RESPONSE;
                }
                out.push(flags);
                put_varint(out, pp.members.len() as u64);
                for r in &pp.members {
                    out.push(r.state.code());
                    put_peer(out, &r.record.peer);
                    put_varint(out, r.incarnation);
                    put_varint(out, r.record.incarnation);
                    put_meta(out, &r.record.meta);
                    out.extend_from_slice(r.record.signature.as_bytes());
                }
                return;
            }
        };
        put_varint(out, updates.len() as u64);
        for u in updates {
            u.encode_into(out);
        }
    }

    /// Decodes one message, checking every bound in `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8("version").map_err(|_| DecodeError::Empty)?;
        if version != WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let ty = r.u8("message type")?;
        let max = if ty == T_PUSH_PULL {
            limits.max_push_pull_bytes
        } else {
            limits.max_datagram_bytes
        };
        if bytes.len() > max {
            return Err(DecodeError::LimitExceeded {
                what: "message size",
                value: bytes.len() as u64,
                limit: max as u64,
            });
        }
        let realm = r.realm()?;
        let body = match ty {
            T_PING => {
                let seq = r.varint_u32("seq")?;
                Body::Ping(Ping {
                    seq,
                    updates: r.updates(limits)?,
                })
            }
            T_ACK => {
                let seq = r.varint_u32("seq")?;
                Body::Ack(Ack {
                    seq,
                    updates: r.updates(limits)?,
                })
            }
            T_PING_REQ => {
                let seq = r.varint_u32("seq")?;
                let target = r.peer("target")?;
                let nack_timeout_ms = r.varint_u32("nack timeout")?;
                Body::PingReq(PingReq {
                    seq,
                    target,
                    nack_timeout_ms,
                    updates: r.updates(limits)?,
                })
            }
            T_NACK => {
                let seq = r.varint_u32("seq")?;
                Body::Nack(Nack {
                    seq,
                    updates: r.updates(limits)?,
                })
            }
            T_GOSSIP => Body::Gossip(Gossip {
                updates: r.updates(limits)?,
            }),
            T_PUSH_PULL => {
                let flags = r.u8("flags")?;
                if flags & !(F_JOIN | F_RESPONSE) != 0 {
                    return Err(DecodeError::InvalidFlags(flags));
                }
                let count =
                    r.count("member count", limits.max_push_pull_members, MIN_RECORD_LEN)?;
                let mut members = Vec::with_capacity(count);
                for _ in 0..count {
                    let code = r.u8("member state")?;
                    let state = MemberState::from_code(code)
                        .ok_or(DecodeError::UnknownMemberState(code))?;
                    let peer = r.peer("member")?;
                    let incarnation = r.varint("incarnation")?;
                    let signed_incarnation = r.varint("signed incarnation")?;
                    if signed_incarnation > incarnation {
                        return Err(DecodeError::SignedAboveIncarnation {
                            incarnation,
                            signed: signed_incarnation,
                        });
                    }
                    let meta = r.meta()?;
                    let signature = r.signature()?;
                    members.push(MemberRecord {
                        incarnation,
                        state,
                        record: AliveRecord::new(
                            peer,
                            signed_incarnation,
                            Arc::new(meta),
                            signature,
                        ),
                    });
                }
                Body::PushPull(PushPull {
                    join: flags & F_JOIN != 0,
                    response: flags & F_RESPONSE != 0,
                    members,
                })
            }
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::TrailingBytes(r.buf.len()));
        }
        Ok(Message { realm, body })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::VarintOverflow(what));
            }
            value |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow(what))
    }

    fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(what)?).map_err(|_| DecodeError::VarintOverflow(what))
    }

    /// A list length, checked against `limit` and against what the remaining input can hold.
    fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_item: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        if n > limit as u64 {
            return Err(DecodeError::LimitExceeded {
                what,
                value: n,
                limit: limit as u64,
            });
        }
        if n.saturating_mul(min_item as u64) > self.buf.len() as u64 {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n as usize)
    }

    fn realm(&mut self) -> Result<Realm, DecodeError> {
        let len = self.u8("realm length")? as usize;
        if len > MAX_REALM_LEN {
            return Err(DecodeError::LimitExceeded {
                what: "realm length",
                value: len as u64,
                limit: MAX_REALM_LEN as u64,
            });
        }
        let raw = self.take(len, "realm")?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidRealm(None))?;
        Realm::new(s).map_err(|e| DecodeError::InvalidRealm(Some(e)))
    }

    fn peer(&mut self, what: &'static str) -> Result<PeerId, DecodeError> {
        let len = self.u8(what)? as usize;
        if len > MAX_PEER_ID_LEN {
            return Err(DecodeError::LimitExceeded {
                what: "peer id length",
                value: len as u64,
                limit: MAX_PEER_ID_LEN as u64,
            });
        }
        let raw = self.take(len, what)?;
        PeerId::from_bytes(raw).map_err(|_| DecodeError::InvalidPeerId)
    }

    fn meta(&mut self) -> Result<NodeMeta, DecodeError> {
        let n = self.u8("address count")? as usize;
        if n > MAX_ADDRESSES {
            return Err(DecodeError::LimitExceeded {
                what: "address count",
                value: n as u64,
                limit: MAX_ADDRESSES as u64,
            });
        }
        let mut addresses = Vec::with_capacity(n.min(self.buf.len()));
        for _ in 0..n {
            let len = self.u8("address length")? as usize;
            let raw = self.take(len, "address")?;
            let addr =
                Multiaddr::try_from(raw.to_vec()).map_err(|_| DecodeError::InvalidMultiaddr)?;
            addresses.push(addr);
        }
        let len = self.varint("metadata length")?;
        if len > MAX_META_DATA_LEN as u64 {
            return Err(DecodeError::LimitExceeded {
                what: "metadata length",
                value: len,
                limit: MAX_META_DATA_LEN as u64,
            });
        }
        let data = Bytes::copy_from_slice(self.take(len as usize, "metadata")?);
        // The checks above are exactly the constructor's, so this cannot fail; map defensively.
        NodeMeta::new(addresses, data).map_err(|_| DecodeError::LimitExceeded {
            what: "metadata",
            value: len,
            limit: MAX_META_DATA_LEN as u64,
        })
    }

    fn signature(&mut self) -> Result<Signature, DecodeError> {
        let raw = self.take(SIGNATURE_LEN, "signature")?;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(raw);
        Ok(Signature(sig))
    }

    fn updates(&mut self, limits: &Limits) -> Result<Vec<Update>, DecodeError> {
        let count = self.count("update count", limits.max_updates, MIN_UPDATE_LEN)?;
        let mut updates = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = self.u8("update kind")?;
            let peer = self.peer("update peer")?;
            let incarnation = self.varint("incarnation")?;
            let kind = match kind {
                U_ALIVE => {
                    let meta = Arc::new(self.meta()?);
                    let signature = self.signature()?;
                    UpdateKind::Alive {
                        record: AliveRecord::new(peer, incarnation, meta, signature),
                    }
                }
                U_SUSPECT => UpdateKind::Suspect {
                    from: self.peer("accuser")?,
                },
                U_DEAD => UpdateKind::Dead {
                    from: self.peer("declarer")?,
                },
                U_LEFT => UpdateKind::Left,
                other => return Err(DecodeError::UnknownUpdateKind(other)),
            };
            updates.push(Update {
                peer,
                incarnation,
                kind,
            });
        }
        Ok(updates)
    }
}

/// Frames a push-pull message for the stream: an unsigned-varint length, then the message.
pub fn encode_frame(message: &Message) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(varint_len(len as u64) + len);
    put_varint(&mut out, len as u64);
    message.encode_into(&mut out);
    out
}

/// Reads a frame's length prefix. Returns `Ok(None)` when `buf` does not hold the whole
/// prefix yet, else the message length and the prefix length. Lengths above `max` are errors.
pub fn decode_frame_len(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return Err(DecodeError::VarintOverflow("frame length"));
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            if value > max as u64 {
                return Err(DecodeError::LimitExceeded {
                    what: "frame length",
                    value,
                    limit: max as u64,
                });
            }
            return Ok(Some((value as usize, i + 1)));
        }
    }
    if buf.len() >= 10 {
        return Err(DecodeError::VarintOverflow("frame length"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    fn peer(i: u64) -> PeerId {
        Keypair::from_seed_for_tests(i).peer_id()
    }

    fn realm() -> Realm {
        Realm::new("org.example.mesh").unwrap()
    }

    fn meta() -> Arc<NodeMeta> {
        let addr: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        Arc::new(NodeMeta::new(vec![addr], &b"role=db"[..]).unwrap())
    }

    fn all_updates() -> Vec<Update> {
        vec![
            Update::alive(AliveRecord::new(
                peer(1),
                0,
                meta(),
                Signature([9; SIGNATURE_LEN]),
            )),
            Update {
                peer: peer(2),
                incarnation: 300,
                kind: UpdateKind::Suspect { from: peer(3) },
            },
            Update {
                peer: peer(4),
                incarnation: u64::MAX,
                kind: UpdateKind::Dead { from: peer(5) },
            },
            Update {
                peer: peer(6),
                incarnation: 7,
                kind: UpdateKind::Left,
            },
        ]
    }

    fn samples() -> Vec<Message> {
        let bodies = vec![
            Body::Ping(Ping {
                seq: 1,
                updates: all_updates(),
            }),
            Body::Ack(Ack {
                seq: u32::MAX,
                updates: vec![],
            }),
            Body::PingReq(PingReq {
                seq: 9,
                target: peer(8),
                nack_timeout_ms: 400,
                updates: all_updates(),
            }),
            Body::Nack(Nack {
                seq: 77,
                updates: all_updates(),
            }),
            Body::Gossip(Gossip {
                updates: all_updates(),
            }),
            Body::PushPull(PushPull {
                join: true,
                response: false,
                members: vec![
                    MemberRecord {
                        incarnation: 3,
                        state: MemberState::Alive,
                        record: AliveRecord::new(peer(1), 3, meta(), Signature([7; SIGNATURE_LEN])),
                    },
                    MemberRecord {
                        incarnation: 4,
                        state: MemberState::Left,
                        record: AliveRecord::new(
                            peer(2),
                            3,
                            Arc::new(NodeMeta::empty()),
                            Signature::ZERO,
                        ),
                    },
                ],
            }),
        ];
        bodies
            .into_iter()
            .map(|body| Message {
                realm: realm(),
                body,
            })
            .collect()
    }

    #[test]
    fn roundtrip_and_exact_len() {
        for m in samples() {
            let bytes = m.encode();
            assert_eq!(bytes.len(), m.encoded_len(), "{m:?}");
            assert_eq!(Message::decode(&bytes, &Limits::default()), Ok(m));
        }
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for m in samples() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(Message::decode(&bytes[..cut], &Limits::default()).is_err());
            }
        }
    }

    #[test]
    fn typed_errors() {
        let l = Limits::default();
        assert_eq!(Message::decode(&[], &l), Err(DecodeError::Empty));
        assert_eq!(
            Message::decode(&[1, 1], &l),
            Err(DecodeError::UnsupportedVersion(1))
        );
        let mut ping = Message {
            realm: realm(),
            body: Body::Ping(Ping {
                seq: 1,
                updates: vec![],
            }),
        }
        .encode();
        ping.push(0);
        assert_eq!(
            Message::decode(&ping, &l),
            Err(DecodeError::TrailingBytes(1))
        );
        let mut bad_type = Message {
            realm: realm(),
            body: Body::Gossip(Gossip { updates: vec![] }),
        }
        .encode();
        bad_type[1] = 99;
        assert_eq!(
            Message::decode(&bad_type, &l),
            Err(DecodeError::UnknownMessageType(99))
        );
        let mut bad_realm = Message {
            realm: realm(),
            body: Body::Gossip(Gossip { updates: vec![] }),
        }
        .encode();
        bad_realm[3] = b'O';
        assert!(matches!(
            Message::decode(&bad_realm, &l),
            Err(DecodeError::InvalidRealm(Some(_)))
        ));
        // A count far larger than the input is refused before allocating.
        let mut huge = Message {
            realm: realm(),
            body: Body::Gossip(Gossip { updates: vec![] }),
        }
        .encode();
        huge.pop();
        huge.extend_from_slice(&[0xff, 0xff, 0x03]);
        assert!(matches!(
            Message::decode(&huge, &l),
            Err(DecodeError::LimitExceeded { .. })
        ));
        let big = Limits {
            max_updates: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            Message::decode(&huge, &big),
            Err(DecodeError::Truncated("update count"))
        );
        // Push-pull member counts are bounded too.
        let pp = samples().pop().unwrap();
        let mut small = Limits {
            max_push_pull_members: 1,
            ..Limits::default()
        };
        assert!(matches!(
            Message::decode(&pp.encode(), &small),
            Err(DecodeError::LimitExceeded { .. })
        ));
        small.max_push_pull_bytes = 10;
        small.max_push_pull_members = 10;
        assert!(matches!(
            Message::decode(&pp.encode(), &small),
            Err(DecodeError::LimitExceeded {
                what: "message size",
                ..
            })
        ));
    }

    #[test]
    fn signed_incarnation_above_record_is_an_error() {
        let mut m = samples().pop().unwrap();
        if let Body::PushPull(pp) = &mut m.body {
            let r = &pp.members[0].record;
            pp.members[0].record = AliveRecord::new(r.peer, 4, r.meta.clone(), r.signature);
        }
        assert_eq!(
            Message::decode(&m.encode(), &Limits::default()),
            Err(DecodeError::SignedAboveIncarnation {
                incarnation: 3,
                signed: 4
            })
        );
    }

    #[test]
    fn frames() {
        let m = samples().pop().unwrap();
        let framed = encode_frame(&m);
        let (len, pre) = decode_frame_len(&framed, 1 << 20).unwrap().unwrap();
        assert_eq!(pre + len, framed.len());
        assert_eq!(Message::decode(&framed[pre..], &Limits::default()), Ok(m));
        assert_eq!(decode_frame_len(&[0x80], 100), Ok(None));
        assert!(decode_frame_len(&[0xff, 0x01], 100).is_err());
        assert!(decode_frame_len(&[0xff; 11], usize::MAX).is_err());
    }
}
