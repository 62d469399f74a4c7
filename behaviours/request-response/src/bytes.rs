//! The raw bytes codec: a request and a response are each a `Vec<u8>`, written as they are
//! and read **to the end of the stream** (no length prefix).
//!
//! Why read-to-end: every request-response stream carries one message each way and the
//! writer closes its side after it, so the end of the stream already delimits the message.
//! It is the framing of rust-libp2p's `json` and `cbor` codecs, so a rust-libp2p peer whose
//! codec writes the raw bytes and reads to the end speaks this codec; a length prefix would
//! add bytes without adding information. A responder that drops the request (no response)
//! is still told apart from an empty response: meshwire resets the stream then, so the
//! requester reads an error, not an empty message.
//!
//! Limits: requests of at most [`Codec::DEFAULT_REQUEST_MAXIMUM`] (1 MiB), responses of at
//! most [`Codec::DEFAULT_RESPONSE_MAXIMUM`] (10 MiB), as rust-libp2p's codecs; longer
//! messages are refused with [`CodecError::TooLarge`] on both the writing and the reading
//! side, and a reader never buffers past the limit.
//!
//! ```
//! use meshwire_request_response::{bytes, Codec};
//! use meshwire_swarm::StreamProtocol;
//!
//! # futures::executor::block_on(async {
//! let p = StreamProtocol::new("/blob/1");
//! let mut codec = bytes::Codec::default().set_request_size_maximum(4);
//! let mut wire = Vec::new();
//! codec.write_request(&p, &mut wire, b"abcd".to_vec()).await.unwrap();
//! assert_eq!(wire, b"abcd"); // the bytes as they are
//! assert_eq!(codec.read_request(&p, &mut &wire[..]).await.unwrap(), b"abcd");
//! assert!(codec.write_request(&p, &mut wire, b"abcde".to_vec()).await.is_err());
//! # });
//! ```

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use meshwire_swarm::StreamProtocol;

use crate::codec::{read_to_end_bounded, CodecError};

/// The raw bytes codec. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    request_size_maximum: u64,
    response_size_maximum: u64,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            request_size_maximum: Self::DEFAULT_REQUEST_MAXIMUM,
            response_size_maximum: Self::DEFAULT_RESPONSE_MAXIMUM,
        }
    }
}

impl Codec {
    /// Default request limit: 1 MiB (rust-libp2p's for its codecs).
    pub const DEFAULT_REQUEST_MAXIMUM: u64 = 1024 * 1024;
    /// Default response limit: 10 MiB (rust-libp2p's for its codecs).
    pub const DEFAULT_RESPONSE_MAXIMUM: u64 = 10 * 1024 * 1024;

    /// A codec with these limits (bytes).
    pub fn new(request_size_maximum: u64, response_size_maximum: u64) -> Self {
        Codec {
            request_size_maximum,
            response_size_maximum,
        }
    }

    /// Sets the request limit, in bytes.
    pub fn set_request_size_maximum(mut self, bytes: u64) -> Self {
        self.request_size_maximum = bytes;
        self
    }

    /// Sets the response limit, in bytes.
    pub fn set_response_size_maximum(mut self, bytes: u64) -> Self {
        self.response_size_maximum = bytes;
        self
    }

    /// The request limit, in bytes.
    pub fn request_size_maximum(&self) -> u64 {
        self.request_size_maximum
    }

    /// The response limit, in bytes.
    pub fn response_size_maximum(&self) -> u64 {
        self.response_size_maximum
    }
}

/// Writes `data` unless it is longer than `limit`.
async fn write_bounded<T>(io: &mut T, data: &[u8], limit: u64) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if data.len() as u64 > limit {
        return Err(CodecError::TooLarge { limit }.into());
    }
    io.write_all(data).await
}

impl crate::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_to_end_bounded(io, self.request_size_maximum).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_to_end_bounded(io, self.response_size_maximum).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &request, self.request_size_maximum).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &response, self.response_size_maximum).await
    }
}

/// A request-response behaviour with the raw bytes codec.
pub type Behaviour<U = ()> = crate::Behaviour<Codec, U>;
