//! Topic names, wildcard patterns and realms (sans-IO, no state).
//!
//! - A [`TopicName`] is dot-separated: `sensors.kitchen.temp`. Each segment is 1 to
//!   [`MAX_SEGMENT_LEN`] bytes of `A-Z a-z 0-9 _ -`; the whole name at most
//!   [`MAX_TOPIC_LEN`] bytes.
//! - A [`Pattern`] is a topic name whose segments may also be `*` (exactly one segment) or,
//!   as the last segment only, `#` (zero or more segments, as MQTT: `sensors.#` matches
//!   `sensors`, `sensors.kitchen` and `sensors.kitchen.temp`). A pattern without wildcards
//!   matches only its own name.
//! - A [`Realm`] (reverse-DNS, as swim's realms: `org.example.home`) scopes topics: on the
//!   wire a topic is `<realm>/<topic>` ([`wire_topic`]), a pattern `<realm>/<pattern>`, so
//!   the same topic in two realms is two gossipsub topics and never mixes.
//!
//! Plain gossipsub peers see these as ordinary topic strings: a rust-libp2p node subscribes
//! to `org.example.home/sensors.kitchen.temp` and exchanges messages with meshwire nodes on
//! it. A wire topic whose topic part holds `*` or `#` is a pattern subscription
//! ([`WireTopic::Pattern`]); the engine delivers matching topics' messages to it (see
//! `docs/pubsub.md`, "Wildcards").
//!
//! ```
//! use meshwire_pubsub::topic::{Pattern, Realm, TopicName, wire_topic};
//!
//! let realm: Realm = "org.example.home".parse()?;
//! let name: TopicName = "sensors.kitchen.temp".parse()?;
//! assert!("sensors.*.temp".parse::<Pattern>()?.matches(&name));
//! assert!("sensors.#".parse::<Pattern>()?.matches(&name));
//! assert!(!"sensors.*".parse::<Pattern>()?.matches(&name));
//! assert_eq!(wire_topic(&realm, &name).as_str(), "org.example.home/sensors.kitchen.temp");
//! assert!("sensors..temp".parse::<TopicName>().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::engine::TopicHash;

/// The longest topic name or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// The longest segment of a topic name (between two dots), in bytes.
pub const MAX_SEGMENT_LEN: usize = 63;
/// The longest realm name, in bytes.
pub const MAX_REALM_LEN: usize = 128;
/// The longest realm label, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a topic name or pattern was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`].
    #[error("topic name is {0} bytes long, more than {MAX_TOPIC_LEN}")]
    TooLong(usize),
    /// Two dots in a row, or a dot at either end.
    #[error("topic name has an empty segment (two dots in a row, or a dot at an end)")]
    EmptySegment,
    /// A segment is longer than [`MAX_SEGMENT_LEN`].
    #[error("topic segment of {0} bytes is longer than {MAX_SEGMENT_LEN}")]
    SegmentTooLong(usize),
    /// A character outside `A-Z a-z 0-9 _ -` (and the wildcards, in a pattern).
    #[error("topic name has the invalid character {0:?} (allowed: A-Z, a-z, 0-9, '_', '-', '.')")]
    InvalidChar(char),
    /// `*` or `#` in a topic name (not a pattern), or mixed with other characters in a
    /// segment (`sens*`).
    #[error("wildcard {0:?} must be a whole segment, and only in a pattern")]
    MisplacedWildcard(char),
    /// `#` before the last segment.
    #[error("'#' is only allowed as the last segment")]
    HashNotLast,
}

/// Why a realm name was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RealmError {
    /// The name is longer than [`MAX_REALM_LEN`] (or empty: `TooLong(0)` is never produced).
    #[error("realm name is {0} bytes long, more than {MAX_REALM_LEN}")]
    TooLong(usize),
    /// Fewer than two labels (`example`), or an empty one.
    #[error("realm name needs at least two non-empty dot-separated labels")]
    Labels,
    /// A label longer than [`MAX_LABEL_LEN`].
    #[error("realm label of {0} bytes is longer than {MAX_LABEL_LEN}")]
    LabelTooLong(usize),
    /// A character outside `a-z 0-9 - .`.
    #[error("realm name has the invalid character {0:?} (allowed: a-z, 0-9, '-', '.')")]
    InvalidChar(char),
    /// A label starting or ending with `-`.
    #[error("realm label starts or ends with '-'")]
    Hyphen,
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `#`: zero or more segments (last only).
    Rest,
}

