//! [`StreamProtocol`], the name of a stream protocol.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use meshwire_transport::multistream::{ProtocolName, ProtocolNameError};

/// A stream protocol name such as `/ipfs/ping/1.0.0`: valid for multistream-select (starts
/// with `/`, no newline, at most 140 bytes). Cheap to clone.
#[derive(Clone)]
pub struct StreamProtocol(Inner);

#[derive(Clone)]
enum Inner {
    Static(&'static str),
    Owned(Arc<str>),
}

impl StreamProtocol {
    /// A protocol from a string constant.
    ///
    /// # Panics
    ///
    /// If `name` does not start with `/` (at compile time when used in a `const`).
    pub const fn new(name: &'static str) -> Self {
        let b = name.as_bytes();
        assert!(
            !b.is_empty() && b[0] == b'/',
            "a protocol name starts with '/'"
        );
        StreamProtocol(Inner::Static(name))
    }

    /// A protocol from a runtime string, checked.
    ///
    /// # Errors
    ///
    /// The rule of multistream-select that `name` breaks.
    pub fn try_from_owned(name: String) -> Result<Self, ProtocolNameError> {
        ProtocolName::validate(&name)?;
        Ok(StreamProtocol(Inner::Owned(name.into())))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Inner::Static(s) => s,
            Inner::Owned(s) => s,
        }
    }
}

impl AsRef<str> for StreamProtocol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for StreamProtocol {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for StreamProtocol {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for StreamProtocol {}

impl PartialEq<str> for StreamProtocol {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StreamProtocol {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for StreamProtocol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for StreamProtocol {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StreamProtocol {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for StreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names_are_checked() {
        assert!(StreamProtocol::try_from_owned("/a/1".into()).is_ok());
        assert!(StreamProtocol::try_from_owned("a/1".into()).is_err());
        assert!(StreamProtocol::try_from_owned("/a\n".into()).is_err());
        assert!(StreamProtocol::try_from_owned(String::new()).is_err());
    }

    #[test]
    fn static_and_owned_compare_equal() {
        const P: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");
        let o = StreamProtocol::try_from_owned("/ipfs/ping/1.0.0".into()).unwrap();
        assert_eq!(P, o);
        assert_eq!(P, "/ipfs/ping/1.0.0");
        let mut set = std::collections::HashSet::new();
        set.insert(P);
        assert!(set.contains("/ipfs/ping/1.0.0"));
    }
}
