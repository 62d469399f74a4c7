//! The JSON codec (feature `json`): a request and a response are each one JSON value
//! (`serde_json::to_vec`), read to the end of the stream — rust-libp2p's
//! `request_response::json` byte for byte, with its limits (requests of at most 1 MiB,
//! responses of at most 10 MiB, both configurable).
//!
//! Unlike rust-libp2p, a message over the limit is refused with
//! [`CodecError::TooLarge`] (rust-libp2p cuts it at the limit
//! and fails to parse the rest), a message that does not parse with
//! [`CodecError::Malformed`], and the writer refuses to send
//! what is over its own limit. `serde_json` nests at most 128 levels, so no input overflows
//! the stack.
//!
//! ```
//! use meshwire_request_response::{json, Codec};
//! use meshwire_swarm::StreamProtocol;
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Greet { name: String }
//!
//! # futures::executor::block_on(async {
//! let p = StreamProtocol::new("/greet/1");
//! let mut codec = json::Codec::<Greet, String>::default();
//! let mut wire = Vec::new();
//! codec.write_request(&p, &mut wire, Greet { name: "ada".into() }).await.unwrap();
//! assert_eq!(wire, br#"{"name":"ada"}"#);
//! # });
//! ```

use crate::codec::CodecError;
use crate::serde_codec::{serde_codec, Format, SerdeCodec};

/// `serde_json`.
pub(crate) struct Json;

impl Format for Json {
    fn encode<V: serde::Serialize>(value: &V) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<V: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<V, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
    }
}

serde_codec!(Json);
