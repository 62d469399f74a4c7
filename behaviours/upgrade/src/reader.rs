//! Reads a path's length-prefixed frames in batches: as many bytes as the stream has per
//! read, and every whole frame in them decoded at once. A `Data` payload is not copied: it is
//! a slice of the read buffer (one reference count, no allocation per frame). A frame's
//! announced length is checked against the bound before the buffer grows for it.
//!
//! **What a peer can pin.** The buffer is a series of chunks of [`chunk_size`] bytes
//! (at least one whole frame); a payload keeps its chunk alive while it is held (by the
//! engine, which holds at most its window in bytes, by the `Session`'s batch, or by the
//! application). The engine's window alone does not bound the chunks: a small held message
//! may pin a whole chunk whose other bytes were duplicates or are consumed. So the reader
//! keeps the chunks it moved away from and counts those still pinned (a chunk no payload
//! holds any more is reused for the next read, without a new allocation): once
//! `max_pinned` are, it copies payloads out instead of slicing them (a copy pins only
//! itself) until chunks are released again. A path's reader thus pins at most
//! `(max_pinned + 2) × chunk_size` bytes of chunks (the current one included) ([`max_pinned`]: twice the receive window
//! in chunks, at least 4 — with the defaults ≈ 2 MiB).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt};

use crate::wire::{data_fast, varint_fast, Decoded, Frame, WireError};

/// The smallest read chunk (a configuration with small messages still reads this much at
/// once): 64 KiB, so one read takes what QUIC has buffered for the stream (about a write of
/// the peer's path writer, up to its 64 KiB batch) instead of a quarter of it — a read and its
/// pass under the session's lock serve ≈ 4 times more frames (16 KiB before).
pub(crate) const MIN_CHUNK: usize = 64 * 1024;

/// The size of a reader's chunks for frames of at most `max_frame` bytes (prefix included).
pub(crate) fn chunk_size(max_frame: usize) -> usize {
    max_frame.max(MIN_CHUNK)
}

