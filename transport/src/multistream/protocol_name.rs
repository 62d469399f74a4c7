//! [`ProtocolName`]: a validated protocol name, and why a name is invalid.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

/// The multistream-select protocol identifier, `/multistream/1.0.0`.
pub const MULTISTREAM_PROTOCOL: &str = "/multistream/1.0.0";

/// Maximum length in bytes of a [`ProtocolName`] (without the trailing `'\n'`).
///
/// rust-libp2p itself only bounds whole frames (16383 bytes); go-libp2p and
/// js-libp2p bound them at 1024 bytes. Real protocol names are far shorter
/// than this limit. A listener answers `na` to a well-formed proposal whose
/// name exceeds it (as long as the message fits [`NegotiationConfig`](super::NegotiationConfig)'s
/// message limit), so longer names from other implementations are refused
/// gracefully instead of failing the stream.
pub const MAX_PROTOCOL_NAME_LEN: usize = 140;

/// Why a string is not a valid [`ProtocolName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolNameError {
    /// The name is empty.
    #[error("protocol name is empty")]
    Empty,
    /// The name does not start with `'/'`.
    #[error("protocol name does not start with '/'")]
    MissingLeadingSlash,
    /// The name is longer than [`MAX_PROTOCOL_NAME_LEN`] bytes.
    #[error("protocol name is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Length of the offending name in bytes.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The name contains a `'\n'`, which would end the message early.
    #[error("protocol name contains a newline")]
    ContainsNewline,
    /// The name is `/multistream/1.0.0`, which is indistinguishable from the
    /// multistream-select header on the wire.
    #[error("protocol name is the reserved multistream-select header")]
    Reserved,
    /// The name (received from the remote) is not valid UTF-8.
    #[error("protocol name is not valid UTF-8")]
    InvalidUtf8,
}

/// A validated protocol name, such as `/ipfs/ping/1.0.0`.
///
/// A valid name is UTF-8, starts with `'/'`, is at most
/// [`MAX_PROTOCOL_NAME_LEN`] bytes long, contains no `'\n'` and is not the
/// multistream-select header itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolName(String);

impl ProtocolName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl AsRef<str>) -> Result<Self, ProtocolNameError> {
        let name = name.as_ref();
        Self::validate(name)?;
        Ok(ProtocolName(name.to_owned()))
    }

    /// Checks whether `name` is a valid protocol name without allocating.
    pub fn validate(name: &str) -> Result<(), ProtocolNameError> {
        let bytes = name.as_bytes();
        match bytes.first() {
            None => return Err(ProtocolNameError::Empty),
            Some(b'/') => {}
            Some(_) => return Err(ProtocolNameError::MissingLeadingSlash),
        }
        if bytes.len() > MAX_PROTOCOL_NAME_LEN {
            return Err(ProtocolNameError::TooLong {
                len: bytes.len(),
                max: MAX_PROTOCOL_NAME_LEN,
            });
        }
        if bytes.contains(&b'\n') {
            return Err(ProtocolNameError::ContainsNewline);
        }
        if name == MULTISTREAM_PROTOCOL {
            return Err(ProtocolNameError::Reserved);
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the name into its `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for ProtocolName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ProtocolName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProtocolName {
    type Err = ProtocolNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ProtocolName {
    type Error = ProtocolNameError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for ProtocolName {
    type Error = ProtocolNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::validate(&value)?;
        Ok(ProtocolName(value))
    }
}

impl From<ProtocolName> for String {
    fn from(name: ProtocolName) -> String {
        name.0
    }
}

impl PartialEq<str> for ProtocolName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ProtocolName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
