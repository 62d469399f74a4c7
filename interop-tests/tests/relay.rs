//! Circuit relay v2 on the wire between meshwire's relay code and rust-libp2p 0.57
//! (`libp2p-relay` 0.22), over loopback QUIC:
//!
//! - `relay_wire_meshwire_codecs_against_rust_libp2p_relay`: a rust-libp2p relay server;
//!   meshwire's codecs on raw hop and stop streams (opened with `libp2p-stream`) reserve, are
//!   refused a circuit to a peer without reservation, and open a circuit that carries bytes.
//! - `relay_wire_rust_libp2p_clients_through_meshwire_relay`: a relay made of meshwire's
//!   codecs, `RelayServerEngine`, vouchers and `circuit::bridge` (on raw `libp2p-stream`
//!   streams); two rust-libp2p relay clients reserve through it and connect to each other
//!   over it (TLS and yamux over the circuit), then ping.

use std::collections::HashMap;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair as LpKeypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{ping, relay, Multiaddr, StreamProtocol, Swarm, SwarmBuilder};
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_relay::circuit::{bridge, CircuitEnd, Reset, DEFAULT_BUFFER_SIZE};
use meshwire_relay::protocol::io::{
    read_hop_request, read_hop_response, read_stop_request, read_stop_response, write_hop_request,
    write_hop_response, write_stop_request, write_stop_response,
};
use meshwire_relay::protocol::{
    HopRequest, HopResponse, Limit, ReservationInfo, Status, StopRequest, StopResponse,
    HOP_PROTOCOL, STOP_PROTOCOL,
};
use meshwire_relay::server::ServerConfig;
use meshwire_relay::voucher::Voucher;
use meshwire_relay::RelayServerEngine;
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const HOP: StreamProtocol = StreamProtocol::new(HOP_PROTOCOL);
const STOP: StreamProtocol = StreamProtocol::new(STOP_PROTOCOL);

fn mw_peer(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).expect("peer id bytes")
}

fn lp_peer(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(p.as_bytes()).expect("peer id bytes")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Listens on loopback QUIC and waits for the address.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Drives `swarm` in a task that forwards its events and takes addresses to reach: one
/// ending in `/p2p-circuit` is listened on (a reservation), any other dialed.
fn drive<B>(
    mut swarm: Swarm<B>,
) -> (
    mpsc::UnboundedSender<Multiaddr>,
    mpsc::UnboundedReceiver<SwarmEvent<B::ToSwarm>>,
    tokio::task::JoinHandle<()>,
)
where
    B: NetworkBehaviour + Send,
    B::ToSwarm: Send + Debug,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Multiaddr>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => { let _ = tx.send(ev); }
                Some(addr) = cmd_rx.recv() => {
                    if addr.iter().last() == Some(Protocol::P2pCircuit) {
                        swarm.listen_on(addr).expect("listen through the relay");
                    } else {
                        swarm.dial(addr).expect("dial");
                    }
                }
            }
        }
    });
    (cmd_tx, rx, task)
}

/// A rust-libp2p node with `libp2p-stream` only.
fn stream_node(key: LpKeypair) -> Swarm<libp2p_stream::Behaviour> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Waits for an event that `pick` maps to `Some`.
async fn wait_for<E: Debug, T>(
    rx: &mut mpsc::UnboundedReceiver<SwarmEvent<E>>,
    mut pick: impl FnMut(&SwarmEvent<E>) -> Option<T>,
) -> T {
    loop {
        let ev = rx.recv().await.expect("node running");
        if let Some(t) = pick(&ev) {
            return t;
        }
    }
}

async fn connected_to<E: Debug>(
    rx: &mut mpsc::UnboundedReceiver<SwarmEvent<E>>,
    peer: libp2p::PeerId,
) {
    wait_for(rx, |ev| match ev {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == peer => Some(()),
        _ => None,
    })
    .await
}

#[derive(NetworkBehaviour)]
struct RelayServer {
    relay: relay::Behaviour,
}

#[tokio::test]
async fn relay_wire_meshwire_codecs_against_rust_libp2p_relay() {
    tokio::time::timeout(TEST_TIMEOUT, codecs_against_rust_relay())
        .await
        .expect("test timed out");
}

