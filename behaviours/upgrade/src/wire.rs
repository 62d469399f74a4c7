//! The frames of `/meshwire/upgrade/2.0.0` (`docs/upgrade.md` is the spec).
//!
//! Each frame is carried as one length-prefixed message on a path's stream (the toolkit's
//! `write_frame`/`read_frame`: an unsigned-varint length, then the body). The body is one type
//! byte followed by unsigned varints (at most 10 bytes each) and, for `Data`, the payload:
//!
//! | type | frame | fields |
//! | --- | --- | --- |
//! | 0 | `Hello` | session, path, recv_next, recv_limit |
//! | 1 | `Welcome` | path, recv_next, recv_limit |
//! | 2 | `Refuse` | path, reason (1 unknown session, 2 too many paths, 3 policy) |
//! | 3 | `Data` | seq, then the payload (the rest of the body) |
//! | 4 | `Ack` | next, limit |
//! | 5 | `Fence` | next_seq |
//! | 6 | `Fin` | next_seq |
//!
//! Credit (`recv_limit`, `limit`) is a byte offset: a message of `len` bytes costs
//! `len + 32`, and the sender may send a message only if the cost of every message before it
//! plus its own is at most the limit (`docs/upgrade.md`, "Sequence numbers,
//! acknowledgements, credit").
//!
//! [`Frame::decode`] is given the bound on a payload before it looks at the body and returns a
//! typed [`WireError`] for every malformed body; it never panics and copies at most the
//! (already received, bounded) body.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol name negotiated on every path's stream.
pub const PROTOCOL: &str = "/meshwire/upgrade/2.0.0";

/// The largest header of any frame (a type byte and four varints of at most 10 bytes).
pub const MAX_HEADER: usize = 1 + 4 * 10;

/// Appends the body of a `Data` frame (message `seq`, `payload`) to `out`: what
/// [`Frame::encode_into`] writes for [`Frame::Data`], without the frame.
pub fn encode_data_into(seq: u64, payload: &[u8], out: &mut BytesMut) {
    out.put_u8(DATA);
    put_varints(out, &[seq]);
    out.put_slice(payload);
}

/// Appends a whole `Data` frame (message `seq`, `payload`) to `out`: its length prefix, then
/// the body [`encode_data_into`] writes (the length is known beforehand, so no scratch
/// buffer is needed).
pub fn encode_data_framed(seq: u64, payload: &[u8], out: &mut BytesMut) {
    let body = 1 + varint_len(seq) + payload.len();
    // The header (length prefix, type, sequence number: at most 21 bytes) assembled on the
    // stack and appended at once, then the payload: two appends per message.
    let mut header = [0u8; 24];
    let mut at = put_varint(&mut header, 0, body as u64);
    header[at] = DATA;
    at = put_varint(&mut header, at + 1, seq);
    // The whole array is appended (a copy of fixed size, no call) and the bytes past the
    // header cut off again before the payload goes after it.
    let start = out.len();
    out.reserve(header.len() + payload.len());
    out.extend_from_slice(&header);
    out.truncate(start + at);
    out.extend_from_slice(payload);
}

/// Writes `value` as an unsigned varint into `buf` from `at` (room for 10 bytes needed);
/// the position after it.
fn put_varint(buf: &mut [u8; 24], mut at: usize, mut value: u64) -> usize {
    while value >= 0x80 {
        if let Some(byte) = buf.get_mut(at) {
            *byte = (value as u8) | 0x80;
        }
        value >>= 7;
        at += 1;
    }
    if let Some(byte) = buf.get_mut(at) {
        *byte = value as u8;
    }
    at + 1
}

/// The length of `value` as an unsigned varint (1 to 10 bytes).
fn varint_len(value: u64) -> usize {
    // 7 bits per byte; 0 takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// The unsigned varint at the front of `data` and the bytes it takes, for values of up to 9
/// bytes, decoded as `unsigned_varint::decode::u64` decodes them; `None` for anything else
/// (too short, 10 bytes, not minimal): the caller then asks `unsigned_varint`, which
/// reports why. The common case of the readers' loops, without the general decoder's cost.
#[inline]
pub(crate) fn varint_fast(data: &[u8]) -> Option<(u64, usize)> {
    // One byte: the lengths of small frames.
    if let Some(&byte) = data.first() {
        if byte < 0x80 {
            return Some((u64::from(byte), 1));
        }
    }
    let mut value = 0u64;
    for (i, &byte) in data.iter().take(9).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // A last byte of 0 after others is not minimal: refused by the general decoder.
            if byte == 0 && i > 0 {
                return None;
            }
            return Some((value, i + 1));
        }
    }
    None
}

