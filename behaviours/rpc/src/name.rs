//! Procedure names and realms: [`ProcedureName`] (reverse-DNS, validated) and [`Realm`].
//!
//! A procedure name is at least [`MIN_LABELS`] labels separated by dots
//! (`org.example.billing.charge`), at most [`MAX_NAME_LEN`] bytes in all; each label is 1 to
//! [`MAX_LABEL_LEN`] ASCII letters, digits, `-` or `_`, and neither starts nor ends with `-`.
//! A realm is one label of the same alphabet (at most [`MAX_LABEL_LEN`] bytes): providers
//! of a name in one realm are not seen from another.

use std::fmt;

/// Longest procedure name, in bytes: 255 (DNS's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (and realm), in bytes: 63 (DNS's limit).
pub const MAX_LABEL_LEN: usize = 63;
/// Fewest labels in a procedure name: 2 (`domain.procedure`).
pub const MIN_LABELS: usize = 2;

/// Why a name or a realm was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("empty name")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("name of {len} bytes, over the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Label `index` (from 0) is empty (`org..x`, a leading or trailing dot).
    #[error("label {index} is empty")]
    EmptyLabel {
        /// Which label.
        index: usize,
    },
    /// Label `index` is longer than [`MAX_LABEL_LEN`].
    #[error("label {index} is {len} bytes, over the limit of {max}")]
    LabelTooLong {
        /// Which label.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside `[A-Za-z0-9_-]` (or a dot in a realm).
    #[error("bad character {ch:?} at byte {position}")]
    BadCharacter {
        /// The character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },
    /// Label `index` starts or ends with `-`.
    #[error("label {index} starts or ends with '-'")]
    BadHyphen {
        /// Which label.
        index: usize,
    },
    /// Fewer labels than [`MIN_LABELS`].
    #[error("{labels} label(s); a procedure name has at least {min}")]
    TooFewLabels {
        /// How many there are.
        labels: usize,
        /// The minimum.
        min: usize,
    },
}

fn check_label(label: &str, index: usize, offset: usize) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel { index });
    }
    if let Some((i, ch)) = label
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadCharacter {
            ch,
            position: offset + i,
        });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong {
            index,
            len: label.len(),
            max: MAX_LABEL_LEN,
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::BadHyphen { index });
    }
    Ok(())
}

/// A validated reverse-DNS procedure name, such as `org.example.billing.charge`.
///
/// ```
/// use meshwire_rpc::{NameError, ProcedureName};
///
/// let name: ProcedureName = "org.example.billing.charge".parse()?;
/// assert_eq!(name.labels().count(), 4);
/// assert_eq!("org..x".parse::<ProcedureName>(), Err(NameError::EmptyLabel { index: 1 }));
/// assert!(matches!("org.ex ample".parse::<ProcedureName>(), Err(NameError::BadCharacter { ch: ' ', .. })));
/// # Ok::<(), NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcedureName(String);

impl ProcedureName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// The first rule `name` breaks (see the [module docs](self)).
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                len: name.len(),
                max: MAX_NAME_LEN,
            });
        }
        let mut offset = 0;
        let mut labels = 0;
        for (index, label) in name.split('.').enumerate() {
            check_label(label, index, offset)?;
            offset += label.len() + 1;
            labels += 1;
        }
        if labels < MIN_LABELS {
            return Err(NameError::TooFewLabels {
                labels,
                min: MIN_LABELS,
            });
        }
        Ok(ProcedureName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its labels, left to right.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl std::str::FromStr for ProcedureName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        ProcedureName::new(s)
    }
}

impl TryFrom<&str> for ProcedureName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
        ProcedureName::new(s)
    }
}

impl fmt::Display for ProcedureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A realm: the scope of providers (one label; the default realm is `default`).
///
/// ```
/// use meshwire_rpc::Realm;
/// assert_eq!(Realm::default().as_str(), "default");
/// assert!(Realm::new("a.b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Realm(String);

impl Realm {
    /// Validates `realm`: one label (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// The first rule it breaks.
    pub fn new(realm: impl Into<String>) -> Result<Self, NameError> {
        let realm = realm.into();
        if realm.is_empty() {
            return Err(NameError::Empty);
        }
        check_label(&realm, 0, 0)?;
        Ok(Realm(realm))
    }

    /// The realm as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Realm {
    fn default() -> Self {
        Realm("default".to_owned())
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DHT service name under which providers of `name` in `realm` announce themselves:
/// `rpc/<realm>/<name>` (hashed by kademlia's service discovery into the provider key).
pub fn service_name(realm: &Realm, name: &ProcedureName) -> String {
    format!("rpc/{realm}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_with_typed_errors() {
        assert!(ProcedureName::new("org.example.billing.charge").is_ok());
        assert!(ProcedureName::new("io.my_app.v2-api.get").is_ok());
        assert_eq!(ProcedureName::new(""), Err(NameError::Empty));
        assert_eq!(
            ProcedureName::new("charge"),
            Err(NameError::TooFewLabels { labels: 1, min: 2 })
        );
        assert_eq!(
            ProcedureName::new(".org.x"),
            Err(NameError::EmptyLabel { index: 0 })
        );
        assert_eq!(
            ProcedureName::new("org.x."),
            Err(NameError::EmptyLabel { index: 2 })
        );
        assert_eq!(
            ProcedureName::new("org.é"),
            Err(NameError::BadCharacter {
                ch: 'é',
                position: 4
            })
        );
        assert_eq!(
            ProcedureName::new("org.-x"),
            Err(NameError::BadHyphen { index: 1 })
        );
        let long_label = format!("org.{}", "a".repeat(64));
        assert_eq!(
            ProcedureName::new(long_label),
            Err(NameError::LabelTooLong {
                index: 1,
                len: 64,
                max: 63
            })
        );
        let long = vec!["abcdefg"; 40].join(".");
        assert!(matches!(
            ProcedureName::new(long),
            Err(NameError::TooLong { len: 319, max: 255 })
        ));
        assert_eq!(Realm::new(""), Err(NameError::Empty));
        assert!(matches!(
            Realm::new("a/b"),
            Err(NameError::BadCharacter { ch: '/', .. })
        ));
    }

    #[test]
    fn service_names_are_scoped_by_realm() {
        let n = ProcedureName::new("org.x.y").unwrap();
        let a = service_name(&Realm::new("a").unwrap(), &n);
        let b = service_name(&Realm::new("b").unwrap(), &n);
        assert_eq!(a, "rpc/a/org.x.y");
        assert_ne!(a, b);
    }
}
