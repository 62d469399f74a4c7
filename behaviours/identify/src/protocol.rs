//! The identify wire format: the `Identify` protobuf, its length-prefixed framing, and the
//! conversion between wire messages and typed [`Info`].
//!
//! Every message travels as an unsigned varint length followed by that many bytes of protobuf
//! (`identify/README.md` in `libp2p/specs`). The length is checked against a bound before
//! anything is allocated ([`DEFAULT_MAX_MESSAGE_SIZE`] = 4096 bytes, rust-libp2p's limit; the
//! reading is [`meshwire_swarm::toolkit::read_frame`]), and every failure is a typed
//! [`Error`]; no input makes the decoder panic.
//!
//! A reader accepts up to [`MAX_FRAMES`] messages on one stream and merges them in protobuf
//! fashion (later scalar fields win, repeated fields add up), because go-libp2p splits a
//! large response into two messages (the second carrying only its signed peer record).
//!
//! Turning a message into an [`Info`] keeps at most [`Limits::max_listen_addrs`] distinct
//! listen addresses and [`Limits::max_protocols`] distinct protocols (the rest is ignored),
//! in time linear in the message: ten frames of 4 KiB can carry some 30,000 tiny addresses.
//!
//! ```
//! use meshwire_identify::protocol::{decode_frame, encode_frame, wire};
//!
//! let msg = wire::Identify {
//!     agent_version: Some("meshwire/0.1.0".into()),
//!     protocols: vec!["/ipfs/id/1.0.0".into()],
//!     ..Default::default()
//! };
//! let bytes = encode_frame(&msg, 4096).unwrap();
//! let (decoded, used) = decode_frame(&bytes, 4096).unwrap().unwrap();
//! assert_eq!((decoded, used), (msg, bytes.len()));
//! // Half a frame: more bytes are needed.
//! assert!(decode_frame(&bytes[..5], 4096).unwrap().is_none());
//! ```

use std::collections::HashSet;
use std::hash::Hash;

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use meshwire_core::{IdentityError, PeerId, PublicKey};
use meshwire_swarm::toolkit::{self, FrameError, Timeout};
use meshwire_swarm::{StreamError, StreamProtocol};
use multiaddr::Multiaddr;
use prost::Message as _;

/// The protocol of an identify request: the asking side opens the stream, the other side
/// answers with one message and closes.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/ipfs/id/1.0.0");

/// The protocol of an identify push: the sender opens the stream and writes its message.
pub const PUSH_PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/ipfs/id/push/1.0.0");

/// Default bound of one message, without its length prefix (rust-libp2p's limit).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4096;

/// Most messages read from one stream (go-libp2p splits a large response in two; it caps at
/// ten, and so do we).
pub const MAX_FRAMES: usize = 10;

/// Default of [`Limits::max_listen_addrs`]: go-libp2p keeps at most 64 listen addresses
/// of an identify message.
pub const DEFAULT_MAX_LISTEN_ADDRS: usize = 64;

/// Default of [`Limits::max_protocols`] (real nodes announce a few dozen).
pub const DEFAULT_MAX_PROTOCOLS: usize = 128;

/// The longest length prefix the multiformats unsigned-varint spec allows.
const MAX_VARINT_LEN: usize = 9;

/// The protobuf message exactly as it travels on the wire (proto2).
///
/// Field numbers: `publicKey = 1`, `listenAddrs = 2`, `protocols = 3`, `observedAddr = 4`,
/// `protocolVersion = 5`, `agentVersion = 6`, `signedPeerRecord = 8`.
pub mod wire {
    /// The `Identify` message.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Identify {
        /// The family of protocols the peer speaks, e.g. `ipfs/0.1.0`.
        #[prost(string, optional, tag = "5")]
        pub protocol_version: Option<String>,
        /// The implementation, e.g. `meshwire/0.1.0`.
        #[prost(string, optional, tag = "6")]
        pub agent_version: Option<String>,
        /// The peer's public key, protobuf-encoded as in the peer-id spec.
        #[prost(bytes = "vec", optional, tag = "1")]
        pub public_key: Option<Vec<u8>>,
        /// Addresses the peer listens on, binary multiaddrs.
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub listen_addrs: Vec<Vec<u8>>,
        /// The address of the receiver as the sender sees it, a binary multiaddr.
        #[prost(bytes = "vec", optional, tag = "4")]
        pub observed_addr: Option<Vec<u8>>,
        /// Protocols the peer accepts.
        #[prost(string, repeated, tag = "3")]
        pub protocols: Vec<String>,
        /// A signed peer record envelope (decoded and ignored by meshwire; never sent).
        #[prost(bytes = "vec", optional, tag = "8")]
        pub signed_peer_record: Option<Vec<u8>>,
    }
}