/// A `Data` body's message number and where its payload starts, when `body` is a `Data`
/// frame whose number [`varint_fast`] decodes and whose payload is within `max_payload`;
/// `None` otherwise ([`Frame::decode_lent`] then decodes it, or says what is wrong).
#[inline]
pub(crate) fn data_fast(body: &[u8], max_payload: usize) -> Option<(u64, usize)> {
    let (&kind, rest) = body.split_first()?;
    if kind != DATA {
        return None;
    }
    let (seq, n) = varint_fast(rest)?;
    let offset = 1 + n;
    (body.len() - offset <= max_payload).then_some((seq, offset))
}

/// A frame body decoded without copying a `Data` payload ([`Frame::decode_lent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A frame other than `Data`.
    Frame(Frame),
    /// A `Data` frame: message `seq`, its payload the body's bytes from `offset` on (checked
    /// against the bound).
    Data {
        /// The message's number.
        seq: u64,
        /// Where the payload starts in the body.
        offset: usize,
    },
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame on a new path, from the side that opened it: which session the path
    /// belongs to, the path's id, and what the sender has received (`recv_next`: every
    /// message below it) and may receive (`recv_limit`: the credit, a byte offset).
    Hello {
        /// The session's id (chosen by the side that created the session).
        session: u64,
        /// The path's id (even from the session's initiator, odd from its responder).
        path: u64,
        /// Every message with a lower sequence number has been received.
        recv_next: u64,
        /// The credit: a message may be sent if the cost (length + 32) of every message up to
        /// and including it is at most this.
        recv_limit: u64,
    },
    /// The answer to a `Hello` accepting the path, with the answerer's receive state.
    Welcome {
        /// The path accepted.
        path: u64,
        /// Every message with a lower sequence number has been received.
        recv_next: u64,
        /// The credit: a message may be sent if the cost (length + 32) of every message up to
        /// and including it is at most this.
        recv_limit: u64,
    },
    /// The answer to a `Hello` refusing the path; the stream is closed after it.
    Refuse {
        /// The path refused.
        path: u64,
        /// Why.
        reason: RefuseReason,
    },
    /// One application message.
    Data {
        /// Its sequence number (the first message of a session is 0).
        seq: u64,
        /// The message.
        payload: Bytes,
    },
    /// A cumulative acknowledgement and the receive credit.
    Ack {
        /// Every message with a lower sequence number has been received.
        next: u64,
        /// The credit, as in `Hello`'s `recv_limit`.
        limit: u64,
    },
    /// The sender sends no more `Data` on this path; all it sent here was below `next_seq`.
    /// The last frame the sender writes on the path.
    Fence {
        /// The sender's next sequence number when it fenced the path.
        next_seq: u64,
    },
    /// The sender's session ends: it sends no message numbered `next_seq` or above.
    Fin {
        /// The number of messages the sender sent in the session.
        next_seq: u64,
    },
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// The session named in the `Hello` is not known (and the `Hello` does not start one).
    UnknownSession,
    /// The session already has its maximum number of paths.
    TooManyPaths,
    /// The peer does not accept new paths (its configuration).
    Policy,
}

impl RefuseReason {
    fn code(self) -> u64 {
        match self {
            RefuseReason::UnknownSession => 1,
            RefuseReason::TooManyPaths => 2,
            RefuseReason::Policy => 3,
        }
    }

    fn from_code(code: u64) -> Result<Self, WireError> {
        match code {
            1 => Ok(RefuseReason::UnknownSession),
            2 => Ok(RefuseReason::TooManyPaths),
            3 => Ok(RefuseReason::Policy),
            other => Err(WireError::UnknownRefuseReason(other)),
        }
    }
}

/// A malformed frame body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body is empty.
    #[error("empty frame")]
    Empty,
    /// The type byte names no frame.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A varint is cut short, too long or overflows 64 bits.
    #[error("bad varint in frame")]
    BadVarint,
    /// A frame other than `Data` has bytes after its fields.
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    /// A `Data` payload is larger than the bound.
    #[error("payload of {len} bytes over the bound of {max}")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A `Refuse` carries an unknown reason code.
    #[error("unknown refuse reason {0}")]
    UnknownRefuseReason(u64),
}

