//! [`RpcCodec`]: the `/meshwire/rpc/1.0.0` messages as a request-response codec, each
//! message bounded before it is buffered.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use meshwire_request_response::{read_to_end_bounded, Codec, CodecError};
use meshwire_swarm::StreamProtocol;

use crate::wire::{decode_response, encode_response, WireError, WireRequest, WireResponse};

/// The request-response codec of RPC. A request that is read but does not decode is handed
/// on as `Err` so that the provider answers it with a typed `BadRequest`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcCodec {
    pub(crate) max_request: u64,
    pub(crate) max_response: u64,
}

async fn write_bounded<T>(io: &mut T, data: &[u8], limit: u64) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if data.len() as u64 > limit {
        return Err(CodecError::TooLarge { limit }.into());
    }
    io.write_all(data).await
}

impl Codec for RpcCodec {
    type Protocol = StreamProtocol;
    type Request = Result<WireRequest, WireError>;
    type Response = WireResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_to_end_bounded(io, self.max_request).await?;
        Ok(WireRequest::decode(bytes))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_to_end_bounded(io, self.max_response).await?;
        decode_response(bytes).map_err(|e| CodecError::Malformed(e.to_string()).into())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let request = request.map_err(|e| io::Error::from(CodecError::Encode(e.to_string())))?;
        write_bounded(io, &request.encode(), self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: WireResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &encode_response(&response), self.max_response).await
    }
}
