//! [`RpcCodec`]: the `/meshwire/rpc/1.0.0` messages as a request-response codec, each
//! message bounded before it is buffered.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use meshwire_request_response::{Codec, CodecError};
use meshwire_swarm::StreamProtocol;

use crate::wire::{decode_response, encode_response, WireError, WireRequest, WireResponse};

/// The request-response codec of RPC. A request that is read but does not decode is handed
/// on as `Err` so that the provider answers it with a typed `BadRequest`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcCodec {
    pub(crate) max_request: u64,
    pub(crate) max_response: u64,
}

/// First read buffer: 512 bytes; it doubles as bytes arrive, never past the limit + 1.
const FIRST_READ: usize = 512;

/// Reads to the end of the stream, at most `limit` bytes (past it [`CodecError::TooLarge`]).
///
/// Like `read_to_end_bounded` it reads straight into the message's buffer, so its future
/// holds no read chunk of its own: every exchange future (moved into the request-response
/// task set, one per call) stays small, which is what a call costs at high rates. Its first
/// read is smaller (512 bytes, not 8 KiB): RPC messages are mostly small.
async fn read_bounded<T>(io: &mut T, limit: u64) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + ?Sized,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX - 1);
    // One byte past the limit shows a message that is too large.
    let cap = limit.saturating_add(1);
    let mut buf = Vec::new();
    let mut len = 0;
    loop {
        if len == buf.len() {
            let grow = len.saturating_mul(2).max(FIRST_READ).min(cap);
            buf.reserve_exact(grow - len);
            buf.resize(grow, 0);
        }
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            buf.truncate(len);
            return Ok(buf);
        }
        len += n;
        if len > limit {
            return Err(CodecError::TooLarge {
                limit: limit as u64,
            }
            .into());
        }
    }
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
        let bytes = read_bounded(io, self.max_request).await?;
        Ok(WireRequest::decode(bytes))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, self.max_response).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_stop_one_byte_past_the_limit() {
        futures::executor::block_on(async {
            for len in [0usize, 1, 511, 512, 513, 5000] {
                let data = vec![7u8; len];
                let got = read_bounded(&mut &data[..], 5000).await.unwrap();
                assert_eq!(got, data);
                assert!(got.capacity() <= 5001);
            }
            let data = vec![7u8; 5001];
            let err = read_bounded(&mut &data[..], 5000).await.unwrap_err();
            assert_eq!(
                CodecError::from_io(&err),
                Some(&CodecError::TooLarge { limit: 5000 })
            );
            assert!(read_bounded(&mut &[][..], 0).await.unwrap().is_empty());
            assert!(read_bounded(&mut &[1u8][..], 0).await.is_err());
        });
    }
}