const HELLO: u8 = 0;
const WELCOME: u8 = 1;
const REFUSE: u8 = 2;
const DATA: u8 = 3;
const ACK: u8 = 4;
const FENCE: u8 = 5;
const FIN: u8 = 6;

impl Frame {
    /// The frame's body (to be written as one length-prefixed frame).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the frame's body to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        match self {
            Frame::Hello {
                session,
                path,
                recv_next,
                recv_limit,
            } => {
                out.put_u8(HELLO);
                put_varints(out, &[*session, *path, *recv_next, *recv_limit]);
            }
            Frame::Welcome {
                path,
                recv_next,
                recv_limit,
            } => {
                out.put_u8(WELCOME);
                put_varints(out, &[*path, *recv_next, *recv_limit]);
            }
            Frame::Refuse { path, reason } => {
                out.put_u8(REFUSE);
                put_varints(out, &[*path, reason.code()]);
            }
            Frame::Data { seq, payload } => encode_data_into(*seq, payload, out),
            Frame::Ack { next, limit } => {
                out.put_u8(ACK);
                put_varints(out, &[*next, *limit]);
            }
            Frame::Fence { next_seq } => {
                out.put_u8(FENCE);
                put_varints(out, &[*next_seq]);
            }
            Frame::Fin { next_seq } => {
                out.put_u8(FIN);
                put_varints(out, &[*next_seq]);
            }
        }
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => 11 + payload.len(),
            _ => MAX_HEADER,
        }
    }

    /// The length of the frame's body.
    pub fn encoded_len(&self) -> usize {
        let varints = |values: &[u64]| values.iter().map(|v| varint_len(*v)).sum::<usize>();
        1 + match self {
            Frame::Hello {
                session,
                path,
                recv_next,
                recv_limit,
            } => varints(&[*session, *path, *recv_next, *recv_limit]),
            Frame::Welcome {
                path,
                recv_next,
                recv_limit,
            } => varints(&[*path, *recv_next, *recv_limit]),
            Frame::Refuse { path, reason } => varints(&[*path, reason.code()]),
            Frame::Data { seq, payload } => varint_len(*seq) + payload.len(),
            Frame::Ack { next, limit } => varints(&[*next, *limit]),
            Frame::Fence { next_seq } | Frame::Fin { next_seq } => varint_len(*next_seq),
        }
    }

    /// Appends the whole frame to `out`: its length prefix, then its body.
    pub fn encode_framed_into(&self, out: &mut BytesMut) {
        let body = self.encoded_len();
        out.reserve(varint_len(body as u64) + body);
        put_varints(out, &[body as u64]);
        self.encode_into(out);
    }

    /// Decodes a frame body; a `Data` payload over `max_payload` bytes is refused before it
    /// is copied.
    pub fn decode(body: &[u8], max_payload: usize) -> Result<Frame, WireError> {
        Ok(match Self::decode_lent(body, max_payload)? {
            Decoded::Frame(frame) => frame,
            Decoded::Data { seq, offset } => Frame::Data {
                seq,
                payload: Bytes::copy_from_slice(&body[offset..]),
            },
        })
    }

    /// As [`Frame::decode`], without copying a `Data` payload: where it starts in `body`
    /// (the caller slices it from its own buffer).
    pub(crate) fn decode_lent(body: &[u8], max_payload: usize) -> Result<Decoded, WireError> {
        let (&kind, mut rest) = body.split_first().ok_or(WireError::Empty)?;
        let frame = match kind {
            HELLO => {
                let [session, path, recv_next, recv_limit] = take_varints(&mut rest)?;
                Frame::Hello {
                    session,
                    path,
                    recv_next,
                    recv_limit,
                }
            }
            WELCOME => {
                let [path, recv_next, recv_limit] = take_varints(&mut rest)?;
                Frame::Welcome {
                    path,
                    recv_next,
                    recv_limit,
                }
            }
            REFUSE => {
                let [path, code] = take_varints(&mut rest)?;
                Frame::Refuse {
                    path,
                    reason: RefuseReason::from_code(code)?,
                }
            }
            DATA => {
                let [seq] = take_varints(&mut rest)?;
                if rest.len() > max_payload {
                    return Err(WireError::PayloadTooLarge {
                        len: rest.len(),
                        max: max_payload,
                    });
                }
                return Ok(Decoded::Data {
                    seq,
                    offset: body.len() - rest.len(),
                });
            }
            ACK => {
                let [next, limit] = take_varints(&mut rest)?;
                Frame::Ack { next, limit }
            }
            FENCE => {
                let [next_seq] = take_varints(&mut rest)?;
                Frame::Fence { next_seq }
            }
            FIN => {
                let [next_seq] = take_varints(&mut rest)?;
                Frame::Fin { next_seq }
            }
            other => return Err(WireError::UnknownType(other)),
        };
        if !rest.is_empty() {
            return Err(WireError::Trailing(rest.len()));
        }
        Ok(Decoded::Frame(frame))
    }
}