async fn codecs_against_rust_relay() {
    // R: rust-libp2p's relay server, with defaults; an external address enables it.
    let mut r = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| RelayServer {
            relay: relay::Behaviour::new(key.public().to_peer_id(), relay::Config::default()),
        })
        .expect("behaviour")
        .build();
    let r_id = *r.local_peer_id();
    let r_addr = listen(&mut r).await;
    r.add_external_address(r_addr.clone());
    let (_r_cmd, mut r_events, r_task) = drive(r);
    let r_full = r_addr.clone().with(Protocol::P2p(r_id));

    // A (destination) and C (source): raw streams, meshwire codecs.
    let a_key = LpKeypair::generate_ed25519();
    let a_id = a_key.public().to_peer_id();
    let mut a = stream_node(a_key);
    let mut a_control = a.behaviour().new_control();
    let mut a_stops = a_control.accept(STOP).expect("accept stop");
    listen(&mut a).await;
    let (a_dial, mut a_events, a_task) = drive(a);
    let c_key = LpKeypair::generate_ed25519();
    let c_id = c_key.public().to_peer_id();
    let mut c = stream_node(c_key);
    let mut c_control = c.behaviour().new_control();
    listen(&mut c).await;
    let (c_dial, mut c_events, c_task) = drive(c);
    a_dial.send(r_full.clone()).unwrap();
    c_dial.send(r_full.clone()).unwrap();
    connected_to(&mut a_events, r_id).await;
    connected_to(&mut c_events, r_id).await;

    // A reserves.
    let mut hop = a_control.open_stream(r_id, HOP).await.expect("hop stream");
    write_hop_request(&mut hop, &HopRequest::Reserve)
        .await
        .unwrap();
    let answer = read_hop_response(&mut hop)
        .await
        .expect("reservation answer");
    assert_eq!(answer.status, Status::Ok);
    let reservation = answer.reservation.expect("reservation");
    let now = unix_now();
    assert!(
        (now + 3590..=now + 3610).contains(&reservation.expire),
        "expire {} at {now}",
        reservation.expire
    );
    let expected_addr: meshwire_transport::Multiaddr = r_full.to_string().parse().unwrap();
    assert_eq!(reservation.addrs, [expected_addr]);
    assert_eq!(reservation.voucher, None, "rust-libp2p sends no voucher");
    assert_eq!(
        answer.limit,
        Some(Limit {
            duration: Some(120),
            data: Some(1 << 17)
        })
    );
    assert_eq!(
        wait_for(&mut r_events, |ev| match ev {
            SwarmEvent::Behaviour(RelayServerEvent::Relay(
                relay::Event::ReservationReqAccepted {
                    src_peer_id,
                    renewed,
                },
            )) => Some((*src_peer_id, *renewed)),
            _ => None,
        })
        .await,
        (a_id, false)
    );

    // C asks for a peer without reservation.
    let stranger = Keypair::generate().peer_id();
    let mut hop = c_control.open_stream(r_id, HOP).await.expect("hop stream");
    write_hop_request(&mut hop, &HopRequest::Connect { dst: stranger })
        .await
        .unwrap();
    let answer = read_hop_response(&mut hop).await.expect("refusal");
    assert_eq!(answer, HopResponse::refused(Status::NoReservation));

    // C connects to A; A takes the stop stream.
    let mut hop = c_control.open_stream(r_id, HOP).await.expect("hop stream");
    write_hop_request(
        &mut hop,
        &HopRequest::Connect {
            dst: mw_peer(&a_id),
        },
    )
    .await
    .unwrap();
    let (from, mut stop) = a_stops.next().await.expect("stop stream");
    assert_eq!(from, r_id);
    let request = read_stop_request(&mut stop).await.expect("stop request");
    assert_eq!(
        request,
        StopRequest {
            src: mw_peer(&c_id),
            limit: Some(Limit {
                duration: Some(120),
                data: Some(1 << 17)
            })
        }
    );
    write_stop_response(&mut stop, &StopResponse { status: Status::Ok })
        .await
        .unwrap();
    let answer = read_hop_response(&mut hop).await.expect("connect answer");
    assert_eq!(answer.status, Status::Ok);
    assert_eq!(answer.reservation, None);

    // The streams are now the relayed connection, both ways.
    hop.write_all(b"hello through rust-libp2p").await.unwrap();
    hop.flush().await.unwrap();
    let mut got = [0u8; 25];
    stop.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello through rust-libp2p");
    stop.write_all(b"and back").await.unwrap();
    stop.flush().await.unwrap();
    let mut back = [0u8; 8];
    hop.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"and back");

    for task in [r_task, a_task, c_task] {
        task.abort();
    }
}