/// What went wrong in an identify exchange.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream could not be opened or negotiated, or reading or writing it failed
    /// (including a remote that does not support the protocol, see [`Error::is_unsupported`]).
    #[error("identify stream: {0}")]
    Stream(StreamError),
    /// A frame was too large (announced by the remote, or our own), its length prefix
    /// invalid, or the stream ended inside it. Never [`FrameError::Stream`]: stream failures
    /// are [`Error::Stream`].
    #[error("identify frame: {0}")]
    Frame(FrameError),
    /// The protobuf could not be decoded.
    #[error("malformed identify message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The stream ended before any message arrived.
    #[error("identify stream closed without a message")]
    NoMessage,
    /// More than [`MAX_FRAMES`] messages on one stream.
    #[error("more than {MAX_FRAMES} identify messages on one stream")]
    TooManyFrames,
    /// The public key could not be decoded.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(#[from] IdentityError),
    /// The message carries no public key and none can be derived from the peer id.
    #[error("no public key")]
    MissingPublicKey,
    /// The public key does not belong to the peer of the connection.
    #[error("public key of {actual} sent by {expected}")]
    PublicKeyMismatch {
        /// The peer of the connection.
        expected: PeerId,
        /// The peer the key belongs to.
        actual: PeerId,
    },
    /// The exchange took longer than the configured timeout.
    #[error("identify exchange {0}")]
    Timeout(#[from] Timeout),
}

impl From<StreamError> for Error {
    fn from(e: StreamError) -> Self {
        Error::Stream(e)
    }
}

impl From<FrameError> for Error {
    /// A stream failure while framing becomes [`Error::Stream`]; the rest [`Error::Frame`].
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Stream(e) => Error::Stream(e),
            other => Error::Frame(other),
        }
    }
}

impl Error {
    /// Whether the remote does not support the protocol (a refused, lazily negotiated
    /// stream: [`StreamError::is_unsupported`]).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Stream(e) if e.is_unsupported())
    }
}

/// How much of a peer's message [`Info`] keeps; the excess is ignored (and counted in a
/// `debug` log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct listen addresses kept (default [`DEFAULT_MAX_LISTEN_ADDRS`]).
    pub max_listen_addrs: usize,
    /// Distinct protocols kept (default [`DEFAULT_MAX_PROTOCOLS`]).
    pub max_protocols: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_listen_addrs: DEFAULT_MAX_LISTEN_ADDRS,
            max_protocols: DEFAULT_MAX_PROTOCOLS,
        }
    }
}

/// What a peer told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its public key (checked against the connection's peer id).
    pub public_key: PublicKey,
    /// Its protocol family, e.g. `ipfs/0.1.0` (empty if it sent none).
    pub protocol_version: String,
    /// Its implementation, e.g. `meshwire/0.1.0` (empty if it sent none).
    pub agent_version: String,
    /// The addresses it listens on: distinct, at most [`Limits::max_listen_addrs`]
    /// (undecodable ones are skipped).
    pub listen_addrs: Vec<Multiaddr>,
    /// The protocols it accepts: distinct, at most [`Limits::max_protocols`] (invalid names
    /// are skipped).
    pub protocols: Vec<StreamProtocol>,
    /// Our address as it sees it (empty if it sent none or an undecodable one).
    pub observed_addr: Multiaddr,
}

impl Info {
    /// The peer id of [`Info::public_key`].
    pub fn peer_id(&self) -> PeerId {
        self.public_key.to_peer_id()
    }