fn put_varints(out: &mut BytesMut, values: &[u64]) {
    for value in values {
        let mut buf = unsigned_varint::encode::u64_buffer();
        out.put_slice(unsigned_varint::encode::u64(*value, &mut buf));
    }
}

fn take_varints<const N: usize>(rest: &mut &[u8]) -> Result<[u64; N], WireError> {
    let mut values = [0u64; N];
    for value in values.iter_mut() {
        let (v, tail) = unsigned_varint::decode::u64(rest).map_err(|_| WireError::BadVarint)?;
        *value = v;
        *rest = tail;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Frame> {
        let reason = prop_oneof![
            Just(RefuseReason::UnknownSession),
            Just(RefuseReason::TooManyPaths),
            Just(RefuseReason::Policy)
        ];
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| {
                Frame::Hello {
                    session: a,
                    path: b,
                    recv_next: c,
                    recv_limit: d,
                }
            }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c)| Frame::Welcome {
                path: a,
                recv_next: b,
                recv_limit: c
            }),
            (any::<u64>(), reason).prop_map(|(path, reason)| Frame::Refuse { path, reason }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(seq, p)| {
                Frame::Data {
                    seq,
                    payload: Bytes::from(p),
                }
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(next, limit)| Frame::Ack { next, limit }),
            any::<u64>().prop_map(|next_seq| Frame::Fence { next_seq }),
            any::<u64>().prop_map(|next_seq| Frame::Fin { next_seq }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in frames()) {
            let body = frame.encode();
            prop_assert_eq!(Frame::decode(&body, 64), Ok(frame));
        }

        #[test]
        fn a_framed_frame_is_its_length_prefix_and_its_body(frame in frames()) {
            let body = frame.encode();
            prop_assert_eq!(frame.encoded_len(), body.len());
            let mut framed = BytesMut::new();
            frame.encode_framed_into(&mut framed);
            let (len, rest) = unsigned_varint::decode::usize(&framed).unwrap();
            prop_assert_eq!(len, body.len());
            prop_assert_eq!(rest, &body[..]);
            if let Frame::Data { seq, payload } = &frame {
                let mut data = BytesMut::new();
                encode_data_framed(*seq, payload, &mut data);
                prop_assert_eq!(&data[..], &framed[..]);
            }
        }

        #[test]
        fn the_fast_varint_decoder_agrees_with_unsigned_varint(
            bytes in proptest::collection::vec(any::<u8>(), 0..12),
            value in any::<u64>(),
        ) {
            // Random bytes (often not minimal, too short or too long) and valid encodings.
            let mut buf = unsigned_varint::encode::u64_buffer();
            let encoded = unsigned_varint::encode::u64(value, &mut buf).to_vec();
            for data in [&bytes[..], &encoded[..]] {
                if let Some((v, n)) = varint_fast(data) {
                    let (expected, rest) = unsigned_varint::decode::u64(data).unwrap();
                    prop_assert_eq!((v, n), (expected, data.len() - rest.len()));
                }
            }
            if encoded.len() < 10 {
                prop_assert_eq!(varint_fast(&encoded), Some((value, encoded.len())));
            }
        }

        #[test]
        fn the_fast_data_decoder_agrees_with_decode_lent(
            body in proptest::collection::vec(any::<u8>(), 0..24),
            seq in any::<u64>(),
            len in 0..20usize,
        ) {
            let data = Frame::Data { seq, payload: Bytes::from(vec![1u8; len]) }.encode();
            for body in [&body[..], &data[..]] {
                if let Some((seq, offset)) = data_fast(body, 16) {
                    prop_assert_eq!(
                        Frame::decode_lent(body, 16),
                        Ok(Decoded::Data { seq, offset })
                    );
                }
            }
        }

        #[test]
        fn random_bytes_never_panic_and_respect_the_bound(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(Frame::Data { payload, .. }) = Frame::decode(&body, 16) {
                prop_assert!(payload.len() <= 16);
            }
        }
    }

    /// The bytes of each frame as the spec (`docs/upgrade.md`) lays them out: a change here
    /// is a change of the protocol.
    #[test]
    fn golden_bytes() {
        let cases: [(Frame, &[u8]); 7] = [
            (
                Frame::Hello {
                    session: 7,
                    path: 2,
                    recv_next: 0,
                    recv_limit: 1 << 20,
                },
                &[0, 7, 2, 0, 0x80, 0x80, 0x40],
            ),
            (
                Frame::Welcome {
                    path: 2,
                    recv_next: 300,
                    recv_limit: 1_048_876,
                },
                &[1, 2, 0xac, 0x02, 0xac, 0x82, 0x40],
            ),
            (
                Frame::Refuse {
                    path: 3,
                    reason: RefuseReason::TooManyPaths,
                },
                &[2, 3, 2],
            ),
            (
                Frame::Data {
                    seq: 128,
                    payload: Bytes::from_static(b"hi"),
                },
                &[3, 0x80, 0x01, b'h', b'i'],
            ),
            (
                Frame::Ack {
                    next: 5,
                    limit: 1_048_736,
                },
                &[4, 5, 0xa0, 0x81, 0x40],
            ),
            (Frame::Fence { next_seq: 9 }, &[5, 9]),
            (Frame::Fin { next_seq: 0 }, &[6, 0]),
        ];
        for (frame, bytes) in cases {
            assert_eq!(&frame.encode()[..], bytes, "{frame:?}");
            assert_eq!(Frame::decode(bytes, 16), Ok(frame));
        }
        assert_eq!(PROTOCOL, "/meshwire/upgrade/2.0.0");
    }

    #[test]
    fn varint_lengths_match_the_encoder() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = unsigned_varint::encode::u64_buffer();
            let expected = unsigned_varint::encode::u64(value, &mut buf);
            assert_eq!(varint_len(value), expected.len());
            // The stack encoder of `encode_data_framed` writes the same bytes, at any offset.
            let mut header = [0u8; 24];
            let end = put_varint(&mut header, 3, value);
            assert_eq!(&header[3..end], expected);
        }
    }

    #[test]
    fn a_lent_data_payload_is_the_rest_of_the_body() {
        let body = Frame::Data {
            seq: 300,
            payload: Bytes::from_static(b"abc"),
        }
        .encode();
        assert_eq!(
            Frame::decode_lent(&body, 3),
            Ok(Decoded::Data {
                seq: 300,
                offset: 3
            })
        );
        assert_eq!(&body[3..], b"abc");
        assert_eq!(
            Frame::decode_lent(&body, 2),
            Err(WireError::PayloadTooLarge { len: 3, max: 2 })
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert_eq!(Frame::decode(&[], 10), Err(WireError::Empty));
        assert_eq!(Frame::decode(&[9], 10), Err(WireError::UnknownType(9)));
        assert_eq!(Frame::decode(&[ACK, 1], 10), Err(WireError::BadVarint));
        assert_eq!(
            Frame::decode(&[FENCE, 1, 2], 10),
            Err(WireError::Trailing(1))
        );
        assert_eq!(
            Frame::decode(&[REFUSE, 0, 7], 10),
            Err(WireError::UnknownRefuseReason(7))
        );
        let big = Frame::Data {
            seq: 1,
            payload: Bytes::from(vec![0u8; 11]),
        }
        .encode();
        assert_eq!(
            Frame::decode(&big, 10),
            Err(WireError::PayloadTooLarge { len: 11, max: 10 })
        );
        // A varint of eleven continuation bytes overflows.
        let mut long = vec![ACK];
        long.extend([0xff; 11]);
        assert_eq!(Frame::decode(&long, 10), Err(WireError::BadVarint));
    }
}