/// How many chunks a path's reader lets held payloads pin for a receive window of `window`
/// bytes and chunks of `chunk` bytes: twice the window's worth (an in-order window of small
/// messages spans about one window of chunks), at least 4.
pub(crate) fn max_pinned(window: u64, chunk: usize) -> usize {
    let chunks =
        usize::try_from(window.saturating_mul(2) / chunk.max(1) as u64).unwrap_or(usize::MAX);
    chunks.max(4)
}

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
    /// The current chunk from its first unread byte on: `buf[..end]` read, the rest free.
    buf: BytesMut,
    end: usize,
    chunk: usize,
    max_frame: usize,
    max_payload: usize,
    /// Bytes the next frame needs (prefix and body), once its prefix is read.
    need: usize,
    /// Bytes of whole frames parsed in the current batch, not yet split off the buffer.
    scan: usize,
    /// The `Data` frames of the current batch (their index in it) and where their payloads lie
    /// in the first `scan` bytes.
    payloads: Vec<(usize, Range<usize>)>,
    /// Chunks moved away from that payloads may still hold (emptied handles: a handle that
    /// is the allocation's only owner again can be reused).
    retired: Vec<BytesMut>,
    /// Payloads are copied once this many retired chunks are pinned.
    max_pinned: usize,
    /// Payloads are copied, not sliced (too many chunks pinned).
    copying: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames of at most `max_frame` bytes (`Data` payloads of `max_payload`)
    /// reading into chunks of `chunk` bytes (at least `max_frame` + 10, the largest prefixed
    /// frame), slicing payloads while fewer than `max_pinned` chunks are held by them.
    pub(crate) fn new(
        io: R,
        chunk: usize,
        max_frame: usize,
        max_payload: usize,
        max_pinned: usize,
    ) -> Self {
        let chunk = chunk.max(max_frame + 10).max(16);
        FrameReader {
            io,
            buf: BytesMut::zeroed(chunk),
            end: 0,
            chunk,
            max_frame,
            max_payload,
            need: 0,
            scan: 0,
            payloads: Vec::new(),
            retired: Vec::new(),
            max_pinned: max_pinned.max(1),
            copying: false,
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
            let mut failed = None;
            while out.len() < max {
                match self.parse_one(out.len()) {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(end) => {
                        failed = Some(end);
                        break;
                    }
                }
            }
            self.take_payloads(out);
            match failed {
                Some(end) if out.is_empty() => return Err(end),
                // The frames before it first; the error again on the next call.
                Some(_) => return Ok(()),
                None => {}
            }
            if !out.is_empty() {
                return Ok(());
            }
            self.make_room();
            let n = self.io.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(if self.end == 0 {
                    ReadEnd::Eof
                } else {
                    ReadEnd::Truncated
                });
            }
            self.end += n;
        }
    }

    /// Splits the bytes of the frames parsed since the last call off the buffer at once and
    /// gives the `Data` frames among them (in `out`) their payloads: slices of that part, or
    /// copies while too many chunks are pinned.
    fn take_payloads(&mut self, out: &mut [Frame]) {
        if self.scan == 0 {
            return;
        }
        let parsed = self.buf.split_to(self.scan).freeze();
        self.end -= self.scan;
        self.scan = 0;
        for (index, range) in self.payloads.drain(..) {
            if let Some(Frame::Data { payload, .. }) = out.get_mut(index) {
                let taken = if self.copying {
                    Bytes::copy_from_slice(&parsed[range])
                } else {
                    parsed.slice(range)
                };
                *payload = taken;
            }
        }
    }

    /// The next whole frame after the ones parsed (`scan`), `None` when it is not all there
    /// yet; a `Data` frame (the `index`th of the batch) gets its payload from
    /// [`FrameReader::take_payloads`]. Nothing is consumed unless the frame decodes (a bad
    /// frame is reported again on the next call).
    fn parse_one(&mut self, index: usize) -> Result<Option<Frame>, ReadEnd> {
        let data = &self.buf[self.scan..self.end];
        let (len, rest) = match varint_fast(data) {
            Some((len, n)) => (len, &data[n..]),
            None => match unsigned_varint::decode::u64(data) {
                Ok(decoded) => decoded,
                Err(unsigned_varint::decode::Error::Insufficient) if data.len() < 10 => {
                    return Ok(None)
                }
                Err(_) => return Err(ReadEnd::InvalidPrefix),
            },
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
        let body = &rest[..len];
        let decoded = match data_fast(body, self.max_payload) {
            Some((seq, offset)) => Decoded::Data { seq, offset },
            None => Frame::decode_lent(body, self.max_payload)?,
        };
        self.need = 0;
        let start = self.scan;
        self.scan += prefix + len;
        Ok(Some(match decoded {
            Decoded::Frame(frame) => frame,
            Decoded::Data { seq, offset } => {
                self.payloads
                    .push((index, start + prefix + offset..self.scan));
                Frame::Data {
                    seq,
                    payload: Bytes::new(),
                }
            }
        }))
    }

    /// Free space after `end` for the next read: when the chunk's free space is short of
    /// the next frame or a quarter chunk, the unread bytes (less than one frame) move to
    /// another chunk — a retired one no payload holds any more, else a new one (the old one
    /// lives on while payloads sliced from it are held).
    fn make_room(&mut self) {
        let want = self.need.max(self.end + 1);
        let free = self.buf.len() - self.end;
        if self.buf.len() < want || free < self.chunk / 4 {
            let size = self.chunk.max(want);
            let mut fresh = self.reclaim(size).unwrap_or_else(|| BytesMut::zeroed(size));
            fresh[..self.end].copy_from_slice(&self.buf[..self.end]);
            let mut old = std::mem::replace(&mut self.buf, fresh);
            old.clear();
            self.retired.push(old);
            self.copying = self.retired.len() >= self.max_pinned;
        }
    }

    /// A retired chunk of at least `size` bytes that nothing holds any more, ready for
    /// reading into; retired chunks nothing holds are dropped, the pinned ones kept.
    fn reclaim(&mut self, size: usize) -> Option<BytesMut> {
        let mut found = None;
        self.retired.retain_mut(|old| {
            // Succeeds only when this handle is the allocation's only owner (and then
            // gives it the whole allocation back).
            if !old.try_reclaim(size) {
                return true;
            }
            if found.is_none() {
                found = Some(std::mem::take(old));
            }
            false
        });
        let mut chunk = found?;
        chunk.resize(size, 0);
        Some(chunk)
    }

    /// Retired chunks still held by payloads (at the last change of chunk).
    #[cfg(test)]
    fn pinned(&self) -> usize {
        self.retired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn frames_split_across_reads_and_chunks_arrive_whole_in_order() {
        let frames: Vec<Frame> = (0..50).map(|i| data(i, (i as usize * 37) % 300)).collect();
        let bytes = encoded(&frames);
        // A reader handing out 7 bytes at a time; a chunk asked for smaller than a frame is
        // one frame (410 bytes), so frames straddle chunks.
        let io =
            futures::stream::iter(bytes.chunks(7).map(|c| Ok::<_, std::io::Error>(c.to_vec())))
                .into_async_read();
        let mut reader = FrameReader::new(io, 32, 400, 390, 8);
        assert_eq!(reader.chunk, 410);
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
    async fn payloads_are_slices_of_one_chunk_not_copies() {
        let frames: Vec<Frame> = (0..20).map(|i| data(i, 10)).collect();
        let bytes = encoded(&frames);
        let mut reader = FrameReader::new(&bytes[..], 1024, 100, 90, 8);
        let mut got = Vec::new();
        assert!(reader.read_batch(&mut got, 64).await.is_ok());
        assert_eq!(got, frames);
        let starts: Vec<usize> = got
            .iter()
            .map(|frame| match frame {
                Frame::Data { payload, .. } => payload.as_ptr() as usize,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        // Each frame is a prefix byte, a type byte, a one-byte number and 10 bytes: the
        // payloads lie 13 bytes apart in the same buffer.
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], 13);
        }
        assert_eq!(chunk_size(100), MIN_CHUNK);
        assert_eq!(chunk_size(MIN_CHUNK + 41), MIN_CHUNK + 41);
    }

    #[tokio::test]
    async fn held_payloads_pin_a_bounded_number_of_chunks_and_released_chunks_are_reused() {
        let frames: Vec<Frame> = (0..400).map(|i| data(i, 10)).collect();
        let bytes = encoded(&frames);
        let io = futures::stream::iter(
            bytes
                .chunks(50)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec())),
        )
        .into_async_read();
        // Chunks of one frame bound (110 bytes, 8 frames of 13 bytes), at most 2 pinned.
        let mut reader = FrameReader::new(io, 64, 100, 90, 2);
        let (mut held, mut batch) = (Vec::new(), Vec::new());
        // The application holds 200 messages (about 25 chunks' worth): once 2 chunks are
        // pinned the reader copies; the pinned ones, the one just left (reused at the next
        // change) and the current one are all it keeps.
        while held.len() < 200 {
            assert!(reader.read_batch(&mut batch, 16).await.is_ok());
            held.append(&mut batch);
            assert!(reader.pinned() <= 2 + 1, "{} pinned", reader.pinned());
        }
        assert!(reader.copying);
        assert_eq!(held[..], frames[..held.len()]);
        let mut next = held.len();
        held.clear();
        // Released: the chunks are reclaimed (reused or freed) and slicing resumes.
        let mut slices = 0;
        loop {
            match reader.read_batch(&mut batch, 16).await {
                Ok(()) => {}
                Err(ReadEnd::Eof) => break,
                Err(other) => panic!("{other}"),
            }
            if !reader.copying {
                slices += batch.len();
            }
            for frame in batch.drain(..) {
                assert_eq!(frame, frames[next]);
                next += 1;
            }
            assert!(reader.pinned() <= 2 + 1, "{} pinned", reader.pinned());
        }
        assert!(reader.pinned() <= 1, "{} pinned", reader.pinned());
        assert_eq!(next, frames.len());
        assert!(slices > 100, "{slices} sliced after the release");
    }

    #[tokio::test]
    async fn a_bad_frame_is_reported_again_not_skipped() {
        let mut bytes = encoded(&[data(0, 3)]);
        // A frame of type 9, then a valid one.
        bytes.extend_from_slice(&[1, 9]);
        bytes.extend(encoded(&[data(1, 3)]));
        let mut reader = FrameReader::new(&bytes[..], 64, 100, 90, 8);
        let mut got = Vec::new();
        assert!(reader.read_batch(&mut got, 16).await.is_ok());
        assert_eq!(got, [data(0, 3)]);
        for _ in 0..2 {
            got.clear();
            assert!(matches!(
                reader.read_batch(&mut got, 16).await,
                Err(ReadEnd::Wire(WireError::UnknownType(9)))
            ));
            assert!(got.is_empty());
        }
    }

    #[tokio::test]
    async fn an_oversized_announcement_ends_the_path_after_the_frames_before_it() {
        let mut bytes = encoded(&[data(0, 10)]);
        bytes.extend_from_slice(&[0xff, 0xff, 0x03]);
        let mut reader = FrameReader::new(&bytes[..], 64, 100, 90, 8);
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
        let mut reader = FrameReader::new(&bytes[..bytes.len() - 1], 64, 100, 90, 8);
        let mut got = Vec::new();
        assert!(matches!(
            reader.read_batch(&mut got, 16).await,
            Err(ReadEnd::Truncated)
        ));
    }
}
