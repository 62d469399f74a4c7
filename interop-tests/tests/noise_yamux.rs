//! meshwire's Noise + Yamux upgrade (`meshwire_transport::upgrade`) against a real rust-libp2p
//! 0.57 node over loopback TCP (TCP + multistream-select + Noise XX + multistream-select +
//! Yamux + `/ipfs/ping/1.0.0`), in both dial directions, with pings both ways on each
//! connection; plus a peer-id mismatch and a one-stream throughput figure (meshwire to
//! meshwire over TCP; run with `--release -- --nocapture` for a meaningful number).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, ping, tcp, yamux, Swarm, SwarmBuilder};
use meshwire_core::{Keypair, PeerId};
use meshwire_transport::upgrade::{upgrade_inbound, upgrade_outbound, UpgradeConfig};
use meshwire_transport::{Connection, Multiaddr, TransportError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

const PING: &str = "/ipfs/ping/1.0.0";
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const NEG_TIMEOUT: Duration = Duration::from_secs(10);

fn to_libp2p_peer(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(p.as_bytes()).expect("meshwire peer id bytes decode in libp2p")
}

fn to_meshwire_peer(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).expect("libp2p peer id bytes decode in meshwire")
}

fn tcp_addr(a: std::net::SocketAddr) -> Multiaddr {
    format!("/ip4/{}/tcp/{}", a.ip(), a.port()).parse().unwrap()
}

/// A rust-libp2p node with TCP + Noise + Yamux and ping (200 ms interval).
fn libp2p_swarm() -> Swarm<ping::Behaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp + noise + yamux")
        .with_behaviour(|_| {
            ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)))
        })
        .expect("ping behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

type Events = mpsc::UnboundedReceiver<SwarmEvent<ping::Event>>;

fn spawn_swarm(mut swarm: Swarm<ping::Behaviour>) -> (Events, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        loop {
            let ev = swarm.select_next_some().await;
            let _ = tx.send(ev);
        }
    });
    (rx, handle)
}

/// A libp2p node listening on loopback TCP: its id, address and events.
async fn libp2p_listener() -> (
    libp2p::PeerId,
    std::net::SocketAddr,
    Events,
    tokio::task::JoinHandle<()>,
) {
    let mut swarm = libp2p_swarm();
    let id = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .expect("libp2p listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let mut port = None;
    for p in addr.iter() {
        if let libp2p::multiaddr::Protocol::Tcp(n) = p {
            port = Some(n);
        }
    }
    let sock = std::net::SocketAddr::from(([127, 0, 0, 1], port.expect("tcp port")));
    let (rx, handle) = spawn_swarm(swarm);
    (id, sock, rx, handle)
}

/// Echoes 32-byte pings on one stream until it ends.
async fn echo_pings<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; 32];
    while s.read_exact(&mut buf).await.is_ok() {
        if s.write_all(&buf).await.is_err() || s.flush().await.is_err() {
            return;
        }
    }
}

/// Answers every ping stream the libp2p peer opens on `conn`.
fn spawn_ping_responder(conn: Arc<Connection>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((proto, s)) = conn.accept_negotiated(&[PING], NEG_TIMEOUT).await {
            assert_eq!(proto, PING);
            tokio::spawn(echo_pings(s));
        }
    })
}

/// meshwire pings libp2p three times on one stream; every payload comes back.
async fn ping_libp2p(conn: &Connection) {
    let (proto, mut s) = conn
        .open_negotiated([PING], NEG_TIMEOUT)
        .await
        .expect("negotiate ping");
    assert_eq!(proto, PING);
    for _ in 0..3 {
        let payload: [u8; 32] = rand::random();
        s.write_all(&payload).await.unwrap();
        s.flush().await.unwrap();
        let mut back = [0u8; 32];
        s.read_exact(&mut back)
            .await
            .expect("libp2p echoes the ping");
        assert_eq!(back, payload);
    }
    s.close().await.ok();
}

