//! The `/meshwire/rpc/1.0.0` messages (spec: `docs/rpc.md`): [`WireRequest`] and
//! [`WireResponse`], encoded and decoded with typed errors, bounded before allocating.
//!
//! One request and one response per stream (the request-response framing: each side writes
//! its message and closes its write side). A request:
//!
//! ```text
//! version u8 (= 1) | realm_len u8 | realm | name_len u8 | name | timeout_ms u32 (BE) | payload ..
//! ```
//!
//! A response: `0x00 | payload ..` for a result, `0x01 | code u8 | message (UTF-8, ≤ 1024) ..`
//! for an error ([`RemoteError`]).

use crate::name::{NameError, ProcedureName, Realm};

/// The protocol name.
pub const PROTOCOL: &str = "/meshwire/rpc/1.0.0";
/// The request format's version byte.
pub const VERSION: u8 = 1;
/// Longest error message carried in a response, in bytes (longer ones are cut).
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends before its header does.
    #[error("truncated message")]
    Truncated,
    /// An unknown version byte.
    #[error("unknown version {0}")]
    Version(u8),
    /// The realm or the name is invalid.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// Not UTF-8 where text is expected.
    #[error("not UTF-8")]
    Utf8,
    /// An unknown response status or error code.
    #[error("unknown status or code {0}")]
    Unknown(u8),
    /// The error message is longer than [`MAX_ERROR_MESSAGE`].
    #[error("error message too long")]
    MessageTooLong,
}

/// A call on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    /// The realm the caller looks in.
    pub realm: Realm,
    /// The procedure.
    pub name: ProcedureName,
    /// How long the caller waits (ms): the provider cancels the handler past it.
    pub timeout_ms: u32,
    /// The argument.
    pub payload: Vec<u8>,
}

/// What a provider reports instead of a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The provider has no handler for the name (in this realm). The handler did not run.
    #[error("no such procedure")]
    NoSuchProcedure,
    /// The handler returned an error.
    #[error("handler failed: {0}")]
    Handler(String),
    /// The provider is at its concurrency limit (for us or in total). The handler did not
    /// run.
    #[error("provider overloaded")]
    Overloaded,
    /// The handler did not finish within the caller's timeout and was cancelled.
    #[error("handler cancelled at the caller's deadline")]
    Cancelled,
    /// The request could not be decoded. The handler did not run.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl RemoteError {
    /// Whether the handler provably did not run (so another provider may be tried even for
    /// a call that is not idempotent).
    pub fn not_executed(&self) -> bool {
        matches!(
            self,
            RemoteError::NoSuchProcedure | RemoteError::Overloaded | RemoteError::BadRequest(_)
        )
    }

    fn code(&self) -> u8 {
        match self {
            RemoteError::NoSuchProcedure => 1,
            RemoteError::Handler(_) => 2,
            RemoteError::Overloaded => 3,
            RemoteError::Cancelled => 4,
            RemoteError::BadRequest(_) => 5,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteError::NoSuchProcedure => "no_such_procedure",
            RemoteError::Handler(_) => "handler",
            RemoteError::Overloaded => "overloaded",
            RemoteError::Cancelled => "cancelled",
            RemoteError::BadRequest(_) => "bad_request",
        }
    }
}

/// A provider's answer.
pub type WireResponse = Result<Vec<u8>, RemoteError>;

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if buf.len() < n {
        return Err(WireError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_str<'a>(buf: &mut &'a [u8]) -> Result<&'a str, WireError> {
    let len = take(buf, 1)?[0] as usize;
    std::str::from_utf8(take(buf, len)?).map_err(|_| WireError::Utf8)
}