    /// The info of a full identify response of `peer`, keeping what `limits` allow.
    ///
    /// A missing public key is taken from the peer id when it inlines it (ed25519 keys do).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`], [`Error::MissingPublicKey`],
    /// [`Error::PublicKeyMismatch`].
    pub fn from_wire(peer: &PeerId, msg: wire::Identify, limits: Limits) -> Result<Info, Error> {
        let public_key = match msg.public_key {
            Some(ref bytes) => checked_key(peer, bytes)?,
            None => peer.public_key().ok_or(Error::MissingPublicKey)?,
        };
        Ok(Info {
            public_key,
            protocol_version: msg.protocol_version.unwrap_or_default(),
            agent_version: msg.agent_version.unwrap_or_default(),
            listen_addrs: parse_addrs(peer, msg.listen_addrs, limits.max_listen_addrs),
            protocols: parse_protocols(peer, msg.protocols, limits.max_protocols),
            observed_addr: msg
                .observed_addr
                .and_then(|bytes| Multiaddr::try_from(bytes).ok())
                .unwrap_or_else(Multiaddr::empty),
        })
    }

    /// Applies a push of `peer` (a partial update), keeping what `limits` allow: fields the
    /// push carries replace ours, absent ones (and empty lists) keep their values.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`] and [`Error::PublicKeyMismatch`]; `self` is unchanged then.
    pub fn apply_push(
        &mut self,
        peer: &PeerId,
        msg: wire::Identify,
        limits: Limits,
    ) -> Result<(), Error> {
        if let Some(bytes) = &msg.public_key {
            self.public_key = checked_key(peer, bytes)?;
        }
        if let Some(v) = msg.protocol_version {
            self.protocol_version = v;
        }
        if let Some(v) = msg.agent_version {
            self.agent_version = v;
        }
        if !msg.listen_addrs.is_empty() {
            self.listen_addrs = parse_addrs(peer, msg.listen_addrs, limits.max_listen_addrs);
        }
        if !msg.protocols.is_empty() {
            self.protocols = parse_protocols(peer, msg.protocols, limits.max_protocols);
        }
        if let Some(addr) = msg.observed_addr.and_then(|b| Multiaddr::try_from(b).ok()) {
            self.observed_addr = addr;
        }
        Ok(())
    }

    /// The wire message of this info (no signed peer record).
    pub fn to_wire(&self) -> wire::Identify {
        wire::Identify {
            protocol_version: Some(self.protocol_version.clone()),
            agent_version: Some(self.agent_version.clone()),
            public_key: Some(self.public_key.encode_protobuf()),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_vec()).collect(),
            observed_addr: Some(self.observed_addr.to_vec()),
            protocols: self.protocols.iter().map(|p| p.to_string()).collect(),
            signed_peer_record: None,
        }
    }
}

fn checked_key(peer: &PeerId, bytes: &[u8]) -> Result<PublicKey, Error> {
    let key = PublicKey::decode_protobuf(bytes)?;
    let actual = key.to_peer_id();
    if actual != *peer {
        return Err(Error::PublicKeyMismatch {
            expected: *peer,
            actual,
        });
    }
    Ok(key)
}

/// The first `max` distinct values `parse` accepts of `raw`, in order, in linear time; what is
/// skipped (invalid, or past `max`) is counted in one `debug` log.
fn distinct<R, T>(
    peer: &PeerId,
    what: &'static str,
    raw: Vec<R>,
    max: usize,
    parse: impl Fn(R) -> Option<T>,
) -> Vec<T>
where
    T: Clone + Eq + Hash,
{
    let total = raw.len();
    let mut seen: HashSet<T> = HashSet::with_capacity(total.min(max));
    let mut out = Vec::with_capacity(total.min(max));
    let mut looked_at = 0usize;
    let mut invalid = 0usize;
    for item in raw {
        if out.len() >= max {
            break;
        }
        looked_at += 1;
        match parse(item) {
            Some(value) => {
                if seen.insert(value.clone()) {
                    out.push(value);
                }
            }
            None => invalid += 1,
        }
    }
    let ignored = total - looked_at;
    if invalid > 0 || ignored > 0 {
        tracing::debug!(%peer, what, invalid, ignored, max, "identify: skipped part of a peer's list");
    }
    out
}

fn parse_addrs(peer: &PeerId, addrs: Vec<Vec<u8>>, max: usize) -> Vec<Multiaddr> {
    distinct(peer, "listen addresses", addrs, max, |bytes| {
        Multiaddr::try_from(bytes).ok().filter(|a| !a.is_empty())
    })
}