fn check_segments(s: &str, pattern: bool) -> Result<Vec<Segment>, TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    let parts: Vec<&str> = s.split('.').collect();
    let last = parts.len() - 1;
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        if part.is_empty() {
            return Err(TopicError::EmptySegment);
        }
        if part.len() > MAX_SEGMENT_LEN {
            return Err(TopicError::SegmentTooLong(part.len()));
        }
        match part {
            "*" if pattern => segments.push(Segment::One),
            "#" if pattern && i == last => segments.push(Segment::Rest),
            "#" if pattern => return Err(TopicError::HashNotLast),
            _ => {
                for c in part.chars() {
                    match c {
                        'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => {}
                        '*' | '#' => return Err(TopicError::MisplacedWildcard(c)),
                        _ => return Err(TopicError::InvalidChar(c)),
                    }
                }
                segments.push(Segment::Literal(part.to_string()));
            }
        }
    }
    Ok(segments)
}

/// A validated topic name: see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicName {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, TopicError> {
        check_segments(s, false)?;
        Ok(TopicName(s.to_string()))
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated wildcard pattern: see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern holds `*` or `#` (else it matches its own name only).
    pub fn is_wildcard(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !matches!(s, Segment::Literal(_)))
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &TopicName) -> bool {
        self.matches_str(topic.as_str())
    }

    /// Whether the (unvalidated) topic text matches: the segments of `topic` are compared as
    /// they are, so a text that is not a valid name matches only if its segments do.
    pub fn matches_str(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl FromStr for Pattern {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, TopicError> {
        let segments = check_segments(s, true)?;
        Ok(Pattern {
            text: s.to_string(),
            segments,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A validated realm name (reverse-DNS): see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Realm(String);

impl Realm {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Realm {
    type Err = RealmError;
    fn from_str(s: &str) -> Result<Self, RealmError> {
        if s.len() > MAX_REALM_LEN {
            return Err(RealmError::TooLong(s.len()));
        }
        let labels: Vec<&str> = s.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(RealmError::Labels);
        }
        for label in labels {
            if label.len() > MAX_LABEL_LEN {
                return Err(RealmError::LabelTooLong(label.len()));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
            {
                return Err(RealmError::InvalidChar(c));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(RealmError::Hyphen);
            }
        }
        Ok(Realm(s.to_string()))
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The gossipsub topic carrying `topic` in `realm`: `<realm>/<topic>`.
pub fn wire_topic(realm: &Realm, topic: &TopicName) -> TopicHash {
    TopicHash::from(format!("{}/{}", realm.0, topic.0))
}

/// The gossipsub topic announcing a subscription to `pattern` in `realm`: `<realm>/<pattern>`
/// (the same as [`wire_topic`] for a pattern without wildcards).
pub fn wire_pattern(realm: &Realm, pattern: &Pattern) -> TopicHash {
    TopicHash::from(format!("{}/{}", realm.0, pattern.text))
}

/// A gossipsub topic string read back as a realm's topic or pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireTopic {
    /// `<realm>/<topic>`.
    Topic(Realm, TopicName),
    /// `<realm>/<pattern>` with at least one wildcard.
    Pattern(Realm, Pattern),
}

/// Reads a gossipsub topic as `<realm>/<topic or pattern>`; `None` for any other topic
/// (plain gossipsub topics are left alone).
pub fn parse_wire_topic(topic: &str) -> Option<WireTopic> {
    let (realm, rest) = topic.split_once('/')?;
    let realm: Realm = realm.parse().ok()?;
    let pattern: Pattern = rest.parse().ok()?;
    if pattern.is_wildcard() {
        Some(WireTopic::Pattern(realm, pattern))
    } else {
        Some(WireTopic::Topic(realm, TopicName(pattern.text)))
    }
}