/// A `libp2p-stream` stream that [`bridge`] can reset: resetting drops it (rust-libp2p
/// streams have no reset; dropping is the closest).
struct Resettable(Option<libp2p::Stream>);

fn gone() -> std::io::Error {
    std::io::ErrorKind::NotConnected.into()
}

impl AsyncRead for Resettable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Resettable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_close(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl Reset for Resettable {
    fn reset(&mut self) {
        self.0 = None;
    }
}

/// The relay's state shared by its stream tasks.
struct MwRelay {
    key: Keypair,
    addr: meshwire_transport::Multiaddr,
    engine: Mutex<RelayServerEngine>,
    /// One connection id per peer (libp2p-stream does not tell connections apart).
    connections: Mutex<HashMap<PeerId, ConnectionId>>,
    ends: Mutex<Vec<CircuitEnd>>,
}

impl MwRelay {
    fn connection(&self, peer: PeerId) -> ConnectionId {
        *self
            .connections
            .lock()
            .unwrap()
            .entry(peer)
            .or_insert_with(ConnectionId::next)
    }
}

/// Serves one hop stream the way a meshwire relay does.
async fn serve_hop(
    relay: Arc<MwRelay>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut hop: libp2p::Stream,
) {
    let request = match read_hop_request(&mut hop).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(status) = e.status() {
                let _ = write_hop_response(&mut hop, &HopResponse::refused(status)).await;
            }
            return;
        }
    };
    let conn = relay.connection(peer);
    match request {
        HopRequest::Reserve => {
            let result =
                relay
                    .engine
                    .lock()
                    .unwrap()
                    .handle_reserve(Instant::now(), peer, conn, None);
            let response = match result {
                Ok(accepted) => HopResponse::reserved(
                    ReservationInfo {
                        expire: accepted.expire_unix,
                        addrs: vec![relay.addr.clone()],
                        voucher: Some(Voucher::sign(&relay.key, peer, accepted.expire_unix)),
                    },
                    relay.engine.lock().unwrap().circuit_limit(),
                ),
                Err(refusal) => HopResponse::refused(refusal.status()),
            };
            write_hop_response(&mut hop, &response).await.unwrap();
            let _ = hop.close().await;
        }
        HopRequest::Connect { dst } => {
            let admitted =
                relay
                    .engine
                    .lock()
                    .unwrap()
                    .handle_connect(Instant::now(), peer, conn, None, dst);
            let accepted = match admitted {
                Ok(a) => a,
                Err(refusal) => {
                    let _ =
                        write_hop_response(&mut hop, &HopResponse::refused(refusal.status())).await;
                    return;
                }
            };
            let limit = relay.engine.lock().unwrap().circuit_limit();
            let stop = async {
                let mut stop = control.open_stream(lp_peer(&dst), STOP).await.ok()?;
                write_stop_request(&mut stop, &StopRequest { src: peer, limit })
                    .await
                    .ok()?;
                let answer = read_stop_response(&mut stop).await.ok()?;
                Some((stop, answer.status))
            };
            let stop = match stop.await {
                Some((stop, Status::Ok)) => stop,
                other => {
                    let status = match other {
                        Some((_, status)) => status,
                        None => Status::ConnectionFailed,
                    };
                    let _ = write_hop_response(&mut hop, &HopResponse::refused(status)).await;
                    relay
                        .engine
                        .lock()
                        .unwrap()
                        .handle_circuit_closed(accepted.id, CircuitEnd::stop_refused(status));
                    return;
                }
            };
            write_hop_response(&mut hop, &HopResponse::connected(limit))
                .await
                .unwrap();
            let limits = {
                let mut engine = relay.engine.lock().unwrap();
                engine.handle_circuit_established(accepted.id);
                engine.circuit_limits()
            };
            let end = bridge(
                Resettable(Some(hop)),
                Resettable(Some(stop)),
                limits,
                DEFAULT_BUFFER_SIZE,
            )
            .await;
            relay
                .engine
                .lock()
                .unwrap()
                .handle_circuit_closed(accepted.id, end);
            relay.ends.lock().unwrap().push(end);
        }
    }
}

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    ping: ping::Behaviour,
}

