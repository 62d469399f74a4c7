//! The `/meshwire/natprobe/1.0.0` messages and their codec (`docs/natprobe.md`).
//!
//! A stream carries one request frame and one response frame (length-prefixed by the
//! swarm toolkit's `read_frame`/`write_frame`). Every message is at most
//! [`MAX_MESSAGE`] bytes; the decoder rejects anything else with a [`WireError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The largest message in bytes (an IPv6 observed address is 20).
pub const MAX_MESSAGE: usize = 32;

const OBSERVE: u8 = 0x01;
const DIAL_BACK: u8 = 0x02;
const OBSERVED: u8 = 0x11;
const DIAL_BACK_RESULT: u8 = 0x12;

/// Where a dial-back comes from, relative to the address the request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DialBackFrom {
    /// The server's IP, another port (RFC 5780 "change port").
    OtherPort,
    /// Another IP of the server (RFC 5780 "change IP and port").
    OtherAddress,
}

/// A client's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// "Which address do you see this connection come from?"
    Observe,
    /// "Dial me back at that address from another socket."
    DialBack(DialBackFrom),
}

/// What became of a dial-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialBackStatus {
    /// The QUIC handshake with the requester's observed address completed.
    Reached,
    /// It failed or timed out: the requester's NAT filtered it.
    NotReached,
    /// The server has no socket of that kind.
    Unavailable,
    /// The server's dial-back rate limit refused it.
    Refused,
}

/// A server's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// The observed address of the requesting connection.
    Observed(SocketAddr),
    /// The outcome of a dial-back.
    DialBack(DialBackStatus),
}

/// Why bytes are not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No bytes.
    #[error("empty message")]
    Empty,
    /// A message type this version does not know.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// Shorter than its type needs.
    #[error("truncated message")]
    Truncated,
    /// Longer than its type needs.
    #[error("trailing bytes")]
    Trailing,
    /// A field value this version does not know.
    #[error("unknown value {0:#04x}")]
    UnknownValue(u8),
}

impl Request {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Observe => vec![OBSERVE],
            Request::DialBack(DialBackFrom::OtherPort) => vec![DIAL_BACK, 1],
            Request::DialBack(DialBackFrom::OtherAddress) => vec![DIAL_BACK, 2],
        }
    }

    /// Parses a request.
    ///
    /// # Errors
    ///
    /// [`WireError`] for anything but exactly one request.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (&kind, rest) = bytes.split_first().ok_or(WireError::Empty)?;
        match kind {
            OBSERVE => exact(rest, 0).map(|_| Request::Observe),
            DIAL_BACK => match exact(rest, 1)?[0] {
                1 => Ok(Request::DialBack(DialBackFrom::OtherPort)),
                2 => Ok(Request::DialBack(DialBackFrom::OtherAddress)),
                v => Err(WireError::UnknownValue(v)),
            },
            t => Err(WireError::UnknownType(t)),
        }
    }
}

impl Response {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Observed(addr) => {
                let mut out = vec![OBSERVED];
                match addr.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&addr.port().to_be_bytes());
                out
            }
            Response::DialBack(status) => {
                let code = match status {
                    DialBackStatus::Reached => 0,
                    DialBackStatus::NotReached => 1,
                    DialBackStatus::Unavailable => 2,
                    DialBackStatus::Refused => 3,
                };
                vec![DIAL_BACK_RESULT, code]
            }
        }
    }

    /// Parses a response.
    ///
    /// # Errors
    ///
    /// [`WireError`] for anything but exactly one response.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (&kind, rest) = bytes.split_first().ok_or(WireError::Empty)?;
        match kind {
            OBSERVED => {
                let (&family, rest) = rest.split_first().ok_or(WireError::Truncated)?;
                let ip = match family {
                    4 => {
                        let b = exact(rest, 6)?;
                        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                    6 => {
                        let b = exact(rest, 18)?;
                        let mut o = [0u8; 16];
                        o.copy_from_slice(&b[..16]);
                        IpAddr::V6(Ipv6Addr::from(o))
                    }
                    v => return Err(WireError::UnknownValue(v)),
                };
                let n = rest.len();
                let port = u16::from_be_bytes([rest[n - 2], rest[n - 1]]);
                Ok(Response::Observed(SocketAddr::new(ip, port)))
            }
            DIAL_BACK_RESULT => Ok(Response::DialBack(match exact(rest, 1)?[0] {
                0 => DialBackStatus::Reached,
                1 => DialBackStatus::NotReached,
                2 => DialBackStatus::Unavailable,
                3 => DialBackStatus::Refused,
                v => return Err(WireError::UnknownValue(v)),
            })),
            t => Err(WireError::UnknownType(t)),
        }
    }
}

/// `rest` if it is exactly `len` bytes long.
fn exact(rest: &[u8], len: usize) -> Result<&[u8], WireError> {
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(WireError::Truncated),
        std::cmp::Ordering::Greater => Err(WireError::Trailing),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        assert_eq!(Request::Observe.encode(), [0x01]);
        assert_eq!(
            Request::DialBack(DialBackFrom::OtherPort).encode(),
            [0x02, 1]
        );
        assert_eq!(
            Request::DialBack(DialBackFrom::OtherAddress).encode(),
            [0x02, 2]
        );
        let v4 = Response::Observed("192.0.2.14:20000".parse().unwrap());
        assert_eq!(v4.encode(), [0x11, 4, 192, 0, 2, 14, 0x4e, 0x20]);
        let v6 = Response::Observed("[2001:db8::1]:443".parse().unwrap());
        let mut want = vec![0x11, 6, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.extend_from_slice(&[1, 0x01, 0xbb]);
        assert_eq!(v6.encode(), want);
        assert_eq!(
            Response::DialBack(DialBackStatus::Refused).encode(),
            [0x12, 3]
        );
        for r in [v4, v6, Response::DialBack(DialBackStatus::Reached)] {
            assert!(r.encode().len() <= MAX_MESSAGE);
            assert_eq!(Response::decode(&r.encode()), Ok(r));
        }
        for r in [
            Request::Observe,
            Request::DialBack(DialBackFrom::OtherAddress),
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        assert_eq!(Request::decode(&[]), Err(WireError::Empty));
        assert_eq!(Request::decode(&[0x01, 0]), Err(WireError::Trailing));
        assert_eq!(Request::decode(&[0x02]), Err(WireError::Truncated));
        assert_eq!(Request::decode(&[0x02, 9]), Err(WireError::UnknownValue(9)));
        assert_eq!(Request::decode(&[0x11]), Err(WireError::UnknownType(0x11)));
        assert_eq!(
            Response::decode(&[0x11, 4, 1, 2]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Response::decode(&[0x11, 5, 1]),
            Err(WireError::UnknownValue(5))
        );
        assert_eq!(
            Response::decode(&[0x12, 4]),
            Err(WireError::UnknownValue(4))
        );
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }
    }
}
