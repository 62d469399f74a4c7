//! Realms: named, isolated memberships.
//!
//! A realm is named in reverse-DNS notation (`org.example.mesh`). Every SWIM message carries
//! its realm; a core answers only for the realms it was created with and ignores (and counts)
//! messages for other realms, so several meshes can share nodes and connections without
//! seeing each other's members.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

/// The longest realm name, in bytes.
pub const MAX_REALM_LEN: usize = 128;
/// The longest label (the text between two dots), in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a realm name was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RealmError {
    /// The name is empty.
    #[error("realm name is empty")]
    Empty,
    /// The name is longer than [`MAX_REALM_LEN`].
    #[error("realm name is {len} bytes long, more than {MAX_REALM_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name has fewer than two labels (`org.example` is the shortest form).
    #[error("realm name needs at least two dot-separated labels")]
    TooFewLabels,
    /// A label is empty (two dots in a row, or a leading or trailing dot).
    #[error("realm name has an empty label")]
    EmptyLabel,
    /// A label is longer than [`MAX_LABEL_LEN`].
    #[error("realm label of {len} bytes is longer than {MAX_LABEL_LEN}")]
    LabelTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A label has a character other than `a-z`, `0-9` and `-`.
    #[error("realm name has the invalid character {0:?} (allowed: a-z, 0-9, '-', '.')")]
    InvalidChar(char),
    /// A label starts or ends with `-`.
    #[error("realm label starts or ends with '-'")]
    HyphenAtEdge,
}

/// A validated realm name such as `org.example.mesh`.
///
/// Rules: 3 to [`MAX_REALM_LEN`] bytes; at least two labels separated by `.`; each label 1 to
/// [`MAX_LABEL_LEN`] bytes of lower-case ASCII letters, digits and `-`, not starting or ending
/// with `-`. Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Realm(Arc<str>);

impl Realm {
    /// Validates `name` and makes a realm of it.
    pub fn new(name: &str) -> Result<Self, RealmError> {
        validate(name)?;
        Ok(Realm(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a valid realm name is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether two realms are the same (pointer check first, then the text).
    pub(crate) fn same(&self, other: &Realm) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

fn validate(name: &str) -> Result<(), RealmError> {
    if name.is_empty() {
        return Err(RealmError::Empty);
    }
    if name.len() > MAX_REALM_LEN {
        return Err(RealmError::TooLong { len: name.len() });
    }
    let mut labels = 0;
    for label in name.split('.') {
        labels += 1;
        if label.is_empty() {
            return Err(RealmError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(RealmError::LabelTooLong { len: label.len() });
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(RealmError::InvalidChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(RealmError::HyphenAtEdge);
        }
    }
    if labels < 2 {
        return Err(RealmError::TooFewLabels);
    }
    Ok(())
}

impl FromStr for Realm {
    type Err = RealmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Realm::new(s)
    }
}

impl TryFrom<&str> for Realm {
    type Error = RealmError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Realm::new(s)
    }
}

impl AsRef<str> for Realm {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Realm({})", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_reverse_dns_names() {
        for ok in [
            "org.example.mesh",
            "io.meshwire",
            "com.acme-corp.eu-1.mesh",
            "a.b",
            "x1.y2",
        ] {
            assert_eq!(Realm::new(ok).map(|r| r.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(Realm::new(""), Err(RealmError::Empty));
        assert_eq!(Realm::new("mesh"), Err(RealmError::TooFewLabels));
        assert_eq!(Realm::new("org..mesh"), Err(RealmError::EmptyLabel));
        assert_eq!(Realm::new(".org.mesh"), Err(RealmError::EmptyLabel));
        assert_eq!(Realm::new("org.mesh."), Err(RealmError::EmptyLabel));
        assert_eq!(Realm::new("Org.mesh"), Err(RealmError::InvalidChar('O')));
        assert_eq!(Realm::new("org.me_sh"), Err(RealmError::InvalidChar('_')));
        assert_eq!(Realm::new("org.-mesh"), Err(RealmError::HyphenAtEdge));
        assert_eq!(Realm::new("org.mesh-"), Err(RealmError::HyphenAtEdge));
        let long_label = format!("org.{}", "a".repeat(64));
        assert_eq!(
            Realm::new(&long_label),
            Err(RealmError::LabelTooLong { len: 64 })
        );
        let long = ["abcdefghij"; 12].join(".");
        assert!(matches!(Realm::new(&long), Err(RealmError::TooLong { .. })));
    }
}
