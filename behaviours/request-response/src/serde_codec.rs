//! What the [`json`](crate::json) and [`cbor`](crate::cbor) codecs share: size limits with
//! rust-libp2p's defaults, bounded reads, and the write-side size check. Each format gives
//! its encode and decode functions.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::codec::{read_to_end_bounded, CodecError};

/// An encoding of serde values: the format's `to_vec` and `from_slice`.
pub(crate) trait Format {
    fn encode<V: serde::Serialize>(value: &V) -> Result<Vec<u8>, CodecError>;
    fn decode<V: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<V, CodecError>;
}

/// Types only named: `Send + Sync` whatever they are.
type Marker<F, Req, Resp> = PhantomData<fn() -> (F, Req, Resp)>;

/// A serde codec in format `F` with its two limits.
pub(crate) struct SerdeCodec<F, Req, Resp> {
    pub(crate) request_size_maximum: u64,
    pub(crate) response_size_maximum: u64,
    phantom: Marker<F, Req, Resp>,
}

impl<F, Req, Resp> SerdeCodec<F, Req, Resp> {
    /// rust-libp2p's defaults for its `json` and `cbor` codecs.
    pub(crate) const DEFAULT_REQUEST_MAXIMUM: u64 = 1024 * 1024;
    pub(crate) const DEFAULT_RESPONSE_MAXIMUM: u64 = 10 * 1024 * 1024;

    pub(crate) fn new() -> Self {
        SerdeCodec {
            request_size_maximum: Self::DEFAULT_REQUEST_MAXIMUM,
            response_size_maximum: Self::DEFAULT_RESPONSE_MAXIMUM,
            phantom: PhantomData,
        }
    }
}

impl<F, Req, Resp> Clone for SerdeCodec<F, Req, Resp> {
    fn clone(&self) -> Self {
        SerdeCodec {
            request_size_maximum: self.request_size_maximum,
            response_size_maximum: self.response_size_maximum,
            phantom: PhantomData,
        }
    }
}

impl<F, Req, Resp> fmt::Debug for SerdeCodec<F, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("request_size_maximum", &self.request_size_maximum)
            .field("response_size_maximum", &self.response_size_maximum)
            .finish()
    }
}

impl<F: Format, Req, Resp> SerdeCodec<F, Req, Resp> {
    pub(crate) async fn read<V, T>(io: &mut T, limit: u64) -> io::Result<V>
    where
        V: serde::de::DeserializeOwned,
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_to_end_bounded(io, limit).await?;
        Ok(F::decode(&bytes)?)
    }

    /// Encodes `value`, refusing more than `limit` bytes (synchronous, so the value is not
    /// held across the write).
    pub(crate) fn encode<V: serde::Serialize>(value: &V, limit: u64) -> io::Result<Vec<u8>> {
        let bytes = F::encode(value)?;
        if bytes.len() as u64 > limit {
            return Err(CodecError::TooLarge { limit }.into());
        }
        Ok(bytes)
    }

    pub(crate) async fn write<T>(io: &mut T, bytes: io::Result<Vec<u8>>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&bytes?).await
    }
}

/// Implements the public codec type `$codec` of a format module over [`SerdeCodec`].
macro_rules! serde_codec {
    ($format:ty) => {
        /// The codec: `Req` and `Resp` as one serialized value each, read to the end of the
        /// stream (see the [module docs](self)).
        pub struct Codec<Req, Resp>(SerdeCodec<$format, Req, Resp>);

        impl<Req, Resp> Default for Codec<Req, Resp> {
            /// rust-libp2p's limits: requests of at most 1 MiB, responses of at most 10 MiB.
            fn default() -> Self {
                Codec(SerdeCodec::new())
            }
        }

        impl<Req, Resp> Clone for Codec<Req, Resp> {
            fn clone(&self) -> Self {
                Codec(self.0.clone())
            }
        }

        impl<Req, Resp> std::fmt::Debug for Codec<Req, Resp> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl<Req, Resp> Codec<Req, Resp> {
            /// Default request limit: 1 MiB (rust-libp2p's).
            pub const DEFAULT_REQUEST_MAXIMUM: u64 = 1024 * 1024;
            /// Default response limit: 10 MiB (rust-libp2p's).
            pub const DEFAULT_RESPONSE_MAXIMUM: u64 = 10 * 1024 * 1024;

            /// Sets the request limit, in bytes (encoded size).
            pub fn set_request_size_maximum(mut self, bytes: u64) -> Self {
                self.0.request_size_maximum = bytes;
                self
            }

            /// Sets the response limit, in bytes (encoded size).
            pub fn set_response_size_maximum(mut self, bytes: u64) -> Self {
                self.0.response_size_maximum = bytes;
                self
            }

            /// The request limit, in bytes.
            pub fn request_size_maximum(&self) -> u64 {
                self.0.request_size_maximum
            }

            /// The response limit, in bytes.
            pub fn response_size_maximum(&self) -> u64 {
                self.0.response_size_maximum
            }
        }

        impl<Req, Resp> crate::Codec for Codec<Req, Resp>
        where
            Req: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            Resp: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        {
            type Protocol = meshwire_swarm::StreamProtocol;
            type Request = Req;
            type Response = Resp;

            async fn read_request<T>(
                &mut self,
                _: &Self::Protocol,
                io: &mut T,
            ) -> std::io::Result<Req>
            where
                T: futures::AsyncRead + Unpin + Send,
            {
                SerdeCodec::<$format, Req, Resp>::read(io, self.0.request_size_maximum).await
            }

            async fn read_response<T>(
                &mut self,
                _: &Self::Protocol,
                io: &mut T,
            ) -> std::io::Result<Resp>
            where
                T: futures::AsyncRead + Unpin + Send,
            {
                SerdeCodec::<$format, Req, Resp>::read(io, self.0.response_size_maximum).await
            }

            async fn write_request<T>(
                &mut self,
                _: &Self::Protocol,
                io: &mut T,
                request: Req,
            ) -> std::io::Result<()>
            where
                T: futures::AsyncWrite + Unpin + Send,
            {
                let bytes =
                    SerdeCodec::<$format, Req, Resp>::encode(&request, self.0.request_size_maximum);
                SerdeCodec::<$format, Req, Resp>::write(io, bytes).await
            }

            async fn write_response<T>(
                &mut self,
                _: &Self::Protocol,
                io: &mut T,
                response: Resp,
            ) -> std::io::Result<()>
            where
                T: futures::AsyncWrite + Unpin + Send,
            {
                let bytes = SerdeCodec::<$format, Req, Resp>::encode(
                    &response,
                    self.0.response_size_maximum,
                );
                SerdeCodec::<$format, Req, Resp>::write(io, bytes).await
            }
        }

        /// A request-response behaviour with this codec.
        pub type Behaviour<Req, Resp, U = ()> = crate::Behaviour<Codec<Req, Resp>, U>;
    };
}

pub(crate) use serde_codec;