fn parse_protocols(peer: &PeerId, protocols: Vec<String>, max: usize) -> Vec<StreamProtocol> {
    distinct(peer, "protocols", protocols, max, |p| {
        StreamProtocol::try_from_owned(p).ok()
    })
}

/// Encodes `msg` with its length prefix.
///
/// # Errors
///
/// [`FrameError::TooLarge`] (as [`Error::Frame`]) if the protobuf is longer than `max`.
pub fn encode_frame(msg: &wire::Identify, max: usize) -> Result<Vec<u8>, Error> {
    let len = msg.encoded_len();
    if len > max {
        return Err(too_large(len, max));
    }
    Ok(toolkit::encode_frame(&msg.encode_to_vec()))
}

fn too_large(len: usize, max: usize) -> Error {
    Error::Frame(FrameError::TooLarge {
        len: len as u64,
        max,
    })
}

/// Decodes one length-prefixed message from the start of `buf`: `Ok(None)` if `buf` holds
/// only part of it, otherwise the message and the number of bytes it took.
///
/// # Errors
///
/// [`FrameError::InvalidPrefix`] and [`FrameError::TooLarge`] (checked as soon as the prefix
/// is known, before the body arrives) as [`Error::Frame`], [`Error::Decode`].
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(wire::Identify, usize)>, Error> {
    let head = &buf[..buf.len().min(MAX_VARINT_LEN)];
    let (len, prefix_len) = match unsigned_varint::decode::usize(head) {
        Ok((len, rest)) => (len, head.len() - rest.len()),
        Err(unsigned_varint::decode::Error::Insufficient) if head.len() < MAX_VARINT_LEN => {
            return Ok(None)
        }
        Err(_) => return Err(Error::Frame(FrameError::InvalidPrefix)),
    };
    if len > max {
        return Err(too_large(len, max));
    }
    let Some(body) = buf[prefix_len..].get(..len) else {
        return Ok(None);
    };
    let msg = wire::Identify::decode(body)?;
    Ok(Some((msg, prefix_len + len)))
}

/// Reads messages until the remote closes the stream (at most [`MAX_FRAMES`], each at most
/// `max` bytes, read with [`toolkit::read_frame`]) and merges them into one.
///
/// # Errors
///
/// [`Error::NoMessage`] if the stream ends before any message; [`Error::TooManyFrames`];
/// framing errors ([`Error::Frame`]); [`Error::Decode`]; stream errors ([`Error::Stream`]).
pub async fn read_message<S>(io: &mut S, max: usize) -> Result<wire::Identify, Error>
where
    S: AsyncRead + Unpin,
{
    let mut msg = wire::Identify::default();
    let mut frames = 0;
    while let Some(body) = toolkit::read_frame(io, max).await? {
        frames += 1;
        if frames > MAX_FRAMES {
            return Err(Error::TooManyFrames);
        }
        msg.merge(body.as_slice())?;
    }
    if frames == 0 {
        return Err(Error::NoMessage);
    }
    Ok(msg)
}

