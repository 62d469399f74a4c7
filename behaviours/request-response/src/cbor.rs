//! The CBOR codec (feature `cbor`): a request and a response are each one CBOR value
//! encoded by `cbor4ii::serde::to_vec`, read to the end of the stream — rust-libp2p's
//! `request_response::cbor` byte for byte (the same crate and function), with its limits
//! (requests of at most 1 MiB, responses of at most 10 MiB, both configurable).
//!
//! Unlike rust-libp2p, a message over the limit is refused with
//! [`CodecError::TooLarge`], a message that does not decode with
//! [`CodecError::Malformed`], and the writer refuses to send
//! what is over its own limit. `cbor4ii` limits nesting depth (no input overflows the
//! stack) and reads byte and text strings only from the bytes present. A collection's
//! declared length reaches serde as a size hint, which serde caps at 1 MiB of preallocation
//! per collection being decoded, so a short hostile message costs at most that much per
//! level of nesting of the message type, transiently, before it fails.
//!
//! ```
//! use meshwire_request_response::{cbor, Codec};
//! use meshwire_swarm::StreamProtocol;
//!
//! # futures::executor::block_on(async {
//! let p = StreamProtocol::new("/numbers/1");
//! let mut codec = cbor::Codec::<Vec<u32>, u64>::default();
//! let mut wire = Vec::new();
//! codec.write_request(&p, &mut wire, vec![1, 2]).await.unwrap();
//! assert_eq!(wire, [0x82, 0x01, 0x02]); // array(2) [1, 2]
//! assert_eq!(codec.read_request(&p, &mut &wire[..]).await.unwrap(), vec![1, 2]);
//! # });
//! ```

use crate::codec::CodecError;
use crate::serde_codec::{serde_codec, Format, SerdeCodec};

/// `cbor4ii::serde`.
pub(crate) struct Cbor;

impl Format for Cbor {
    fn encode<V: serde::Serialize>(value: &V) -> Result<Vec<u8>, CodecError> {
        cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<V: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<V, CodecError> {
        cbor4ii::serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
    }
}

serde_codec!(Cbor);