fn client_node() -> Swarm<Client> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_relay_client(libp2p::tls::Config::new, libp2p::yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|_, relay| Client {
            relay,
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

#[tokio::test]
async fn relay_wire_rust_libp2p_clients_through_meshwire_relay() {
    tokio::time::timeout(TEST_TIMEOUT, rust_clients_through_meshwire_relay())
        .await
        .expect("test timed out");
}

async fn rust_clients_through_meshwire_relay() {
    // M: the relay, meshwire code on raw libp2p-stream streams, under one identity.
    let secret = [42u8; 32];
    let m_key = Keypair::from_secret_bytes(secret);
    let m_lp_key = LpKeypair::ed25519_from_bytes(secret).expect("ed25519 secret");
    let m_id = m_lp_key.public().to_peer_id();
    let mut m = stream_node(m_lp_key);
    let mut m_control = m.behaviour().new_control();
    let mut hops = m_control.accept(HOP).expect("accept hop");
    let m_addr = listen(&mut m).await;
    let (_m_cmd, _m_events, m_task) = drive(m);
    let m_full = m_addr.clone().with(Protocol::P2p(m_id));
    let relay = Arc::new(MwRelay {
        key: m_key,
        addr: m_full.to_string().parse().unwrap(),
        engine: Mutex::new(RelayServerEngine::new(ServerConfig::default()).expect("config")),
        connections: Mutex::new(HashMap::new()),
        ends: Mutex::new(Vec::new()),
    });
    let server = {
        let relay = relay.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = hops.next().await {
                tokio::spawn(serve_hop(
                    relay.clone(),
                    m_control.clone(),
                    mw_peer(&peer),
                    stream,
                ));
            }
        })
    };

    // A: a rust-libp2p relay client listening through M.
    let mut a = client_node();
    let a_id = *a.local_peer_id();
    listen(&mut a).await;
    let (a_cmd, mut a_events, a_task) = drive(a);
    a_cmd
        .send(m_full.clone().with(Protocol::P2pCircuit))
        .unwrap();
    let limit = wait_for(&mut a_events, |ev| match ev {
        SwarmEvent::Behaviour(ClientEvent::Relay(
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                limit,
            },
        )) if *relay_peer_id == m_id => Some((*renewal, *limit)),
        _ => None,
    })
    .await;
    assert!(!limit.0, "a new reservation");
    let limit = limit.1.expect("the relay's limit");
    assert_eq!(
        (limit.duration(), limit.data_in_bytes()),
        (Some(Duration::from_secs(120)), Some(1 << 17))
    );
    assert!(relay
        .engine
        .lock()
        .unwrap()
        .has_reservation(&mw_peer(&a_id)));

    // C: a rust-libp2p relay client dialing A through M; they ping over the circuit.
    let mut c = client_node();
    listen(&mut c).await;
    let (c_cmd, mut c_events, c_task) = drive(c);
    c_cmd
        .send(
            m_full
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(a_id)),
        )
        .unwrap();
    let rtt = wait_for(&mut c_events, |ev| match ev {
        SwarmEvent::Behaviour(ClientEvent::Ping(ping::Event {
            peer,
            result: Ok(rtt),
            ..
        })) if *peer == a_id => Some(*rtt),
        _ => None,
    })
    .await;
    assert!(rtt < Duration::from_secs(5));
    wait_for(&mut a_events, |ev| match ev {
        SwarmEvent::Behaviour(ClientEvent::Relay(
            relay::client::Event::InboundCircuitEstablished { .. },
        )) => Some(()),
        _ => None,
    })
    .await;
    {
        let engine = relay.engine.lock().unwrap();
        let circuits: Vec<_> = engine.circuits().collect();
        assert_eq!(circuits.len(), 1);
        assert!(circuits[0].established);
        assert_eq!(circuits[0].dst, mw_peer(&a_id));
    }

    // Closing C ends the circuit: the bridge reports what it relayed.
    c_task.abort();
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.ends.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the circuit did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = relay.ends.lock().unwrap()[0];
    assert!(end.bytes_a_to_b > 0 && end.bytes_b_to_a > 0, "{end:?}");
    assert!(end.total_bytes() <= 1 << 17);
    assert_eq!(relay.engine.lock().unwrap().circuit_count(), 0);

    for task in [server, m_task, a_task] {
        task.abort();
    }
}
