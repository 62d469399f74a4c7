//! A lazily negotiated stream closed and dropped before the remote confirmed its protocol is
//! drained, not stopped: the remote may write its confirmation late (rust-libp2p's listener
//! writes it when it gets to the stream, and drops the stream unread if that write fails) and
//! must still read the message. The remote here is a raw QUIC peer playing rust-libp2p's
//! listener by hand, confirming only after the dialer's stream is gone. Also the drain's
//! bounds: bytes, and drains per connection.

mod common;

use std::time::Duration;

use common::{Node, T};
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_swarm::stream::{DRAIN_MAX_BYTES, MAX_DRAINS_PER_CONNECTION};
use meshwire_swarm::{OpenStream, StreamProtocol, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{
    identity::Keypair, with_peer_id, Connection, Multiaddr, Transport, TransportEvent, TransportExt,
};

const P: &str = "/late/1";

/// How long the raw listener waits after the dialer dropped its stream before it writes its
/// confirmation: long enough on loopback for a STOP_SENDING to have arrived.
const LATE: Duration = Duration::from_millis(300);

fn proto() -> StreamProtocol {
    StreamProtocol::new(P)
}

/// One multistream-select message: unsigned-varint length, then the line (all ours < 128 B).
fn frame(line: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(line.len() + 1).expect("short line")];
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out
}

/// What rust-libp2p's listener writes to accept `P`: its header, then the echo.
fn confirmation() -> Vec<u8> {
    let mut out = frame("/multistream/1.0.0");
    out.extend(frame(P));
    out
}

/// What the dialer's stream carries: header, proposal, then `message`.
fn expected(message: &[u8]) -> Vec<u8> {
    let mut out = confirmation();
    out.extend_from_slice(message);
    out
}

/// A raw QUIC peer (no swarm) the node dials; returns the node's connection as the raw peer
/// sees it, and the transport (kept alive by the caller).
async fn raw_peer(node: &mut Node) -> (Connection, QuicTransport) {
    let mut raw = QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("quic");
    raw.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let TransportEvent::NewListenAddr { addr, .. } = raw.next_event().await else {
        panic!("no listen address")
    };
    let raw_peer = raw.local_peer_id();
    let full: Multiaddr = with_peer_id(&addr, raw_peer);
    node.dial(full).await.expect("dial");
    let TransportEvent::Incoming { upgrade, .. } = raw.next_event().await else {
        panic!("no incoming connection")
    };
    let conn = upgrade.await.expect("handshake");
    node.wait_for(|e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == raw_peer => Some(()),
        _ => None,
    })
    .await;
    (conn, raw)
}

/// Opens a stream to `peer` on `node`, writes `message`, closes it when `close`, and drops
/// it; returns once it is dropped.
async fn write_and_drop(node: &mut Node, req: OpenStream, message: &[u8], close: bool) {
    node.open(req);
    let mut stream = node
        .next_outbound()
        .await
        .result
        .expect("outbound stream")
        .stream;
    stream.write_all(message).await.expect("write");
    if close {
        tokio::time::timeout(T, stream.close())
            .await
            .expect("close hung")
            .expect("close");
    } else {
        stream.flush().await.expect("flush");
    }
    drop(stream);
}

