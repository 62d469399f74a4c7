//! The [`Codec`] trait: how requests and responses are read from and written to a stream,
//! [`CodecError`] (the typed failures of a codec) and [`read_to_end_bounded`], the bounded
//! reader every built-in codec uses.

use std::future::Future;
use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite};
use meshwire_swarm::StreamProtocol;

/// How the requests and responses of a protocol (or a family of protocol versions) are
/// encoded on a stream: rust-libp2p's `request_response::Codec`, method for method.
///
/// Each exchange gets its own clone of the codec and its own stream. The requester calls
/// [`write_request`](Codec::write_request), closes its write side, then
/// [`read_response`](Codec::read_response); the responder calls
/// [`read_request`](Codec::read_request), then [`write_response`](Codec::write_response)
/// and closes. So a reader may read to the end of the stream (what the built-in codecs do)
/// or frame its messages, as it likes.
///
/// The bytes come from the network: a reader must bound what it buffers (the built-in
/// codecs use [`read_to_end_bounded`]) and report bad input as an error, never panic. A
/// failure returned as [`CodecError`] (through `io::Error::from`) reaches the application
/// typed (`TooLarge`, `Malformed`, `Encode` in [`OutboundFailure`](crate::OutboundFailure)
/// and [`InboundFailure`](crate::InboundFailure)); any other `io::Error` as `Io`.
///
/// A complete codec, lines of text of at most 1 KiB each way:
///
/// ```
/// use std::io;
/// use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
/// use meshwire_request_response::{read_to_end_bounded, Codec, CodecError};
/// use meshwire_swarm::StreamProtocol;
///
/// #[derive(Clone, Default)]
/// struct Lines;
///
/// impl Codec for Lines {
///     type Protocol = StreamProtocol;
///     type Request = String;
///     type Response = String;
///
///     async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<String>
///     where
///         T: AsyncRead + Unpin + Send,
///     {
///         let bytes = read_to_end_bounded(io, 1024).await?;
///         String::from_utf8(bytes).map_err(|e| CodecError::Malformed(e.to_string()).into())
///     }
///     async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<String>
///     where
///         T: AsyncRead + Unpin + Send,
///     {
///         self.read_request(p, io).await
///     }
///     async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, r: String) -> io::Result<()>
///     where
///         T: AsyncWrite + Unpin + Send,
///     {
///         if r.len() > 1024 {
///             return Err(CodecError::TooLarge { limit: 1024 }.into());
///         }
///         io.write_all(r.as_bytes()).await
///     }
///     async fn write_response<T>(&mut self, p: &StreamProtocol, io: &mut T, r: String) -> io::Result<()>
///     where
///         T: AsyncWrite + Unpin + Send,
///     {
///         self.write_request(p, io, r).await
///     }
/// }
/// # let mut wire = Vec::new();
/// # let p = StreamProtocol::new("/lines/1");
/// # futures::executor::block_on(async {
/// #     Lines.write_request(&p, &mut wire, "hi".into()).await.unwrap();
/// #     assert_eq!(Lines.read_request(&p, &mut &wire[..]).await.unwrap(), "hi");
/// # });
/// ```
pub trait Codec: Clone + Send + 'static {
    /// The protocol (or protocol version) an exchange was negotiated with, handed to every
    /// method. [`StreamProtocol`] for most codecs; an enum of versions where they differ.
    type Protocol: Into<StreamProtocol> + Clone + Send + Sync + 'static;
    /// A request.
    type Request: Send + 'static;
    /// A response.
    type Response: Send + 'static;

    /// Reads a request from `io` (the remote closes its write side after the request).
    fn read_request<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
    ) -> impl Future<Output = io::Result<Self::Request>> + Send
    where
        T: AsyncRead + Unpin + Send;

    /// Reads a response from `io` (the remote closes its write side after the response).
    fn read_response<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
    ) -> impl Future<Output = io::Result<Self::Response>> + Send
    where
        T: AsyncRead + Unpin + Send;

    /// Writes a request to `io`; the behaviour closes the write side after it.
    fn write_request<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
        request: Self::Request,
    ) -> impl Future<Output = io::Result<()>> + Send
    where
        T: AsyncWrite + Unpin + Send;

    /// Writes a response to `io`; the behaviour closes the stream after it.
    fn write_response<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
        response: Self::Response,
    ) -> impl Future<Output = io::Result<()>> + Send
    where
        T: AsyncWrite + Unpin + Send;
}

