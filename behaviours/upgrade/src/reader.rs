//! Reads a path's length-prefixed frames in batches: one buffer per path, as many bytes as
//! the stream has per read, and every whole frame in them decoded at once (no allocation per
//! frame besides a `Data` payload's copy). A frame's announced length is checked against the
//! bound before the buffer grows for it.

use futures::io::{AsyncRead, AsyncReadExt};

use crate::wire::{Frame, WireError};

/// Why a path's reading ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadEnd {
    /// The stream ended between frames.
    #[error("stream closed")]
    Eof,
    /// The stream ended inside a frame.
    #[error("stream closed inside a frame")]
    Truncated,
    /// A length prefix that is not a valid unsigned varint.
    #[error("invalid length prefix")]
    InvalidPrefix,
    /// A frame announced over the bound.
    #[error("frame of {len} bytes over the bound of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// A frame's body did not decode.
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream's frames, read in batches.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
    max_payload: usize,
    /// Bytes the next frame needs (prefix and body), once its prefix is read.
    need: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames of at most `max_frame` bytes (`Data` payloads of `max_payload`)
    /// with a buffer of `capacity` bytes (grown up to one whole frame when one is larger).
    pub(crate) fn new(io: R, capacity: usize, max_frame: usize, max_payload: usize) -> Self {
        FrameReader {
            io,
            buf: vec![0; capacity.max(16)],
            start: 0,
            end: 0,
            max_frame,
            max_payload,
            need: 0,
        }
    }

    /// Appends to `out` (empty) every whole frame buffered (at most `max`), reading first when
    /// none is; frames appended before an `Err` are valid and precede the end.
    pub(crate) async fn read_batch(
        &mut self,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> Result<(), ReadEnd> {
        loop {
            while out.len() < max {
                match self.parse_one() {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(end) if out.is_empty() => return Err(end),
                    // The frames before it first; the error again on the next call.
                    Err(_) => return Ok(()),
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
            self.make_room();
            let n = self.io.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(if self.start == self.end {
                    ReadEnd::Eof
                } else {
                    ReadEnd::Truncated
                });
            }
            self.end += n;
        }
    }

    /// The next whole frame in the buffer, `None` when it is not all there yet.
    fn parse_one(&mut self) -> Result<Option<Frame>, ReadEnd> {
        let data = &self.buf[self.start..self.end];
        let (len, rest) = match unsigned_varint::decode::u64(data) {
            Ok(decoded) => decoded,
            Err(unsigned_varint::decode::Error::Insufficient) if data.len() < 10 => {
                return Ok(None)
            }
            Err(_) => return Err(ReadEnd::InvalidPrefix),
        };
        let len = match usize::try_from(len) {
            Ok(len) if len <= self.max_frame => len,
            _ => {
                return Err(ReadEnd::TooLarge {
                    len,
                    max: self.max_frame,
                })
            }
        };
        let prefix = data.len() - rest.len();
        if rest.len() < len {
            self.need = prefix + len;
            return Ok(None);
        }
        let frame = Frame::decode(&rest[..len], self.max_payload)?;
        self.start += prefix + len;
        self.need = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(frame))
    }

    /// Free space after `end` for the next read (the unread bytes moved to the front when
    /// needed; the buffer grown to the next frame's announced size, already checked).
    fn make_room(&mut self) {
        let unread = self.end - self.start;
        let want = self.need.max(unread + 1);
        if self.buf.len() - self.start < want || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = unread;
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::TryStreamExt;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            let body = frame.encode();
            let mut prefix = unsigned_varint::encode::usize_buffer();
            out.extend_from_slice(unsigned_varint::encode::usize(body.len(), &mut prefix));
            out.extend_from_slice(&body);
        }
        out
    }

    fn data(seq: u64, len: usize) -> Frame {
        Frame::Data {
            seq,
            payload: Bytes::from(vec![seq as u8; len]),
        }
    }

    #[tokio::test]
    async fn frames_split_across_reads_and_larger_than_the_buffer_arrive_whole_in_order() {
        let frames: Vec<Frame> = (0..50).map(|i| data(i, (i as usize * 37) % 300)).collect();
        let bytes = encoded(&frames);
        // A reader handing out 7 bytes at a time into a 32-byte buffer.
        let io =
            futures::stream::iter(bytes.chunks(7).map(|c| Ok::<_, std::io::Error>(c.to_vec())))
                .into_async_read();
        let mut reader = FrameReader::new(io, 32, 400, 390);
        let (mut got, mut batch) = (Vec::new(), Vec::new());
        let end = loop {
            let result = reader.read_batch(&mut batch, 4).await;
            assert!(batch.len() <= 4);
            got.append(&mut batch);
            if let Err(end) = result {
                break end;
            }
        };
        assert!(matches!(end, ReadEnd::Eof));
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn an_oversized_announcement_ends_the_path_after_the_frames_before_it() {
        let mut bytes = encoded(&[data(0, 10)]);
        bytes.extend_from_slice(&[0xff, 0xff, 0x03]);
        let mut reader = FrameReader::new(&bytes[..], 64, 100, 90);
        let mut got = Vec::new();
        assert!(reader.read_batch(&mut got, 16).await.is_ok());
        assert_eq!(got, [data(0, 10)]);
        got.clear();
        let end = reader.read_batch(&mut got, 16).await;
        assert!(matches!(
            end,
            Err(ReadEnd::TooLarge {
                len: 65535,
                max: 100
            })
        ));
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let bytes = encoded(&[data(0, 10)]);
        let mut reader = FrameReader::new(&bytes[..bytes.len() - 1], 64, 100, 90);
        let mut got = Vec::new();
        assert!(matches!(
            reader.read_batch(&mut got, 16).await,
            Err(ReadEnd::Truncated)
        ));
    }
}