/// Waits until libp2p reports the connection to `peer` and a successful ping of it.
async fn libp2p_sees_and_pings(rx: &mut Events, peer: libp2p::PeerId) -> Duration {
    let mut established = false;
    loop {
        match rx.recv().await.expect("swarm driver alive") {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                assert_eq!(peer_id, peer, "libp2p sees meshwire's peer id");
                established = true;
            }
            SwarmEvent::Behaviour(ping::Event {
                peer: p,
                result: Ok(rtt),
                ..
            }) => {
                assert_eq!(p, peer);
                assert!(established);
                return rtt;
            }
            SwarmEvent::Behaviour(ping::Event { result: Err(e), .. }) => {
                panic!("libp2p ping failed: {e}")
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                panic!("libp2p dial failed: {error}")
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                panic!("libp2p incoming error: {error}")
            }
            SwarmEvent::ConnectionClosed { cause, .. } => panic!("connection closed: {cause:?}"),
            other => eprintln!("libp2p: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_yamux_meshwire_dials_libp2p_and_both_ping() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (lp_id, sock, mut rx, driver) = libp2p_listener().await;
        let key = Keypair::generate();
        let mw_lp_id = to_libp2p_peer(&key.peer_id());

        let tcp = TcpStream::connect(sock).await.unwrap();
        let local = tcp_addr(tcp.local_addr().unwrap());
        let conn = upgrade_outbound(
            tcp.compat(),
            &key,
            Some(to_meshwire_peer(&lp_id)),
            local,
            tcp_addr(sock),
            &UpgradeConfig::default(),
        )
        .await
        .expect("meshwire upgrades its TCP stream to libp2p");
        assert_eq!(to_libp2p_peer(&conn.peer_id()), lp_id);
        assert!(!conn.is_relayed());
        let conn = Arc::new(conn);
        let responder = spawn_ping_responder(conn.clone());

        ping_libp2p(&conn).await;
        let rtt = libp2p_sees_and_pings(&mut rx, mw_lp_id).await;
        eprintln!(
            "meshwire → libp2p over noise+yamux; libp2p ping rtt {rtt:?}, handshake rtt {:?}",
            conn.rtt()
        );

        conn.close(0, "done");
        loop {
            match rx.recv().await.expect("swarm driver alive") {
                SwarmEvent::ConnectionClosed { peer_id, .. } => {
                    assert_eq!(peer_id, mw_lp_id);
                    break;
                }
                other => eprintln!("libp2p: {other:?}"),
            }
        }
        responder.abort();
        driver.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_yamux_libp2p_dials_meshwire_and_both_ping() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let key = Keypair::generate();
        let mw_id = key.peer_id();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = listener.local_addr().unwrap();

        let mut swarm = libp2p_swarm();
        let lp_id = *swarm.local_peer_id();
        let dial: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/p2p/{mw_id}", sock.port())
            .parse()
            .unwrap();
        swarm.dial(dial).expect("libp2p dial");
        let (mut rx, driver) = spawn_swarm(swarm);

        let (tcp, remote) = listener.accept().await.unwrap();
        let conn = upgrade_inbound(
            tcp.compat(),
            &key,
            tcp_addr(sock),
            tcp_addr(remote),
            &UpgradeConfig::default(),
        )
        .await
        .expect("meshwire upgrades libp2p's TCP connection");
        assert_eq!(to_libp2p_peer(&conn.peer_id()), lp_id);
        let conn = Arc::new(conn);
        let responder = spawn_ping_responder(conn.clone());

        let rtt = libp2p_sees_and_pings(&mut rx, to_libp2p_peer(&mw_id)).await;
        ping_libp2p(&conn).await;
        eprintln!("libp2p → meshwire over noise+yamux; libp2p ping rtt {rtt:?}");

        conn.close(0, "done");
        responder.abort();
        driver.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_yamux_wrong_peer_id_fails_the_upgrade() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (lp_id, sock, _rx, driver) = libp2p_listener().await;
        let tcp = TcpStream::connect(sock).await.unwrap();
        let wrong = Keypair::generate().peer_id();
        let local = tcp_addr(tcp.local_addr().unwrap());
        match upgrade_outbound(
            tcp.compat(),
            &Keypair::generate(),
            Some(wrong),
            local,
            tcp_addr(sock),
            &UpgradeConfig::default(),
        )
        .await
        {
            Err(TransportError::PeerIdMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(to_libp2p_peer(&actual), lp_id);
            }
            Err(e) => panic!("expected PeerIdMismatch, got {e:?}"),
            Ok(c) => panic!("upgrade succeeded to {}", c.peer_id()),
        }
        driver.abort();
    })
    .await
    .expect("test timed out");
}

/// One stream, meshwire to meshwire over loopback TCP + Noise + Yamux: prints MB/s. Not a timed
/// assertion; the bytes are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_yamux_one_stream_throughput_over_loopback_tcp() {
    const LEN: usize = 64 << 20;
    const CHUNK: usize = 64 << 10;
    tokio::time::timeout(Duration::from_secs(300), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = listener.local_addr().unwrap();
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let cfg = UpgradeConfig::default();
        let dial = async {
            let tcp = TcpStream::connect(sock).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let local = tcp_addr(tcp.local_addr().unwrap());
            upgrade_outbound(
                tcp.compat(),
                &a,
                Some(b.peer_id()),
                local,
                tcp_addr(sock),
                &cfg,
            )
            .await
        };
        let accept = async {
            let (tcp, remote) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            upgrade_inbound(tcp.compat(), &b, tcp_addr(sock), tcp_addr(remote), &cfg).await
        };
        let (out, inb) = tokio::join!(dial, accept);
        let (out, inb) = (out.unwrap(), inb.unwrap());

        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 253) as u8).collect();
        let started = Instant::now();
        let send = async {
            let mut s = out.open_stream().await.unwrap();
            for _ in 0..LEN / CHUNK {
                s.write_all(&chunk).await.unwrap();
            }
            s.close().await.unwrap();
        };
        let recv = async {
            let mut s = inb.accept_stream().await.unwrap();
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0usize;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                // Every byte's value is fixed by its offset in its chunk (n <= CHUNK, so the
                // read spans at most the end of one chunk and the start of the next).
                let off = total % CHUNK;
                let first = n.min(CHUNK - off);
                assert!(buf[..first] == chunk[off..off + first], "data differs");
                assert!(buf[first..n] == chunk[..n - first], "data differs");
                total += n;
            }
            total
        };
        let ((), total) = tokio::join!(send, recv);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(total, LEN);
        eprintln!(
            "noise+yamux, one stream over loopback TCP: {} MiB in {:.2} s = {:.0} MB/s",
            LEN >> 20,
            secs,
            LEN as f64 / secs / 1e6
        );
    })
    .await
    .expect("test timed out");
}
