//! Optimistic opens (`OpenStream`'s default with one protocol, `OpenStream::optimistic`) and
//! the acceptor's deferred confirmation, on real QUIC loopback: an optimistic stream reaches
//! the remote only with its first write, an eager one (`OpenStream::eager`) at once;
//! accepted, data flows both ways; refused (protocol or limit), its first read fails promptly
//! with a typed error. The acceptor leaves its confirmation to the answer only when the
//! dialer's request came with the proposal; a dialer that waits for it gets it at once.

mod common;

use std::time::{Duration, Instant};

use common::{Node, T};
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_swarm::{OpenStream, Stream, StreamError, StreamProtocol, SwarmConfig, SwarmEvent};

const P: &str = "/optimistic/1";

fn proto() -> StreamProtocol {
    StreamProtocol::new(P)
}

async fn pair(config: SwarmConfig) -> (Node, Node) {
    let mut a = Node::start(&[P], SwarmConfig::default()).await;
    let mut b = Node::start(&[P], config).await;
    a.connect(&mut b).await;
    (a, b)
}

/// Opens a stream from `a` to `b` with `req` and returns it (the open must succeed).
async fn open(a: &mut Node, req: OpenStream) -> Stream {
    a.open(req);
    a.next_outbound()
        .await
        .result
        .expect("outbound stream")
        .stream
}

/// Whether `b` gets an inbound stream within `wait`.
async fn inbound_within(b: &mut Node, wait: Duration) -> bool {
    tokio::time::timeout(wait, b.inbound.recv()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_stream_reaches_the_remote_with_its_first_write_and_data_flows() {
    let (mut a, mut b) = pair(SwarmConfig::default()).await;
    // `OpenStream`'s default with one protocol: optimistic.
    let mut s = open(&mut a, OpenStream::new(b.peer, proto())).await;
    // Nothing was written: the remote knows of no stream yet.
    assert!(
        !inbound_within(&mut b, Duration::from_millis(300)).await,
        "an optimistic stream reached the remote before its first write"
    );

    // A request longer than the acceptor's read-ahead, read back in small pieces. The
    // dialer's close waits for the confirmation, which goes with the remote's first use: the
    // dialer runs in a task of its own, as a behaviour's exchange would.
    let request: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let sent = request.clone();
    let dialer = tokio::spawn(async move {
        s.write_all(&sent).await.unwrap();
        s.close().await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert!(s.confirm_protocol().await.is_ok());
        answer
    });
    let mut inbound = b.next_inbound().await;
    assert_eq!(inbound.protocol, proto());
    let mut got = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let n = tokio::time::timeout(T, inbound.stream.read(&mut piece))
            .await
            .expect("read timed out")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&piece[..n]);
    }
    assert_eq!(got, request);
    inbound.stream.write_all(b"answer").await.unwrap();
    inbound.stream.close().await.unwrap();

    let answer = tokio::time::timeout(T, dialer)
        .await
        .expect("answer timed out")
        .unwrap();
    assert_eq!(answer, b"answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_stream_refused_by_protocol_fails_its_first_read_with_a_typed_error() {
    let mut a = Node::start(&[P], SwarmConfig::default()).await;
    let mut b = Node::start(&["/something/else/1"], SwarmConfig::default()).await;
    a.connect(&mut b).await;
    let mut s = open(&mut a, OpenStream::new(b.peer, proto()).optimistic()).await;
    s.write_all(b"request").await.unwrap();
    // The close sends our end without waiting for the answer; the read reports the refusal.
    let closed = tokio::time::timeout(T, s.close())
        .await
        .expect("close hung");
    if let Err(e) = &closed {
        assert!(
            Stream::is_protocol_refused(e),
            "close failed otherwise: {e}"
        );
    }
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("the first read hung")
        .expect_err("a refused stream read data");
    assert!(Stream::is_protocol_refused(&err), "{err}");
    assert!(matches!(
        StreamError::from_io(err),
        StreamError::UnsupportedProtocols
    ));
    // The remote reported the stream it refused, and gave it to no behaviour.
    b.wait_for(|e| match e {
        SwarmEvent::InboundStreamError { error, .. } => Some(error.to_string()),
        _ => None,
    })
    .await;
    assert!(b.inbound.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_stream_past_the_inbound_limit_is_refused_promptly() {
    let config = SwarmConfig {
        max_inbound_streams_per_connection: 1,
        ..SwarmConfig::default()
    };
    let (mut a, mut b) = pair(config).await;
    // The one inbound stream the remote allows, held open.
    let mut first = open(&mut a, OpenStream::new(b.peer, proto()).optimistic()).await;
    first.write_all(b"hold").await.unwrap();
    let _held = b.next_inbound().await;

    let mut s = open(&mut a, OpenStream::new(b.peer, proto()).optimistic()).await;
    let started = Instant::now();
    // The write may already fail (the remote stopped the stream), or the read does.
    let _ = s.write_all(b"request").await;
    let _ = tokio::time::timeout(T, s.close()).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("the refused stream's read hung");
    assert!(
        !matches!(read, Ok(n) if n > 0),
        "a stream past the limit read data"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    b.wait_for(|e| match e {
        SwarmEvent::InboundStreamError {
            error: StreamError::TooManyStreams { limit: 1 },
            ..
        } => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_leaves_its_confirmation_to_the_answer_of_an_optimistic_dialer() {
    let (mut a, mut b) = pair(SwarmConfig::default()).await;
    let mut s = open(&mut a, OpenStream::new(b.peer, proto()).optimistic()).await;
    s.write_all(b"request").await.unwrap();
    s.flush().await.unwrap();
    let mut inbound = b.next_inbound().await;
    // The remote's behaviour holds the stream unused: its confirmation is not written yet
    // (it will travel with the answer), so the dialer's wait for it does not end.
    let early = tokio::time::timeout(Duration::from_millis(300), s.confirm_protocol()).await;
    assert!(
        early.is_err(),
        "the confirmation left before the answer: {early:?}"
    );
    // The first use writes it, ahead of the answer; the request read ahead comes first.
    let mut req = [0u8; 7];
    inbound.stream.read_exact(&mut req).await.unwrap();
    assert_eq!(&req, b"request");
    inbound.stream.write_all(b"answer").await.unwrap();
    inbound.stream.close().await.unwrap();
    tokio::time::timeout(T, s.confirm_protocol())
        .await
        .expect("confirmation never came")
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(T, async {
        s.close().await.unwrap();
        s.read_to_end(&mut answer).await.unwrap();
    })
    .await
    .expect("answer timed out");
    assert_eq!(answer, b"answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_confirms_at_once_to_a_dialer_that_sent_nothing_yet() {
    let (mut a, mut b) = pair(SwarmConfig::default()).await;
    // Eager: the proposal is flushed alone, and the dialer may wait for the answer.
    let mut s = open(&mut a, OpenStream::new(b.peer, proto()).eager()).await;
    let _held = b.next_inbound().await;
    // The remote's behaviour holds the stream unused; the confirmation came anyway.
    tokio::time::timeout(Duration::from_secs(2), s.confirm_protocol())
        .await
        .expect("a waiting dialer got no confirmation while the stream was held")
        .unwrap();

    // A confirmed open (waits for the confirmation before it is handed over) too.
    a.open(OpenStream::new(b.peer, proto()).confirmed());
    let result = a.next_outbound().await;
    assert!(result.result.is_ok(), "{:?}", result.result.err());
    let _held_too = b.next_inbound().await;
}