/// The raw listener's side of one stream, rust-libp2p's way but late: accepts it, waits
/// [`LATE`], writes header and confirmation (a failed write is what makes rust-libp2p drop
/// the stream unread), then reads everything to the end.
async fn confirm_late_and_read(conn: &Connection) -> Result<Vec<u8>, String> {
    let mut s = tokio::time::timeout(T, conn.accept_stream())
        .await
        .map_err(|_| "no stream".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(LATE).await;
    s.write_all(&confirmation())
        .await
        .map_err(|e| format!("confirmation write failed: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("confirmation flush failed: {e}"))?;
    let mut got = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut got))
        .await
        .map_err(|_| "read timed out".to_owned())?
        .map_err(|e| format!("read failed: {e}"))?;
    let _ = s.close().await;
    Ok(got)
}

/// A stream opened as `open` makes, written with `message`, closed (or not) and dropped;
/// the listener confirms [`LATE`] and must still read the whole message.
async fn late_listener_reads(
    open: impl FnOnce(meshwire_core::PeerId) -> OpenStream,
    message: &[u8],
    close: bool,
) {
    let mut node = Node::start(&[], SwarmConfig::default()).await;
    let (conn, raw) = raw_peer(&mut node).await;
    write_and_drop(&mut node, open(raw.local_peer_id()), message, close).await;
    let got = confirm_late_and_read(&conn).await.expect("late listener");
    assert_eq!(got, expected(message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirmation_still_gets_through_after_an_optimistic_close_and_drop() {
    late_listener_reads(
        |peer| OpenStream::new(peer, proto()).optimistic(),
        b"one-way message",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirmation_still_gets_through_after_a_default_open_closed_and_dropped() {
    // Not optimistic: the proposal was flushed at the open; the close still does not wait.
    late_listener_reads(|peer| OpenStream::new(peer, proto()), b"pushed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_unclosed_before_the_confirmation_is_ended_and_drained() {
    late_listener_reads(
        |peer| OpenStream::new(peer, proto()).optimistic(),
        b"dropped without close",
        false,
    )
    .await;
}

/// A node that opened an optimistic stream to a raw listener, wrote one byte, closed and
/// dropped it; the listener's side of that stream, not yet confirmed (the node and the
/// connection are returned to be kept alive).
async fn stream_dropped_by_the_dialer() -> (Node, Connection, meshwire_transport::Stream) {
    let mut node = Node::start(&[], SwarmConfig::default()).await;
    let (conn, raw) = raw_peer(&mut node).await;
    write_and_drop(
        &mut node,
        OpenStream::new(raw.local_peer_id(), proto()).optimistic(),
        b"m",
        true,
    )
    .await;
    let s = conn.accept_stream().await.expect("stream");
    (node, conn, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_stops_a_remote_that_sends_past_its_byte_bound() {
    let (_node, _conn, mut s) = stream_dropped_by_the_dialer().await;
    tokio::time::sleep(LATE).await;
    // A hostile listener: confirms, then sends without end. The drain reads its bound and
    // stops the stream: a write fails within a few windows' worth past the bound.
    s.write_all(&confirmation()).await.expect("confirmation");
    let chunk = vec![7u8; 4096];
    let mut sent = 0usize;
    let failed = tokio::time::timeout(T, async {
        loop {
            if s.write_all(&chunk).await.is_err() {
                return true;
            }
            sent += chunk.len();
            if sent > 64 * DRAIN_MAX_BYTES {
                return false;
            }
        }
    })
    .await
    .expect("writes neither failed nor got past the bound in time");
    assert!(failed, "the drain read {sent} bytes without stopping");
    assert!(
        sent >= DRAIN_MAX_BYTES,
        "stopped after {sent} bytes, before the drain's bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_per_connection_are_bounded_past_it_a_stream_is_stopped_as_before() {
    let mut node = Node::start(&[], SwarmConfig::default()).await;
    let (conn, raw) = raw_peer(&mut node).await;
    let peer = raw.local_peer_id();
    let n = MAX_DRAINS_PER_CONNECTION + 1;
    for i in 0..n {
        let msg = format!("message {i}");
        write_and_drop(
            &mut node,
            OpenStream::new(peer, proto()).optimistic(),
            msg.as_bytes(),
            true,
        )
        .await;
    }
    // All drains wait for this listener, which has not answered any stream yet.
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(
            tokio::time::timeout(T, conn.accept_stream())
                .await
                .expect("stream")
                .expect("stream"),
        );
    }
    tokio::time::sleep(LATE).await;
    let mut ok = 0;
    let mut stopped = 0;
    for s in &mut streams {
        match s.write_all(&confirmation()).await {
            Ok(()) => ok += 1,
            Err(_) => stopped += 1,
        }
    }
    assert_eq!(
        (ok, stopped),
        (MAX_DRAINS_PER_CONNECTION, 1),
        "one stream past the bound is stopped, the others drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_stops_a_remote_that_never_ends_its_side_after_its_time_bound() {
    use meshwire_swarm::stream::DRAIN_TIMEOUT;
    let (_node, _conn, mut s) = stream_dropped_by_the_dialer().await;
    // Confirms but never finishes: the drain still runs a while later...
    s.write_all(&confirmation()).await.expect("confirmation");
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.write_all(b"still there")
        .await
        .expect("the drain stopped early");
    // ...and stops the stream once its time is up.
    tokio::time::sleep(DRAIN_TIMEOUT).await;
    let stopped = tokio::time::timeout(T, async {
        loop {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the drain outlived its time bound");
}
