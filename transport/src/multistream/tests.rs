use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::executor::block_on;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::FutureExt;
use proptest::prelude::*;

use super::codec::{encode_protocol_list, push_line, FrameReader, HEADER_LINE, LS_LINE, NA_LINE};
use super::*;

// ---------------------------------------------------------------------
// In-memory duplex pipe with bounded capacity and bounded chunk size.
// ---------------------------------------------------------------------

#[derive(Debug, Default)]
struct Channel {
    buf: VecDeque<u8>,
    write_closed: bool,
    read_dropped: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

#[derive(Debug)]
struct PipeEnd {
    rx: Arc<Mutex<Channel>>,
    tx: Arc<Mutex<Channel>>,
    capacity: usize,
    chunk: usize,
}

fn lock(ch: &Mutex<Channel>) -> MutexGuard<'_, Channel> {
    ch.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected pair; every read and write moves at most `chunk` bytes.
fn pipe(capacity: usize, chunk: usize) -> (PipeEnd, PipeEnd) {
    let a = Arc::new(Mutex::new(Channel::default()));
    let b = Arc::new(Mutex::new(Channel::default()));
    (
        PipeEnd {
            rx: a.clone(),
            tx: b.clone(),
            capacity,
            chunk,
        },
        PipeEnd {
            rx: b,
            tx: a,
            capacity,
            chunk,
        },
    )
}

fn duplex() -> (PipeEnd, PipeEnd) {
    pipe(64 * 1024, usize::MAX)
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut ch = lock(&self.rx);
        if ch.buf.is_empty() {
            if ch.write_closed {
                return Poll::Ready(Ok(0));
            }
            ch.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = ch.buf.len().min(out.len()).min(self.chunk);
        for (slot, byte) in out.iter_mut().zip(ch.buf.drain(..n)) {
            *slot = byte;
        }
        if let Some(w) = ch.write_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut ch = lock(&self.tx);
        if ch.read_dropped || ch.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let space = self.capacity.saturating_sub(ch.buf.len());
        if space == 0 {
            ch.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(data.len()).min(self.chunk);
        ch.buf.extend(&data[..n]);
        if let Some(w) = ch.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut ch = lock(&self.tx);
        ch.write_closed = true;
        if let Some(w) = ch.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut tx = lock(&self.tx);
        tx.write_closed = true;
        if let Some(w) = tx.read_waker.take() {
            w.wake();
        }
        drop(tx);
        let mut rx = lock(&self.rx);
        rx.read_dropped = true;
        if let Some(w) = rx.write_waker.take() {
            w.wake();
        }
    }
}

// ---------------------------------------------------------------------
// Scripted stream: fixed input, recorded output.
// ---------------------------------------------------------------------

#[derive(Debug)]
struct ScriptIo {
    input: Vec<u8>,
    pos: usize,
    /// At the end of `input`: EOF if true, `Pending` forever if false.
    eof: bool,
    chunk: usize,
    written: Vec<u8>,
    closed: bool,
}

impl ScriptIo {
    fn new(input: &[u8]) -> Self {
        ScriptIo {
            input: input.to_vec(),
            pos: 0,
            eof: true,
            chunk: usize::MAX,
            written: Vec::new(),
            closed: false,
        }
    }

    fn stalling(input: &[u8]) -> Self {
        ScriptIo {
            eof: false,
            ..Self::new(input)
        }
    }
}

impl AsyncRead for ScriptIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let rest = self.input.len() - self.pos;
        if rest == 0 {
            return if self.eof {
                Poll::Ready(Ok(0))
            } else {
                Poll::Pending
            };
        }
        let n = rest.min(out.len()).min(self.chunk);
        let start = self.pos;
        out[..n].copy_from_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ScriptIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.closed = true;
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_line(&mut out, body);
    out
}

fn line(text: &str) -> Vec<u8> {
    let mut body = text.as_bytes().to_vec();
    body.push(b'\n');
    frame(&body)
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn header() -> Vec<u8> {
    frame(HEADER_LINE)
}

/// Reference decoder of an `ls` reply body, mirroring rust-libp2p's.
fn decode_protocol_list(mut body: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    loop {
        if body == b"\n" {
            return Some(out);
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let (&b, rest) = body.split_first()?;
            body = rest;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return None;
            }
        }
        if len == 0 || len > body.len() || body[len - 1] != b'\n' {
            return None;
        }
        out.push(String::from_utf8(body[..len - 1].to_vec()).ok()?);
        body = &body[len..];
    }
}

fn negotiation_error(e: &io::Error) -> Option<&NegotiationError> {
    e.get_ref()?.downcast_ref::<NegotiationError>()
}

type ListenerOutcome = Result<(String, Negotiated<ScriptIo>), NegotiationError>;

fn run_listener(input: &[u8], supported: &[&str]) -> (ListenerOutcome, Vec<u8>) {
    let io = ScriptIo::new(input);
    // The written bytes are only reachable through the result; capture
    // them through a shared wrapper instead.
    let shared = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        inner: io,
        out: shared.clone(),
    };
    let result = block_on(listener_select(recorder, supported));
    let written = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (result.map(|(p, n)| (p, n.map_io())), written)
}