impl WireRequest {
    /// The encoded request.
    pub fn encode(&self) -> Vec<u8> {
        let (realm, name) = (self.realm.as_str(), self.name.as_str());
        let mut out = Vec::with_capacity(8 + realm.len() + name.len() + self.payload.len());
        out.push(VERSION);
        // Both fit a byte: a realm is at most 63 bytes, a name at most 255.
        out.push(realm.len() as u8);
        out.extend_from_slice(realm.as_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&self.timeout_ms.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a request (the bytes were bounded by the reader).
    ///
    /// # Errors
    ///
    /// A truncated header, an unknown version, an invalid realm or name.
    pub fn decode(mut bytes: Vec<u8>) -> Result<Self, WireError> {
        let mut buf = &bytes[..];
        let version = take(&mut buf, 1)?[0];
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let realm = Realm::new(take_str(&mut buf)?)?;
        let name = ProcedureName::new(take_str(&mut buf)?)?;
        let t = take(&mut buf, 4)?;
        let timeout_ms = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        let header = bytes.len() - buf.len();
        // The payload is the rest: reuse the buffer.
        bytes.drain(..header);
        Ok(WireRequest {
            realm,
            name,
            timeout_ms,
            payload: bytes,
        })
    }
}

/// Encodes a response.
pub fn encode_response(response: &WireResponse) -> Vec<u8> {
    match response {
        Ok(payload) => {
            let mut out = Vec::with_capacity(1 + payload.len());
            out.push(0);
            out.extend_from_slice(payload);
            out
        }
        Err(e) => {
            let message = match e {
                RemoteError::Handler(m) | RemoteError::BadRequest(m) => m.as_str(),
                _ => "",
            };
            let mut end = message.len().min(MAX_ERROR_MESSAGE);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let mut out = Vec::with_capacity(2 + end);
            out.push(1);
            out.push(e.code());
            out.extend_from_slice(&message.as_bytes()[..end]);
            out
        }
    }
}

/// Decodes a response (the bytes were bounded by the reader).
///
/// # Errors
///
/// An empty message, an unknown status or code, a bad error message.
pub fn decode_response(mut bytes: Vec<u8>) -> Result<WireResponse, WireError> {
    let mut buf = &bytes[..];
    match take(&mut buf, 1)?[0] {
        0 => {
            bytes.remove(0);
            Ok(Ok(bytes))
        }
        1 => {
            let code = take(&mut buf, 1)?[0];
            if buf.len() > MAX_ERROR_MESSAGE {
                return Err(WireError::MessageTooLong);
            }
            let message = std::str::from_utf8(buf)
                .map_err(|_| WireError::Utf8)?
                .to_owned();
            Ok(Err(match code {
                1 => RemoteError::NoSuchProcedure,
                2 => RemoteError::Handler(message),
                3 => RemoteError::Overloaded,
                4 => RemoteError::Cancelled,
                5 => RemoteError::BadRequest(message),
                other => return Err(WireError::Unknown(other)),
            }))
        }
        other => Err(WireError::Unknown(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> WireRequest {
        WireRequest {
            realm: Realm::new("prod").unwrap(),
            name: ProcedureName::new("org.example.billing.charge").unwrap(),
            timeout_ms: 1500,
            payload: b"42 EUR".to_vec(),
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let r = request();
        assert_eq!(WireRequest::decode(r.encode()), Ok(r));
        for resp in [
            Ok(b"ok".to_vec()),
            Ok(Vec::new()),
            Err(RemoteError::NoSuchProcedure),
            Err(RemoteError::Handler("card declined".into())),
            Err(RemoteError::Overloaded),
            Err(RemoteError::Cancelled),
            Err(RemoteError::BadRequest("x".into())),
        ] {
            assert_eq!(decode_response(encode_response(&resp)), Ok(resp));
        }
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        assert_eq!(WireRequest::decode(vec![]), Err(WireError::Truncated));
        assert_eq!(WireRequest::decode(vec![9]), Err(WireError::Version(9)));
        let mut r = request().encode();
        r.truncate(12);
        assert_eq!(WireRequest::decode(r), Err(WireError::Truncated));
        // A name that breaks the rules.
        let mut bad = vec![1, 1, b'a', 3];
        bad.extend_from_slice(b"a b");
        bad.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            WireRequest::decode(bad),
            Err(WireError::Name(NameError::BadCharacter { .. }))
        ));
        assert_eq!(decode_response(vec![]), Err(WireError::Truncated));
        assert_eq!(decode_response(vec![7]), Err(WireError::Unknown(7)));
        assert_eq!(decode_response(vec![1, 99]), Err(WireError::Unknown(99)));
        let mut long = vec![1, 2];
        long.extend(std::iter::repeat_n(b'x', MAX_ERROR_MESSAGE + 1));
        assert_eq!(decode_response(long), Err(WireError::MessageTooLong));
        // Long handler messages are cut to the limit on the way out.
        let e = Err(RemoteError::Handler("y".repeat(5000)));
        assert_eq!(encode_response(&e).len(), 2 + MAX_ERROR_MESSAGE);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = WireRequest::decode(bytes.clone());
            let _ = decode_response(bytes);
        }
    }
}