/// A codec's typed failure. Return it as `io::Error::from(codec_error)`; the behaviour finds
/// it again and reports the matching variant of
/// [`OutboundFailure`](crate::OutboundFailure) / [`InboundFailure`](crate::InboundFailure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A message is longer than the codec's limit for it (read: nothing past `limit + 1`
    /// bytes was buffered; write: nothing was written).
    #[error("message longer than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The bytes read are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message to write could not be encoded.
    #[error("message cannot be encoded: {0}")]
    Encode(String),
}

impl From<CodecError> for io::Error {
    fn from(e: CodecError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl CodecError {
    /// The codec error carried by `e`, if it carries one.
    pub fn from_io(e: &io::Error) -> Option<&CodecError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<CodecError>())
    }
}

/// The first capacity of the buffer (or the limit, if smaller).
const FIRST_READ: usize = 8 * 1024;

/// Reads `io` to its end and returns the bytes, refusing more than `limit` of them with
/// [`CodecError::TooLarge`] (as an `io::Error`).
///
/// Memory: the stream is read straight into the message's buffer, which grows with the
/// bytes that actually arrive (from 8 KiB, doubling, never past `limit`); the future holds
/// no read chunk of its own, so an exchange future stays small. A peer announcing nothing
/// can make the buffer grow by sending, and only up to `limit`. At most `limit + 1` bytes
/// are read (the last one, into a one-byte probe, shows a message too large).
///
/// ```
/// use meshwire_request_response::{read_to_end_bounded, CodecError};
/// # futures::executor::block_on(async {
/// assert_eq!(read_to_end_bounded(&mut &b"abc"[..], 3).await.unwrap(), b"abc");
/// let err = read_to_end_bounded(&mut &b"abcd"[..], 3).await.unwrap_err();
/// assert_eq!(CodecError::from_io(&err), Some(&CodecError::TooLarge { limit: 3 }));
/// # });
/// ```
///
/// # Errors
///
/// [`CodecError::TooLarge`] past `limit` bytes; the stream's own I/O errors.
pub async fn read_to_end_bounded<T>(io: &mut T, limit: u64) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + ?Sized,
{
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut buf: Vec<u8> = Vec::new();
    let mut len = 0;
    loop {
        if len == limit_usize {
            // Full: one more byte means too large.
            let mut probe = [0u8; 1];
            if io.read(&mut probe).await? == 0 {
                buf.truncate(len);
                return Ok(buf);
            }
            return Err(CodecError::TooLarge { limit }.into());
        }
        if len == buf.len() {
            // Double, as `Vec` would, but never past the limit.
            let grow = len.saturating_mul(2).max(FIRST_READ).min(limit_usize);
            buf.reserve_exact(grow - len);
            buf.resize(grow, 0);
        }
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            buf.truncate(len);
            return Ok(buf);
        }
        len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_keep_capacity_within_the_limit() {
        futures::executor::block_on(async {
            let data = vec![7u8; 100_000];
            let got = read_to_end_bounded(&mut &data[..], 100_000).await.unwrap();
            assert_eq!(got, data);
            assert!(got.capacity() <= 100_000);
            let err = read_to_end_bounded(&mut &data[..], 99_999)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(
                CodecError::from_io(&err),
                Some(&CodecError::TooLarge { limit: 99_999 })
            );
            // An empty stream is an empty message.
            assert!(read_to_end_bounded(&mut &[][..], 0)
                .await
                .unwrap()
                .is_empty());
        });
    }

    #[test]
    fn a_bounded_read_holds_no_chunk_of_its_own() {
        // Every exchange future carries this one; it used to hold an 8 KiB chunk.
        let mut io = &[][..];
        let read = read_to_end_bounded(&mut io, 1 << 20);
        assert!(
            std::mem::size_of_val(&read) < 256,
            "{}",
            std::mem::size_of_val(&read)
        );
        // Reading to exactly the limit, then the end, is a message; one byte more is not.
        futures::executor::block_on(async {
            let data = vec![1u8; 3 * FIRST_READ];
            let limit = data.len() as u64;
            assert_eq!(
                read_to_end_bounded(&mut &data[..], limit).await.unwrap(),
                data
            );
            let more = [&data[..], &[2]].concat();
            let err = read_to_end_bounded(&mut &more[..], limit)
                .await
                .unwrap_err();
            assert_eq!(
                CodecError::from_io(&err),
                Some(&CodecError::TooLarge { limit })
            );
        });
    }

    #[test]
    fn codec_errors_survive_the_trip_through_io_error() {
        let e: io::Error = CodecError::Malformed("bad".into()).into();
        assert_eq!(
            CodecError::from_io(&e),
            Some(&CodecError::Malformed("bad".into()))
        );
        assert_eq!(CodecError::from_io(&io::Error::other("x")), None);
    }
}