/// Wraps a `ScriptIo`, copying everything written to a shared buffer.
struct Recorder {
    inner: ScriptIo,
    out: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Negotiated<Recorder> {
    fn map_io(self) -> Negotiated<ScriptIo> {
        self.with_io(|recorder| recorder.inner)
    }
}

// ---------------------------------------------------------------------
// End-to-end negotiation over the in-memory pipe
// ---------------------------------------------------------------------

async fn exchange_data<A, B>(mut dialer: Negotiated<A>, mut listener: Negotiated<B>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    dialer.write_all(b"from dialer").await.unwrap();
    dialer.flush().await.unwrap();
    let mut buf = [0u8; 11];
    listener.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from dialer");

    listener.write_all(b"from listener").await.unwrap();
    listener.flush().await.unwrap();
    let mut buf = [0u8; 13];
    dialer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from listener");
    assert!(dialer.is_complete());
    assert!(listener.is_complete());

    dialer.close().await.unwrap();
    let mut rest = Vec::new();
    listener.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn v1_single_protocol() {
    let (a, b) = duplex();
    let (d, l) = tokio::join!(
        dialer_select(a, ["/ipfs/ping/1.0.0"], Version::V1),
        listener_select(b, &["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"]),
    );
    let (dp, dio) = d.unwrap();
    let (lp, lio) = l.unwrap();
    assert_eq!(dp, "/ipfs/ping/1.0.0");
    assert_eq!(lp, "/ipfs/ping/1.0.0");
    assert!(dio.is_complete(), "V1 dialer completes before returning");
    exchange_data(dio, lio).await;
}

#[tokio::test]
async fn v1_lazy_single_protocol_zero_round_trips() {
    let (a, b) = duplex();
    // The dialer completes without the listener running at all.
    let (proto, dio) = dialer_select(a, ["/ipfs/ping/1.0.0"], Version::V1Lazy)
        .now_or_never()
        .expect("lazy dialer must not wait for the listener")
        .unwrap();
    assert_eq!(proto, "/ipfs/ping/1.0.0");
    assert!(!dio.is_complete());
    let listener = tokio::spawn(async move {
        let (p, mut lio) = listener_select(b, &["/ipfs/ping/1.0.0"]).await.unwrap();
        assert_eq!(p, "/ipfs/ping/1.0.0");
        let mut early = [0u8; 10];
        lio.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early data");
        lio
    });
    // Write before the listener answered.
    let mut dio = dio;
    dio.write_all(b"early data").await.unwrap();
    let lio = listener.await.unwrap();
    exchange_data(dio, lio).await;
}

#[tokio::test]
async fn trickled_one_byte_at_a_time() {
    for version in [Version::V1, Version::V1Lazy] {
        let (a, b) = pipe(64, 1);
        let (d, l) = tokio::join!(
            dialer_select(a, ["/yamux/1.0.0"], version),
            listener_select(b, &["/yamux/1.0.0"]),
        );
        exchange_data(d.unwrap().1, l.unwrap().1).await;
    }
}

#[test]
fn deferred_lazy_dialer_sends_its_proposal_with_the_first_data() {
    let expected: &[u8] = b"\x13/multistream/1.0.0\n\x11/ipfs/ping/1.0.0\n";
    let mut io = ScriptIo::stalling(b"");
    let (_, mut n) =
        dialer_select_with_config(&mut io, ["/ipfs/ping/1.0.0"], Version::V1Lazy, &DEFERRED)
            .now_or_never()
            .expect("a lazy dialer does not wait")
            .unwrap();
    assert!(n.has_unsent());
    block_on(n.write_all(b"ping")).unwrap();
    // The end goes at once; the close then waits for the (stalled) confirmation.
    assert!(n.close().now_or_never().is_none());
    drop(n);
    assert_eq!(io.written, [expected, b"ping"].concat());
    // A read first (a protocol the listener speaks first) writes them too, without waiting.
    let mut io = ScriptIo::stalling(b"");
    let (_, mut n) =
        dialer_select_with_config(&mut io, ["/ipfs/ping/1.0.0"], Version::V1Lazy, &DEFERRED)
            .now_or_never()
            .unwrap()
            .unwrap();
    let mut buf = [0u8; 4];
    assert!(n.read(&mut buf).now_or_never().is_none());
    assert!(!n.has_unsent());
    drop(n);
    assert_eq!(io.written, expected);
    // And so does `complete`.
    let mut io = ScriptIo::stalling(b"");
    let (_, mut n) =
        dialer_select_with_config(&mut io, ["/ipfs/ping/1.0.0"], Version::V1Lazy, &DEFERRED)
            .now_or_never()
            .unwrap()
            .unwrap();
    assert!(n.complete().now_or_never().is_none());
    drop(n);
    assert_eq!(io.written, expected);
    // With several protocols the dialer is not lazy: it writes and waits as before.
    let mut io = ScriptIo::stalling(b"");
    assert!(
        dialer_select_with_config(&mut io, ["/a", "/b"], Version::V1Lazy, &DEFERRED)
            .now_or_never()
            .is_none()
    );
    assert_eq!(io.written, [&header()[..], &line("/a")].concat());
}

#[test]
fn lazy_dialer_exact_bytes() {
    let mut io = ScriptIo::stalling(b"");
    let (proto, n) = dialer_select(&mut io, ["/ipfs/ping/1.0.0"], Version::V1Lazy)
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(proto, "/ipfs/ping/1.0.0");
    assert!(!n.is_complete());
    drop(n);
    assert_eq!(
        io.written,
        b"\x13/multistream/1.0.0\n\x11/ipfs/ping/1.0.0\n"
    );
}

#[test]
fn v1_dialer_exact_bytes_with_rejection() {
    let input = concat(&[&header(), &frame(NA_LINE), &line("/b")]);
    let mut io = ScriptIo::new(&input);
    let (proto, n) = block_on(dialer_select(&mut io, ["/a", "/b"], Version::V1)).unwrap();
    assert_eq!(proto, "/b");
    assert!(n.is_complete());
    drop(n);
    assert_eq!(io.written, b"\x13/multistream/1.0.0\n\x03/a\n\x03/b\n");
    assert_eq!(io.pos, input.len());
}

#[tokio::test]
async fn first_proposal_rejected() {
    for version in [Version::V1, Version::V1Lazy] {
        let (a, b) = duplex();
        let (d, l) = tokio::join!(
            dialer_select(a, ["/noise", "/tls/1.0.0", "/yamux/1.0.0"], version),
            listener_select(b, &["/yamux/1.0.0", "/tls/1.0.0"]),
        );
        let (dp, dio) = d.unwrap();
        let (lp, lio) = l.unwrap();
        assert_eq!(dp, "/tls/1.0.0");
        assert_eq!(lp, "/tls/1.0.0");
        assert!(dio.is_complete());
        exchange_data(dio, lio).await;
    }
}

#[tokio::test]
async fn all_rejected_dialer_fails() {
    let (a, b) = duplex();
    // The dialer drops (closes) its stream when it gives up.
    let (d, l) = tokio::join!(
        dialer_select(a, ["/a/1", "/b/1"], Version::V1),
        listener_select(b, &["/c/1"]),
    );
    assert!(matches!(d, Err(NegotiationError::Failed)), "{d:?}");
    assert!(matches!(l, Err(NegotiationError::Failed)), "{:?}", l.err());
}

#[tokio::test]
async fn lazy_rejection_surfaces_on_first_read() {
    let (a, b) = duplex();
    let (_, mut dio) = dialer_select(a, ["/a/1"], Version::V1Lazy).await.unwrap();
    dio.write_all(b"optimistic data").await.unwrap();
    let listener = tokio::spawn(async move { listener_select(b, &["/c/1"]).await.map(|_| ()) });
    let mut buf = [0u8; 8];
    let err = dio.read(&mut buf).await.unwrap_err();
    assert!(
        matches!(negotiation_error(&err), Some(NegotiationError::Failed)),
        "{err:?}"
    );
    assert!(!dio.is_complete());
    // Later reads, writes and `complete` keep failing.
    assert!(dio.read(&mut buf).await.is_err());
    assert!(dio.write_all(b"x").await.is_err());
    assert!(matches!(
        dio.complete().await,
        Err(NegotiationError::Failed)
    ));
    assert!(dio.into_inner().is_err());
    // The listener took the lazy data after `na` as a failed negotiation.
    assert!(matches!(
        listener.await.unwrap(),
        Err(NegotiationError::Failed)
    ));
}

#[test]
fn lazy_na_after_header_via_complete() {
    let input = concat(&[&header(), &frame(NA_LINE)]);
    let (_, mut n) = block_on(dialer_select(
        ScriptIo::new(&input),
        ["/x"],
        Version::V1Lazy,
    ))
    .unwrap();
    assert!(matches!(
        block_on(n.complete()),
        Err(NegotiationError::Failed)
    ));
    // Closing a failed stream still closes the inner stream.
    block_on(n.close()).unwrap();
    assert!(n.get_ref().closed);
}

#[test]
fn lazy_close_closes_first_and_reports_refusal() {
    let input = concat(&[&header(), &frame(NA_LINE)]);
    let (_, mut n) = block_on(dialer_select(
        ScriptIo::new(&input),
        ["/x"],
        Version::V1Lazy,
    ))
    .unwrap();
    let err = block_on(n.close()).unwrap_err();
    assert!(matches!(
        negotiation_error(&err),
        Some(NegotiationError::Failed)
    ));
    assert!(n.get_ref().closed);
}

/// A request closed before its response is read: the listener sees the end of the request
/// while the dialer's close still waits for the confirmation (no round trip in between),
/// and the close completes once the answer arrives.
#[tokio::test]
async fn lazy_close_does_not_wait_for_the_confirmation_to_send_the_end() {
    use futures::FutureExt;
    let (a, b) = duplex();
    let (_, mut dialer) = dialer_select(a, ["/x"], Version::V1Lazy).await.unwrap();
    dialer.write_all(b"request").await.unwrap();
    let mut closing = Box::pin(async move {
        dialer.close().await.unwrap();
        dialer
    });
    assert!(
        (&mut closing).now_or_never().is_none(),
        "the answer has not been written"
    );
    // The listener has the whole request, end included, before it answers anything.
    let mut listener = Box::pin(async move {
        let (_, mut l) = listener_select(b, &["/x"]).await.unwrap();
        let mut request = Vec::new();
        l.read_to_end(&mut request).await.unwrap();
        (l, request)
    });
    let (mut listener, request) = (&mut listener).await;
    assert_eq!(request, b"request");
    // The listener's confirmation was written by `listener_select`: the close completes.
    let mut dialer = closing.await;
    assert!(dialer.is_complete());
    listener.write_all(b"response").await.unwrap();
    listener.close().await.unwrap();
    let mut response = Vec::new();
    dialer.read_to_end(&mut response).await.unwrap();
    assert_eq!(response, b"response");
    // Closing again is a no-op.
    dialer.close().await.unwrap();
}

#[test]
fn lazy_dialer_reads_data_following_confirmation() {
    let input = concat(&[&header(), &line("/x"), b"payload"]);
    let (_, mut n) = block_on(dialer_select(
        ScriptIo::new(&input),
        ["/x"],
        Version::V1Lazy,
    ))
    .unwrap();
    let mut out = Vec::new();
    block_on(n.read_to_end(&mut out)).unwrap();
    assert_eq!(out, b"payload");
    assert!(n.is_complete());
    let inner = n.into_inner().unwrap();
    assert_eq!(inner.pos, input.len());
}

#[test]
fn complete_and_into_inner() {
    let input = concat(&[&header(), &line("/x")]);
    let (_, n) = block_on(dialer_select(
        ScriptIo::new(&input),
        ["/x"],
        Version::V1Lazy,
    ))
    .unwrap();
    let mut n = match n.into_inner() {
        Ok(_) => panic!("into_inner must refuse an incomplete negotiation"),
        Err(n) => n,
    };
    block_on(n.complete()).unwrap();
    assert!(n.is_complete());
    block_on(n.complete()).unwrap();
    assert!(n.into_inner().is_ok());
}

#[test]
fn lazy_dialer_rejects_wrong_echo_and_garbage() {
    for reply in [
        concat(&[&header(), &line("/y")]),
        concat(&[&line("/x")]),     // missing header
        concat(&[&frame(NA_LINE)]), // na before header
        concat(&[&header(), &frame(b"ls\n")]),
    ] {
        let (_, mut n) = block_on(dialer_select(
            ScriptIo::new(&reply),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        let r = block_on(n.complete());
        assert!(matches!(r, Err(NegotiationError::InvalidMessage)), "{r:?}");
    }
    // Oversized frame while expecting the confirmation.
    let reply = concat(&[&header(), b"\x7f"]);
    let (_, mut n) = block_on(dialer_select(
        ScriptIo::new(&reply),
        ["/x"],
        Version::V1Lazy,
    ))
    .unwrap();
    assert!(matches!(
        block_on(n.complete()),
        Err(NegotiationError::MessageTooLarge { .. })
    ));
    // Listener hangs up.
    let (_, mut n) = block_on(dialer_select(
        ScriptIo::new(&header()),
        ["/x"],
        Version::V1Lazy,
    ))
    .unwrap();
    assert!(matches!(
        block_on(n.complete()),
        Err(NegotiationError::Failed)
    ));
}

// ---------------------------------------------------------------------
// Listener: leftover bytes, ls, limits, malformed input
// ---------------------------------------------------------------------

#[test]
fn listener_keeps_data_arriving_with_the_proposal() {
    let input = concat(&[
        &header(),
        &line("/ipfs/ping/1.0.0"),
        b"\x00\x01application bytes",
    ]);
    let (result, written) = run_listener(&input, &["/ipfs/ping/1.0.0"]);
    let (proto, mut n) = result.unwrap();
    assert_eq!(proto, "/ipfs/ping/1.0.0");
    assert_eq!(written, concat(&[&header(), &line("/ipfs/ping/1.0.0")]));
    let mut data = Vec::new();
    block_on(n.read_to_end(&mut data)).unwrap();
    assert_eq!(data, b"\x00\x01application bytes");
}

#[tokio::test]
async fn lazy_data_delivered_intact_through_pipe() {
    let (a, b) = duplex();
    let (_, mut dio) = dialer_select(a, ["/p/1"], Version::V1Lazy).await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    dio.write_all(&payload).await.unwrap();
    let (_, mut lio) = listener_select(b, &["/p/1"]).await.unwrap();
    let mut got = vec![0u8; payload.len()];
    lio.read_exact(&mut got).await.unwrap();
    assert_eq!(got, payload);
    lio.write_all(b"reply").await.unwrap();
    let mut reply = [0u8; 5];
    dio.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"reply");
}

#[test]
fn listener_answers_ls() {
    let input = concat(&[&header(), &frame(LS_LINE), &line("/b/2")]);
    let (result, written) = run_listener(&input, &["/a/1", "/b/2"]);
    assert_eq!(result.unwrap().0, "/b/2");
    // Exact bytes: header echo, ls reply, confirmation.
    let ls_reply: &[u8] = b"\x0d\x05/a/1\n\x05/b/2\n\n";
    assert_eq!(written, concat(&[&header(), ls_reply, &line("/b/2")]));
    // And the reply decodes the way rust-libp2p decodes it.
    assert_eq!(
        decode_protocol_list(&ls_reply[1..]).unwrap(),
        vec!["/a/1".to_owned(), "/b/2".to_owned()]
    );
}

#[test]
fn ls_reply_empty_and_truncated() {
    let mut out = Vec::new();
    encode_protocol_list(&mut out, &[], 1024);
    assert_eq!(out, b"\x01\n");
    assert_eq!(decode_protocol_list(b"\n").unwrap(), Vec::<String>::new());

    let names: Vec<String> = (0..100)
        .map(|i| format!("/protocol/number/{i:03}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    encode_protocol_list(&mut out, &refs, MIN_MESSAGE_LEN);
    let mut reader = FrameReader::new(MIN_MESSAGE_LEN);
    let mut src = futures::io::Cursor::new(out);
    let body = block_on(reader.read(&mut src)).unwrap().unwrap();
    assert!(body.len() <= MIN_MESSAGE_LEN);
    let listed = decode_protocol_list(body).unwrap();
    assert!(!listed.is_empty() && listed.len() < names.len());
    assert_eq!(listed[..], names[..listed.len()]);
}

#[test]
fn listener_rejection_limit() {
    let mut input = header();
    for i in 0..DEFAULT_MAX_REJECTIONS {
        input.extend(line(&format!("/unsupported/{i}")));
    }
    let mut accepted = input.clone();
    accepted.extend(line("/ok"));
    let (result, _) = run_listener(&accepted, &["/ok"]);
    assert_eq!(result.unwrap().0, "/ok");

    input.extend(line("/one/too/many"));
    let (result, written) = run_listener(&input, &["/ok"]);
    assert!(
        matches!(
            result,
            Err(NegotiationError::TooManyProposals {
                limit: DEFAULT_MAX_REJECTIONS
            })
        ),
        "{:?}",
        result.err()
    );
    let na_count = written.windows(4).filter(|w| *w == b"\x03na\n").count();
    assert_eq!(na_count, DEFAULT_MAX_REJECTIONS);

    // ls counts too; and the limit is configurable.
    let input = concat(&[&header(), &frame(LS_LINE), &frame(LS_LINE)]);
    let config = NegotiationConfig::new().with_max_rejections(1);
    let r = block_on(listener_select_with_config(
        ScriptIo::new(&input),
        &["/ok"],
        &config,
    ));
    assert!(matches!(
        r,
        Err(NegotiationError::TooManyProposals { limit: 1 })
    ));
}

#[test]
fn oversize_length_prefix_is_rejected_before_reading_the_body() {
    // Huge 10-byte varint: rejected after at most the bound's prefix
    // length, the stream stalls afterwards so any further read would hang.
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let input = concat(&[&header(), &huge]);
    let mut io = ScriptIo::stalling(&input);
    let r = listener_select(&mut io, &["/a"])
        .now_or_never()
        .expect("must not wait");
    assert!(
        matches!(
            r,
            Err(NegotiationError::MessageTooLarge {
                max: DEFAULT_MAX_MESSAGE_LEN
            })
        ),
        "{:?}",
        r.err()
    );
    assert!(io.pos <= header().len() + 2, "read {} bytes", io.pos);

    // Just above the bound: 1025 = 0x81 0x08.
    let input = concat(&[&header(), &[0x81, 0x08]]);
    let mut io = ScriptIo::stalling(&input);
    let r = listener_select(&mut io, &["/a"])
        .now_or_never()
        .expect("must not wait");
    assert!(matches!(r, Err(NegotiationError::MessageTooLarge { .. })));

    // Exactly at the bound is accepted as a frame (and then judged).
    let mut body = vec![b'/'; DEFAULT_MAX_MESSAGE_LEN - 1];
    body.push(b'\n');
    let input = concat(&[&header(), &frame(&body), &line("/a")]);
    let (r, written) = run_listener(&input, &["/a"]);
    assert_eq!(r.unwrap().0, "/a");
    assert!(
        written.windows(4).any(|w| w == b"\x03na\n"),
        "too-long name is refused with na"
    );

    // Configurable bound.
    let config = NegotiationConfig::new().with_max_message_len(200);
    let input = concat(&[&header(), &[0xc9, 0x01]]); // 201
    let r = block_on(listener_select_with_config(
        ScriptIo::new(&input),
        &["/a"],
        &config,
    ));
    assert!(matches!(
        r,
        Err(NegotiationError::MessageTooLarge { max: 200 })
    ));

    // The frame reader never allocates more than the bound.
    let mut reader = FrameReader::new(64);
    let mut src = ScriptIo::new(&[0x40, b'/']);
    let r = block_on(reader.read(&mut src));
    assert!(
        matches!(r, Err(NegotiationError::Io(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof)
    );
    assert!(reader.buffer_capacity() <= 64);
    let mut src = ScriptIo::new(&[0x41]);
    assert!(matches!(
        block_on(reader.read(&mut src)),
        Err(NegotiationError::MessageTooLarge { max: 64 })
    ));
}

#[test]
fn config_clamps() {
    assert_eq!(
        NegotiationConfig::new()
            .with_max_message_len(0)
            .max_message_len(),
        MIN_MESSAGE_LEN
    );
    assert_eq!(
        NegotiationConfig::new()
            .with_max_message_len(usize::MAX)
            .max_message_len(),
        MAX_FRAME_LEN
    );
    assert_eq!(
        NegotiationConfig::default().max_message_len(),
        DEFAULT_MAX_MESSAGE_LEN
    );
    assert_eq!(
        NegotiationConfig::default().max_rejections(),
        DEFAULT_MAX_REJECTIONS
    );
}

#[test]
fn truncated_input() {
    let cases: Vec<Vec<u8>> = vec![
        header()[..5].to_vec(),
        vec![0x13],
        concat(&[&header(), &line("/a")[..2]]),
        concat(&[&header(), &[0x81]]),
    ];
    for input in cases {
        let (r, _) = run_listener(&input, &["/a"]);
        assert!(
            matches!(r, Err(NegotiationError::Io(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{input:?}: {:?}",
            r.err()
        );
    }
    // Clean end of stream between messages: the dialer gave up.
    for input in [Vec::new(), header()] {
        let (r, _) = run_listener(&input, &["/a"]);
        assert!(matches!(r, Err(NegotiationError::Failed)));
    }
    // Dialer side.
    let r = block_on(dialer_select(
        ScriptIo::new(&header()[..4]),
        ["/a"],
        Version::V1,
    ));
    assert!(
        matches!(r, Err(NegotiationError::Io(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof)
    );
    let r = block_on(dialer_select(ScriptIo::new(&header()), ["/a"], Version::V1));
    assert!(matches!(r, Err(NegotiationError::Failed)));
    let r = block_on(dialer_select(ScriptIo::new(b""), ["/a"], Version::V1));
    assert!(matches!(r, Err(NegotiationError::Failed)));
}

#[test]
fn malformed_listener_input() {
    let invalid_utf8 = concat(&[&header(), &frame(b"/\xff\xfe\n")]);
    let (r, _) = run_listener(&invalid_utf8, &["/a"]);
    assert!(
        matches!(
            r,
            Err(NegotiationError::InvalidProtocolName(
                ProtocolNameError::InvalidUtf8
            ))
        ),
        "{:?}",
        r.err()
    );

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing newline", concat(&[&header(), &frame(b"/a")])),
        ("bad header", line("/multistream/2.0.0")),
        ("header without newline", frame(b"/multistream/1.0.0")),
        ("other first message", line("/a")),
        ("zero length", concat(&[&header(), &[0x00]])),
        ("non-minimal varint", concat(&[&header(), &[0x83, 0x00]])),
        ("repeated header", concat(&[&header(), &header()])),
        ("na from dialer", concat(&[&header(), &frame(NA_LINE)])),
        (
            "embedded newline",
            concat(&[&header(), &frame(b"/a\n/b\n")]),
        ),
        ("no slash", concat(&[&header(), &line("a")])),
    ];
    for (what, input) in cases {
        let (r, _) = run_listener(&input, &["/a"]);
        assert!(
            matches!(r, Err(NegotiationError::InvalidMessage)),
            "{what}: {:?}",
            r.err()
        );
    }
}

#[test]
fn listener_garbage_after_rejection_is_failure() {
    for garbage in [
        b"\x05hello".to_vec(),
        b"\xff\xff\xff".to_vec(),
        frame(b"/\xff\n"),
        b"\x09trunc".to_vec(),
    ] {
        let input = concat(&[&header(), &line("/nope"), &garbage]);
        let (r, _) = run_listener(&input, &["/a"]);
        assert!(
            matches!(r, Err(NegotiationError::Failed)),
            "{garbage:?}: {:?}",
            r.err()
        );
    }
}

#[test]
fn listener_skips_invalid_supported_names() {
    let input = concat(&[&header(), &line("/ok"), b"rest"]);
    let (r, _) = run_listener(&input, &["", "no-slash", "/multistream/1.0.0", "/ok"]);
    assert_eq!(r.unwrap().0, "/ok");
    // An invalid supported name is never matched, even if proposed.
    let input = concat(&[&header(), &frame(HEADER_LINE)]);
    let (r, _) = run_listener(&input, &["/multistream/1.0.0"]);
    assert!(matches!(r, Err(NegotiationError::InvalidMessage)));
}

#[test]
fn malformed_dialer_input() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad header",
            concat(&[&line("/multistream/2.0.0"), &line("/a")]),
        ),
        ("wrong echo", concat(&[&header(), &line("/b")])),
        ("ls reply", concat(&[&header(), &frame(b"\x03/a\n\n")])),
        (
            "double header",
            concat(&[&header(), &header(), &line("/a")]),
        ),
        ("missing newline", concat(&[&header(), &frame(b"/a")])),
        ("zero length", concat(&[&header(), &[0x00]])),
    ];
    for (what, input) in cases {
        let r = block_on(dialer_select(ScriptIo::new(&input), ["/a"], Version::V1));
        assert!(
            matches!(r, Err(NegotiationError::InvalidMessage)),
            "{what}: {:?}",
            r.err()
        );
    }
    let r = block_on(dialer_select(
        ScriptIo::new(&concat(&[&header(), &[0x7f]])),
        ["/a"],
        Version::V1,
    ));
    assert!(matches!(r, Err(NegotiationError::MessageTooLarge { .. })));
}

#[test]
fn dialer_validates_local_names() {
    let mut io = ScriptIo::new(b"");
    let r = block_on(dialer_select(&mut io, ["/ok", "bad"], Version::V1));
    assert!(matches!(
        r,
        Err(NegotiationError::InvalidProtocolName(
            ProtocolNameError::MissingLeadingSlash
        ))
    ));
    assert!(
        io.written.is_empty(),
        "nothing is written for invalid input"
    );
    let r = block_on(dialer_select(&mut io, Vec::<String>::new(), Version::V1));
    assert!(matches!(r, Err(NegotiationError::Failed)));
    assert!(io.written.is_empty());
}

#[test]
fn protocol_name_validation() {
    assert!(ProtocolName::new("/ipfs/ping/1.0.0").is_ok());
    assert_eq!(ProtocolName::new(""), Err(ProtocolNameError::Empty));
    assert_eq!(
        ProtocolName::new("ipfs"),
        Err(ProtocolNameError::MissingLeadingSlash)
    );
    assert_eq!(
        ProtocolName::new("/a\nb"),
        Err(ProtocolNameError::ContainsNewline)
    );
    assert_eq!(
        ProtocolName::new(MULTISTREAM_PROTOCOL),
        Err(ProtocolNameError::Reserved)
    );
    let max = format!("/{}", "x".repeat(MAX_PROTOCOL_NAME_LEN - 1));
    assert!(ProtocolName::new(&max).is_ok());
    let long = format!("{max}x");
    assert_eq!(
        ProtocolName::new(&long),
        Err(ProtocolNameError::TooLong {
            len: MAX_PROTOCOL_NAME_LEN + 1,
            max: MAX_PROTOCOL_NAME_LEN
        })
    );
    let p: ProtocolName = "/a".parse().unwrap();
    assert_eq!(p, "/a");
    assert_eq!(p.to_string(), "/a");
    assert_eq!(
        ProtocolName::try_from(String::from("/b"))
            .unwrap()
            .into_string(),
        "/b"
    );
    assert!(ProtocolName::try_from("nope").is_err());
}

#[test]
fn error_into_io_error() {
    let e: io::Error = NegotiationError::Failed.into();
    assert!(matches!(
        negotiation_error(&e),
        Some(NegotiationError::Failed)
    ));
    let e: io::Error = NegotiationError::InvalidMessage.into();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let e: io::Error = NegotiationError::Timeout.into();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    let e: io::Error = NegotiationError::Io(io::ErrorKind::BrokenPipe.into()).into();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    assert!(negotiation_error(&e).is_none());
}

#[tokio::test]
async fn timeout_with_runtime_timer() {
    let (_a, b) = duplex(); // the dialer never says anything
    let r = with_timeout(
        listener_select(b, &["/a"]),
        tokio::time::sleep(std::time::Duration::from_millis(20)),
    )
    .await;
    assert!(matches!(r, Err(NegotiationError::Timeout)));

    let (a, b) = duplex();
    let (d, l) = tokio::join!(
        with_timeout(
            dialer_select(a, ["/a"], Version::V1),
            tokio::time::sleep(std::time::Duration::from_secs(10))
        ),
        listener_select(b, &["/a"]),
    );
    assert_eq!(d.unwrap().0, "/a");
    assert_eq!(l.unwrap().0, "/a");
}

#[test]
fn negotiated_debug() {
    let n = Negotiated::completed(futures::io::Cursor::new(Vec::<u8>::new()));
    assert!(format!("{n:?}").contains("completed"));
}

// ---------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------

/// Random input, sometimes starting with a valid header and a message or
/// two so that deeper states are reached.
fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(Vec::new()),
        Just(header()),
        Just(concat(&[&header(), &line("/nope")])),
        Just(concat(&[&header(), &frame(LS_LINE)])),
    ];
    (prefix, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(mut prefix, tail)| {
        prefix.extend(tail);
        prefix
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn listener_never_panics(input in hostile_input(), chunk in 1usize..8) {
        let mut io = ScriptIo::new(&input);
        io.chunk = chunk;
        let result = block_on(listener_select(&mut io, &["/a", "/nope2"]));
        if let Ok((name, _)) = result {
            prop_assert!(name == "/a" || name == "/nope2");
        }
        prop_assert!(io.pos <= input.len());
    }

    #[test]
    fn dialer_never_panics(input in hostile_input(), chunk in 1usize..8, lazy in any::<bool>(), two in any::<bool>()) {
        let mut io = ScriptIo::new(&input);
        io.chunk = chunk;
        let version = if lazy { Version::V1Lazy } else { Version::V1 };
        let protocols: &[&str] = if two { &["/nope", "/a"] } else { &["/a"] };
        if let Ok((name, mut negotiated)) = block_on(dialer_select(&mut io, protocols, version)) {
            prop_assert!(protocols.contains(&name.as_str()));
            let mut rest = Vec::new();
            // Drives any lazy confirmation, then drains the stream.
            let _ = block_on(negotiated.read_to_end(&mut rest));
            let _ = block_on(negotiated.complete());
        }
    }

    #[test]
    fn fragmented_sessions_succeed(
        // Must hold the listener's negotiation replies, which a lazy
        // dialer busy writing its data does not read yet (real transports
        // have far larger windows).
        capacity in 64usize..128,
        chunk in 1usize..8,
        lazy in any::<bool>(),
        rejected in 0usize..4,
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let version = if lazy { Version::V1Lazy } else { Version::V1 };
        let mut proposals: Vec<String> = (0..rejected).map(|i| format!("/unsupported/{i}")).collect();
        proposals.push("/wanted/1.0.0".into());
        let (a, b) = pipe(capacity, chunk);
        let data2 = data.clone();
        let dialer = async move {
            let (p, mut io) = dialer_select(a, &proposals, version).await?;
            io.write_all(&data2).await?;
            io.close().await?;
            let mut back = Vec::new();
            io.read_to_end(&mut back).await?;
            Ok::<_, NegotiationError>((p, back))
        };
        let listener = async move {
            let (p, mut io) = listener_select(b, &["/other", "/wanted/1.0.0"]).await?;
            let mut got = Vec::new();
            io.read_to_end(&mut got).await?;
            io.write_all(&got).await?;
            io.close().await?;
            Ok::<_, NegotiationError>((p, got))
        };
        let (d, l) = block_on(async { futures::join!(dialer, listener) });
        let (dp, back) = d.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (lp, got) = l.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(dp, "/wanted/1.0.0");
        prop_assert_eq!(lp, "/wanted/1.0.0");
        prop_assert_eq!(&got, &data);
        prop_assert_eq!(&back, &data);
    }

    #[test]
    fn varint_roundtrip(len in 1usize..=MAX_FRAME_LEN) {
        let mut body = vec![b'x'; len];
        if let Some(last) = body.last_mut() { *last = b'\n'; }
        let encoded = frame(&body);
        let mut reader = FrameReader::new(MAX_FRAME_LEN);
        let mut src = futures::io::Cursor::new(encoded);
        let got = block_on(reader.read(&mut src)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, Some(&body[..]));
    }
}

// ---------------------------------------------------------------------
// When the listener's answers are written
// ---------------------------------------------------------------------

const DEFERRED: NegotiationConfig = NegotiationConfig::new().with_deferred_send(true);

/// A listener over a stalling script (the dialer sent `input` and waits), recording what it
/// writes.
fn recording(input: &[u8]) -> (Recorder, Arc<Mutex<Vec<u8>>>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        inner: ScriptIo::stalling(input),
        out: out.clone(),
    };
    (recorder, out)
}

fn recorded(out: &Mutex<Vec<u8>>) -> Vec<u8> {
    lock_vec(out).clone()
}

fn lock_vec(out: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn header_echo_is_written_when_the_proposal_has_not_arrived() {
    // A dialer that sends the header alone and waits for ours gets it.
    let (io, out) = recording(&header());
    let mut listening = Box::pin(listener_select(io, &["/x"]));
    assert!((&mut listening).now_or_never().is_none());
    assert_eq!(recorded(&out), header());
}

#[test]
fn header_echo_and_confirmation_leave_together() {
    let (io, out) = recording(&concat(&[&header(), &line("/x")]));
    let (name, n) = block_on(listener_select(io, &["/x"])).unwrap();
    assert_eq!(name, "/x");
    assert!(!n.has_unsent());
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x")]));
}

#[test]
fn deferred_confirmation_is_written_by_the_first_write_ahead_of_it() {
    let (io, out) = recording(&concat(&[&header(), &line("/x"), b"req"]));
    let (name, n) = block_on(listener_select_with_config(io, &["/x"], &DEFERRED)).unwrap();
    assert_eq!(name, "/x");
    assert!(n.has_unsent());
    assert!(
        recorded(&out).is_empty(),
        "nothing written before the first use"
    );
    let n = match n.into_inner() {
        Ok(_) => panic!("into_inner must refuse a stream with unsent answers"),
        Err(n) => n,
    };
    let mut n = n;
    block_on(n.write_all(b"resp")).unwrap();
    assert!(!n.has_unsent());
    assert_eq!(
        recorded(&out),
        concat(&[&header(), &line("/x"), b"resp"]),
        "the answers precede the data, once"
    );
    block_on(n.write_all(b"!")).unwrap();
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x"), b"resp!"]));
    assert!(n.into_inner().is_ok());
}

#[test]
fn deferred_confirmation_is_written_by_the_first_read() {
    // With data waiting, the read returns it and the answers are on their way.
    let (io, out) = recording(&concat(&[&header(), &line("/x"), b"req"]));
    let (_, mut n) = block_on(listener_select_with_config(io, &["/x"], &DEFERRED)).unwrap();
    let mut buf = [0u8; 3];
    block_on(n.read_exact(&mut buf)).unwrap();
    assert_eq!(&buf, b"req");
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x")]));
    // A read that waits (a V1 dialer waiting for the confirmation) has written them too.
    let (io, out) = recording(&concat(&[&header(), &line("/x")]));
    let (_, mut n) = block_on(listener_select_with_config(io, &["/x"], &DEFERRED)).unwrap();
    let mut buf = [0u8; 1];
    assert!(n.read(&mut buf).now_or_never().is_none());
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x")]));
    assert!(!n.has_unsent());
}

#[test]
fn deferred_confirmation_is_written_by_close_and_try_send_unsent() {
    let (io, out) = recording(&concat(&[&header(), &line("/x")]));
    let (_, mut n) = block_on(listener_select_with_config(io, &["/x"], &DEFERRED)).unwrap();
    block_on(n.close()).unwrap();
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x")]));

    let (io, out) = recording(&concat(&[&header(), &line("/x")]));
    let (_, mut n) = block_on(listener_select_with_config(io, &["/x"], &DEFERRED)).unwrap();
    assert!(n.try_send_unsent());
    assert!(!n.has_unsent());
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x")]));
    // Nothing is written twice.
    assert!(n.try_send_unsent());
    block_on(n.flush()).unwrap();
    assert_eq!(recorded(&out), concat(&[&header(), &line("/x")]));
}

#[test]
fn refusals_reach_the_dialer_before_the_listener_gives_up() {
    // A lazy dialer's proposal is refused and its data then fails the negotiation: the
    // header echo and the `na` are still written, as when each left at once.
    let input = concat(&[&header(), &line("/y"), b"\x05hello"]);
    let (io, out) = recording(&input);
    let result = block_on(listener_select_with_config(io, &["/x"], &DEFERRED));
    assert!(
        matches!(result, Err(NegotiationError::Failed)),
        "{:?}",
        result.as_ref().err()
    );
    assert_eq!(recorded(&out), concat(&[&header(), &frame(NA_LINE)]));
}

#[tokio::test]
async fn deferred_confirmation_serves_v1_and_lazy_dialers() {
    for version in [Version::V1, Version::V1Lazy] {
        for (capacity, chunk) in [(64 * 1024, usize::MAX), (64, 1)] {
            for protocols in [&["/ipfs/id/1.0.0", "/x"][..], &["/x"][..]] {
                let (a, b) = pipe(capacity, chunk);
                // The listener reads first: a V1 dialer (or one whose first proposal is
                // refused) waits for the confirmation before it writes, so the waiting read
                // must write it.
                let (mut dialer, mut listener) = tokio::join!(
                    async {
                        let (name, mut d) =
                            dialer_select_with_config(a, protocols, version, &DEFERRED)
                                .await
                                .unwrap();
                        assert_eq!(name, "/x");
                        d.write_all(b"from dialer").await.unwrap();
                        d.flush().await.unwrap();
                        d
                    },
                    async {
                        let (name, mut l) = listener_select_with_config(b, &["/x"], &DEFERRED)
                            .await
                            .unwrap();
                        assert_eq!(name, "/x");
                        let mut buf = [0u8; 11];
                        l.read_exact(&mut buf).await.unwrap();
                        assert_eq!(&buf, b"from dialer");
                        l
                    },
                );
                listener.write_all(b"from listener").await.unwrap();
                listener.close().await.unwrap();
                let mut back = Vec::new();
                dialer.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, b"from listener");
                assert!(dialer.is_complete());
            }
        }
    }
}