/// Writes an encoded frame (from [`encode_frame`]) and closes our side of the stream.
///
/// # Errors
///
/// The stream's errors ([`Error::Stream`], classified by `From<io::Error> for StreamError`).
pub async fn write_and_close<S>(io: &mut S, frame: &[u8]) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    io.write_all(frame).await.map_err(StreamError::from)?;
    io.close().await.map_err(StreamError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use meshwire_core::Keypair;
    use proptest::prelude::*;

    const MAX: usize = DEFAULT_MAX_MESSAGE_SIZE;
    const L: Limits = Limits {
        max_listen_addrs: DEFAULT_MAX_LISTEN_ADDRS,
        max_protocols: DEFAULT_MAX_PROTOCOLS,
    };

    fn sample(key: &PublicKey) -> wire::Identify {
        wire::Identify {
            protocol_version: Some("ipfs/0.1.0".into()),
            agent_version: Some("meshwire/0.1.0".into()),
            public_key: Some(key.encode_protobuf()),
            listen_addrs: vec![
                "/ip4/127.0.0.1/udp/4001/quic-v1"
                    .parse::<Multiaddr>()
                    .unwrap()
                    .to_vec(),
                "/ip6/::1/udp/4001/quic-v1"
                    .parse::<Multiaddr>()
                    .unwrap()
                    .to_vec(),
            ],
            observed_addr: Some(
                "/ip4/10.0.0.1/udp/5000/quic-v1"
                    .parse::<Multiaddr>()
                    .unwrap()
                    .to_vec(),
            ),
            protocols: vec!["/ipfs/id/1.0.0".into(), "/ipfs/ping/1.0.0".into()],
            signed_peer_record: None,
        }
    }

    #[test]
    fn round_trip() {
        let key = Keypair::generate();
        let msg = sample(&key.public());
        let bytes = encode_frame(&msg, MAX).unwrap();
        let (decoded, used) = decode_frame(&bytes, MAX).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, msg);
        let info = Info::from_wire(&key.peer_id(), decoded, L).unwrap();
        assert_eq!(info.public_key, key.public());
        assert_eq!(info.protocol_version, "ipfs/0.1.0");
        assert_eq!(info.agent_version, "meshwire/0.1.0");
        assert_eq!(
            info.listen_addrs,
            vec![
                "/ip4/127.0.0.1/udp/4001/quic-v1"
                    .parse::<Multiaddr>()
                    .unwrap(),
                "/ip6/::1/udp/4001/quic-v1".parse().unwrap()
            ]
        );
        assert_eq!(
            info.protocols,
            vec![PROTOCOL_NAME, StreamProtocol::new("/ipfs/ping/1.0.0")]
        );
        assert_eq!(
            info.observed_addr,
            "/ip4/10.0.0.1/udp/5000/quic-v1"
                .parse::<Multiaddr>()
                .unwrap()
        );
        // Info -> wire -> Info.
        let again = Info::from_wire(&key.peer_id(), info.to_wire(), L).unwrap();
        assert_eq!(again, info);
    }

    #[test]
    fn hand_built_bytes_decode_to_the_right_fields() {
        let key = Keypair::from_secret_bytes([7; 32]);
        let pk = key.public().encode_protobuf();
        assert_eq!(pk.len(), 36);
        // /ip4/1.2.3.4/udp/5/quic-v1: ip4 = 4, udp = 273 (0x91 0x02), quic-v1 = 461 (0xcd 0x03).
        let addr = [0x04, 1, 2, 3, 4, 0x91, 0x02, 0x00, 0x05, 0xcd, 0x03];
        let mut body = Vec::new();
        // publicKey = 1, length-delimited: tag (1 << 3) | 2.
        body.extend_from_slice(&[0x0a, 36]);
        body.extend_from_slice(&pk);
        // listenAddrs = 2.
        body.extend_from_slice(&[0x12, addr.len() as u8]);
        body.extend_from_slice(&addr);
        // protocols = 3.
        body.extend_from_slice(&[0x1a, 4]);
        body.extend_from_slice(b"/a/1");
        // observedAddr = 4.
        body.extend_from_slice(&[0x22, addr.len() as u8]);
        body.extend_from_slice(&addr);
        // protocolVersion = 5.
        body.extend_from_slice(&[0x2a, 3]);
        body.extend_from_slice(b"p/1");
        // agentVersion = 6.
        body.extend_from_slice(&[0x32, 3]);
        body.extend_from_slice(b"a/2");
        // signedPeerRecord = 8: decoded and ignored.
        body.extend_from_slice(&[0x42, 2, 0xde, 0xad]);
        let mut frame = vec![body.len() as u8];
        frame.extend_from_slice(&body);

        let (msg, used) = decode_frame(&frame, MAX).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(msg.public_key.as_deref(), Some(&pk[..]));
        assert_eq!(msg.listen_addrs, vec![addr.to_vec()]);
        assert_eq!(msg.protocols, vec!["/a/1".to_string()]);
        assert_eq!(msg.observed_addr.as_deref(), Some(&addr[..]));
        assert_eq!(msg.protocol_version.as_deref(), Some("p/1"));
        assert_eq!(msg.agent_version.as_deref(), Some("a/2"));
        assert_eq!(msg.signed_peer_record.as_deref(), Some(&[0xde, 0xad][..]));

        let info = Info::from_wire(&key.peer_id(), msg.clone(), L).unwrap();
        let expected: Multiaddr = "/ip4/1.2.3.4/udp/5/quic-v1".parse().unwrap();
        assert_eq!(info.listen_addrs, vec![expected.clone()]);
        assert_eq!(info.observed_addr, expected);

        // And our encoder produces exactly these bytes, minus the signed record.
        let mut ours = msg;
        ours.signed_peer_record = None;
        let encoded = encode_frame(&ours, MAX).unwrap();
        let mut expected_body = body.clone();
        expected_body.truncate(body.len() - 4);
        // prost writes fields in tag order, as the hand-built body does.
        assert_eq!(&encoded[1..], &expected_body[..]);
    }

    #[test]
    fn truncated_input_needs_more_bytes() {
        let key = Keypair::generate();
        let bytes = encode_frame(&sample(&key.public()), MAX).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_frame(&bytes[..cut], MAX).unwrap().is_none(), "{cut}");
            let mut cursor = Cursor::new(bytes[..cut].to_vec());
            let err = block_on(read_message(&mut cursor, MAX)).unwrap_err();
            if cut == 0 {
                assert!(matches!(err, Error::NoMessage), "{err:?}");
            } else {
                assert!(
                    matches!(err, Error::Frame(FrameError::Truncated)),
                    "{cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_the_body() {
        // 4097 as a varint, then nothing: the size is refused without waiting for the body.
        let frame = [0x81, 0x20];
        assert!(matches!(
            decode_frame(&frame, MAX),
            Err(Error::Frame(FrameError::TooLarge {
                len: 4097,
                max: MAX
            }))
        ));
        let mut cursor = Cursor::new(frame.to_vec());
        assert!(matches!(
            block_on(read_message(&mut cursor, MAX)),
            Err(Error::Frame(FrameError::TooLarge { len: 4097, .. }))
        ));
        // A huge prefix (u64::MAX-ish) is refused too, without allocating.
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            decode_frame(&huge, MAX),
            Err(Error::Frame(
                FrameError::TooLarge { .. } | FrameError::InvalidPrefix
            ))
        ));
        let mut cursor = Cursor::new(huge.to_vec());
        assert!(block_on(read_message(&mut cursor, MAX)).is_err());
        // Ten continuation bytes: not a valid varint.
        let bad = [0xff; 10];
        assert!(matches!(
            decode_frame(&bad, MAX),
            Err(Error::Frame(FrameError::InvalidPrefix))
        ));
        // Non-minimal encoding.
        assert!(matches!(
            decode_frame(&[0x81, 0x00], MAX),
            Err(Error::Frame(FrameError::InvalidPrefix))
        ));
        // Our own oversized message is refused at encoding.
        let big = wire::Identify {
            agent_version: Some("x".repeat(5000)),
            ..Default::default()
        };
        assert!(matches!(
            encode_frame(&big, MAX),
            Err(Error::Frame(FrameError::TooLarge { max: MAX, .. }))
        ));
        // A configurable bound.
        let small = encode_frame(&sample(&Keypair::generate().public()), MAX).unwrap();
        assert!(matches!(
            decode_frame(&small, 16),
            Err(Error::Frame(FrameError::TooLarge { max: 16, .. }))
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        // A length of 3 with a truncated varint field inside.
        assert!(matches!(
            decode_frame(&[3, 0x08, 0xff, 0xff], MAX),
            Err(Error::Decode(_))
        ));
        // Invalid UTF-8 in agentVersion.
        assert!(matches!(
            decode_frame(&[3, 0x32, 1, 0xff], MAX),
            Err(Error::Decode(_))
        ));
        // Wire type 7 does not exist.
        assert!(matches!(
            decode_frame(&[1, 0x0f], MAX),
            Err(Error::Decode(_))
        ));
        // Field length beyond the frame.
        assert!(matches!(
            decode_frame(&[2, 0x0a, 100], MAX),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn bad_keys_and_addresses() {
        let key = Keypair::generate();
        let other = Keypair::generate();
        // The key of another peer.
        let msg = sample(&other.public());
        assert!(matches!(
            Info::from_wire(&key.peer_id(), msg.clone(), L),
            Err(Error::PublicKeyMismatch { .. })
        ));
        // A key that does not decode.
        let mut bad = msg.clone();
        bad.public_key = Some(vec![1, 2, 3]);
        assert!(matches!(
            Info::from_wire(&key.peer_id(), bad, L),
            Err(Error::InvalidPublicKey(_))
        ));
        // No key: taken from the ed25519 peer id.
        let mut none = sample(&key.public());
        none.public_key = None;
        assert_eq!(
            Info::from_wire(&key.peer_id(), none, L).unwrap().public_key,
            key.public()
        );
        // Undecodable addresses are skipped, the rest kept; a bad observed address is empty.
        let mut addrs = sample(&key.public());
        addrs.listen_addrs.insert(0, vec![0xff, 0xff, 0xff]);
        addrs.listen_addrs.push(vec![0x04, 1, 2]);
        addrs.observed_addr = Some(vec![0x99]);
        addrs.protocols.push("no-slash".into());
        let info = Info::from_wire(&key.peer_id(), addrs, L).unwrap();
        assert_eq!(info.listen_addrs.len(), 2);
        assert!(info.observed_addr.is_empty());
        assert_eq!(info.protocols.len(), 2);
    }

    #[test]
    fn push_is_a_partial_update() {
        let key = Keypair::generate();
        let peer = key.peer_id();
        let mut info = Info::from_wire(&peer, sample(&key.public()), L).unwrap();
        let before = info.clone();
        let new_addr: Multiaddr = "/ip4/192.0.2.1/udp/9/quic-v1".parse().unwrap();
        let push = wire::Identify {
            listen_addrs: vec![new_addr.to_vec()],
            ..Default::default()
        };
        info.apply_push(&peer, push, L).unwrap();
        assert_eq!(info.listen_addrs, vec![new_addr]);
        assert_eq!(info.protocols, before.protocols);
        assert_eq!(info.agent_version, before.agent_version);
        assert_eq!(info.observed_addr, before.observed_addr);
        // A push with a foreign key changes nothing.
        let bad = wire::Identify {
            public_key: Some(Keypair::generate().public().encode_protobuf()),
            agent_version: Some("evil".into()),
            ..Default::default()
        };
        let snapshot = info.clone();
        assert!(info.apply_push(&peer, bad, L).is_err());
        assert_eq!(info, snapshot);
    }

    #[test]
    fn frames_are_merged_until_end_of_stream() {
        // go-libp2p sends the signed peer record in a second message.
        let key = Keypair::generate();
        let first = sample(&key.public());
        let second = wire::Identify {
            signed_peer_record: Some(vec![1, 2, 3]),
            listen_addrs: vec!["/ip4/8.8.8.8/udp/1/quic-v1"
                .parse::<Multiaddr>()
                .unwrap()
                .to_vec()],
            ..Default::default()
        };
        let mut bytes = encode_frame(&first, MAX).unwrap();
        bytes.extend(encode_frame(&second, MAX).unwrap());
        let mut cursor = Cursor::new(bytes);
        let msg = block_on(read_message(&mut cursor, MAX)).unwrap();
        assert_eq!(msg.signed_peer_record, Some(vec![1, 2, 3]));
        assert_eq!(msg.listen_addrs.len(), 3);
        assert_eq!(msg.agent_version, first.agent_version);

        // Too many frames.
        let empty = encode_frame(&wire::Identify::default(), MAX).unwrap();
        assert_eq!(empty, [0]);
        let mut cursor = Cursor::new(vec![0u8; MAX_FRAMES + 1]);
        assert!(matches!(
            block_on(read_message(&mut cursor, MAX)),
            Err(Error::TooManyFrames)
        ));
        let mut cursor = Cursor::new(vec![0u8; MAX_FRAMES]);
        assert!(block_on(read_message(&mut cursor, MAX)).is_ok());
    }

    #[test]
    fn write_and_close_writes_the_frame() {
        let frame = encode_frame(&sample(&Keypair::generate().public()), MAX).unwrap();
        let mut out = Cursor::new(Vec::new());
        block_on(write_and_close(&mut out, &frame)).unwrap();
        assert_eq!(out.into_inner(), frame);
    }

    /// The message of a hostile peer: `frames` full frames of distinct tiny addresses (and
    /// as many distinct protocol names), as `read_message` merges them.
    fn flood(key: &Keypair, frames: usize) -> (Vec<u8>, usize, usize) {
        let mut bytes = Vec::new();
        let (mut addrs, mut protocols) = (0usize, 0usize);
        let mut n = 0u32;
        for f in 0..frames {
            let mut msg = wire::Identify {
                public_key: (f == 0).then(|| key.public().encode_protobuf()),
                ..Default::default()
            };
            // Fill the frame with 7-byte /ip4/a.b.c.d/ addresses and a few protocols.
            loop {
                n += 1;
                let addr: Multiaddr = format!("/ip4/{}", std::net::Ipv4Addr::from(n))
                    .parse()
                    .unwrap();
                msg.listen_addrs.push(addr.to_vec());
                if n % 8 == 0 {
                    msg.protocols.push(format!("/p/{n}"));
                }
                if msg.encoded_len() > MAX {
                    msg.listen_addrs.pop();
                    break;
                }
            }
            while msg.encoded_len() > MAX {
                msg.protocols.pop();
            }
            addrs += msg.listen_addrs.len();
            protocols += msg.protocols.len();
            bytes.extend(encode_frame(&msg, MAX).unwrap());
        }
        (bytes, addrs, protocols)
    }

    #[test]
    fn thousands_of_distinct_addresses_are_capped() {
        let key = Keypair::generate();
        let (bytes, addrs, protocols) = flood(&key, MAX_FRAMES);
        assert!(addrs > 5_000, "{addrs}");
        assert!(protocols > 500, "{protocols}");
        let msg = block_on(read_message(&mut Cursor::new(bytes), MAX)).unwrap();
        assert_eq!(msg.listen_addrs.len(), addrs);
        let first: Vec<Multiaddr> = msg.listen_addrs[..DEFAULT_MAX_LISTEN_ADDRS]
            .iter()
            .map(|b| Multiaddr::try_from(b.clone()).unwrap())
            .collect();
        // The default caps hold, keeping the first distinct entries in order.
        let info = Info::from_wire(&key.peer_id(), msg.clone(), L).unwrap();
        assert_eq!(info.listen_addrs, first);
        assert_eq!(info.protocols.len(), DEFAULT_MAX_PROTOCOLS);
        // A push is capped alike, also with smaller configured limits.
        let small = Limits {
            max_listen_addrs: 3,
            max_protocols: 2,
        };
        let mut pushed = info.clone();
        pushed
            .apply_push(&key.peer_id(), msg.clone(), small)
            .unwrap();
        assert_eq!(pushed.listen_addrs, first[..3]);
        assert_eq!(pushed.protocols, info.protocols[..2]);
        // Duplicates do not count against the cap: 5,000 copies of one address, then others.
        let mut dup = msg;
        let one = dup.listen_addrs[0].clone();
        dup.listen_addrs
            .splice(0..0, std::iter::repeat_n(one, 5_000));
        let info = Info::from_wire(&key.peer_id(), dup, L).unwrap();
        assert_eq!(info.listen_addrs, first);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let peer = Keypair::from_secret_bytes([1; 32]).peer_id();
            if let Ok(Some((msg, used))) = decode_frame(&bytes, MAX) {
                prop_assert!(used <= bytes.len());
                let mut info = Info::from_wire(&peer, msg.clone(), L).ok();
                if let Some(info) = info.as_mut() {
                    let _ = info.apply_push(&peer, msg, L);
                }
            }
            let mut cursor = Cursor::new(bytes.clone());
            if let Ok(msg) = block_on(read_message(&mut cursor, MAX)) {
                let _ = Info::from_wire(&peer, msg, L);
            }
        }

        #[test]
        fn random_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            // A well-framed body of random bytes exercises the protobuf and multiaddr decoders.
            let mut frame = Vec::new();
            let mut prefix = unsigned_varint::encode::usize_buffer();
            frame.extend_from_slice(unsigned_varint::encode::usize(body.len(), &mut prefix));
            frame.extend_from_slice(&body);
            let peer = Keypair::from_secret_bytes([1; 32]).peer_id();
            if let Ok(Some((msg, used))) = decode_frame(&frame, MAX) {
                prop_assert_eq!(used, frame.len());
                let _ = Info::from_wire(&peer, msg, L);
            }
        }

        #[test]
        fn random_addresses_never_panic(addrs in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
            let key = Keypair::from_secret_bytes([1; 32]);
            let msg = wire::Identify {
                public_key: Some(key.public().encode_protobuf()),
                listen_addrs: addrs.clone(),
                observed_addr: addrs.first().cloned(),
                ..Default::default()
            };
            let info = Info::from_wire(&key.peer_id(), msg, L).unwrap();
            prop_assert!(info.listen_addrs.len() <= addrs.len());
        }
    }
}
