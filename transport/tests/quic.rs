//! The QUIC transport on real loopback sockets.

use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{
    identity::Keypair, with_peer_id, Connection, ConnectionError, Multiaddr, Transport,
    TransportError, TransportEvent, TransportExt,
};

const T: Duration = Duration::from_secs(5);

async fn listener() -> (QuicTransport, Multiaddr) {
    let mut t = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    t.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let TransportEvent::NewListenAddr { addr, .. } = t.next_event().await else {
        panic!("no listen addr")
    };
    (t, addr)
}

async fn connect(
    dialer: &mut QuicTransport,
    server: &mut QuicTransport,
    addr: &Multiaddr,
) -> (Connection, Connection) {
    let dial = dialer.dial(addr, Some(server.local_peer_id())).unwrap();
    let TransportEvent::Incoming { upgrade, .. } = server.next_event().await else {
        panic!("no incoming")
    };
    let (o, i) = tokio::join!(dial, upgrade);
    (o.unwrap(), i.unwrap())
}

#[tokio::test]
async fn listen_on_port_zero_reports_the_actual_port() {
    let (_t, addr) = listener().await;
    let s = addr.to_string();
    assert!(
        s.starts_with("/ip4/127.0.0.1/udp/") && s.ends_with("/quic-v1"),
        "{s}"
    );
    assert!(!s.contains("/udp/0/"), "{s}");
}

#[tokio::test]
async fn both_sides_authenticate_and_dials_reuse_the_listening_socket() {
    let (mut a, a_addr) = listener().await;
    let (mut b, b_addr) = listener().await;
    let (out, inc) = connect(&mut b, &mut a, &a_addr).await;
    assert_eq!(out.peer_id(), a.local_peer_id());
    assert_eq!(inc.peer_id(), b.local_peer_id());
    // a sees b coming from b's listening port: one socket serves listening and dialing.
    assert_eq!(inc.remote_addr(), &b_addr);
    assert_eq!(out.remote_addr(), &a_addr);
}

#[tokio::test]
async fn dialing_the_wrong_peer_id_fails_with_the_mismatch() {
    let (mut a, a_addr) = listener().await;
    let mut b = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let wrong = Keypair::generate().peer_id();
    let dial = b.dial(&a_addr, Some(wrong)).unwrap();
    let server = async {
        if let TransportEvent::Incoming { upgrade, .. } = a.next_event().await {
            let _ = upgrade.await;
        }
    };
    let (r, ()) = tokio::join!(dial, server);
    match r {
        Err(TransportError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, a.local_peer_id());
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("dial to the wrong peer succeeded"),
    }
    // The /p2p/ suffix is honoured the same way.
    let with_wrong = with_peer_id(&a_addr, wrong);
    assert!(matches!(
        b.dial(&with_wrong, Some(a.local_peer_id())),
        Err(TransportError::AddressPeerMismatch { .. })
    ));
}

#[tokio::test]
async fn unusable_addresses_get_a_clear_error() {
    let mut t = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    for a in [
        "/ip4/127.0.0.1/tcp/1",
        "/memory/3",
        "/ip4/127.0.0.1/udp/1",
        "/dns4/example.com/udp/1/quic-v1",
    ] {
        let addr: Multiaddr = a.parse().unwrap();
        assert!(
            matches!(
                t.listen_on(addr.clone()),
                Err(TransportError::UnsupportedAddress { .. })
            ),
            "{a}"
        );
        assert!(
            matches!(
                t.dial(&addr, None),
                Err(TransportError::UnsupportedAddress { .. })
            ),
            "{a}"
        );
        assert!(!t.can_dial(&addr));
    }
    assert!(t
        .dial(&"/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(), None)
        .is_err());
}

#[tokio::test]
async fn negotiated_streams_carry_data_and_unknown_protocols_are_refused() {
    let (mut a, a_addr) = listener().await;
    let (mut b, _) = listener().await;
    let (out, inc) = connect(&mut b, &mut a, &a_addr).await;
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            match inc.accept_negotiated(&["/echo/1.0.0"], T).await {
                Ok((p, mut s)) => {
                    assert_eq!(p, "/echo/1.0.0");
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                    s.close().await.unwrap();
                }
                Err(ConnectionError::Negotiation(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        // Keep the connection open until the client has read everything.
        inc
    });
    // Unknown protocol: the lazy dialer learns of the `na` on its first read.
    let (_, mut s) = out.open_negotiated(["/nope/1.0.0"], T).await.unwrap();
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 4];
    assert!(s.read(&mut buf).await.is_err());
    // Giving up on the stream ends the listener's wait for another proposal.
    drop(s);

    let payload: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    let (_, mut s) = out.open_negotiated(["/echo/1.0.0"], T).await.unwrap();
    s.write_all(&payload).await.unwrap();
    s.close().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
    drop(server.await.unwrap());
}

#[tokio::test]
async fn a_peer_closing_mid_stream_gives_errors_not_panics() {
    let (mut a, a_addr) = listener().await;
    let (mut b, _) = listener().await;
    let (out, inc) = connect(&mut b, &mut a, &a_addr).await;
    let mut s = out.open_stream().await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut r = inc.accept_stream().await.unwrap();
    let mut buf = [0u8; 5];
    r.read_exact(&mut buf).await.unwrap();
    inc.close(42, "going away");
    let reason = tokio::time::timeout(T, out.closed()).await.unwrap();
    assert_eq!(
        reason,
        meshwire_transport::CloseReason::Remote {
            code: 42,
            reason: "going away".into()
        }
    );
    assert!(s.read(&mut buf).await.is_err());
    assert!(matches!(
        out.open_stream().await,
        Err(ConnectionError::Closed(_))
    ));
}

#[tokio::test]
async fn datagrams_travel_between_peers() {
    let (mut a, a_addr) = listener().await;
    let (mut b, _) = listener().await;
    let (out, inc) = connect(&mut b, &mut a, &a_addr).await;
    assert!(out.max_datagram_size().unwrap() >= 1000);
    out.send_datagram(Bytes::from_static(b"probe")).unwrap();
    let got = tokio::time::timeout(T, inc.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"probe");
}

#[tokio::test]
async fn dial_without_listener_uses_a_client_endpoint_and_many_streams_work() {
    let (mut a, a_addr) = listener().await;
    let mut c = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let (out, inc) = connect(&mut c, &mut a, &a_addr).await;
    let server = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let mut s = inc.accept_stream().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
                s.close().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut clients = Vec::new();
    for i in 0..50u32 {
        let out = out.clone();
        clients.push(tokio::spawn(async move {
            let mut s = out.open_stream().await.unwrap();
            s.write_all(&i.to_be_bytes()).await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(u32::from_be_bytes(b), i);
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    server.await.unwrap();
}

#[tokio::test]
async fn a_wildcard_listener_reports_interface_addresses() {
    let mut t = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    t.listen_on("/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let mut reported = Vec::new();
    // Every interface address is reported at once, before anything else happens.
    while let Ok(TransportEvent::NewListenAddr { addr, .. }) =
        tokio::time::timeout(Duration::from_millis(100), t.next_event()).await
    {
        reported.push(addr);
    }
    let texts: Vec<String> = reported.iter().map(|a| a.to_string()).collect();
    assert!(
        texts.iter().all(|a| !a.starts_with("/ip4/0.0.0.0/")),
        "{texts:?}"
    );
    let lo = texts
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/udp/"))
        .unwrap_or_else(|| panic!("loopback among {texts:?}"))
        .clone();
    assert_eq!(t.listen_addrs().len(), reported.len());

    // The reported loopback address is dialable, and the accepted connection names the
    // address it came in on, not the wildcard.
    let lo: Multiaddr = lo.parse().unwrap();
    let mut d = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let dial = d.dial(&lo, Some(t.local_peer_id())).unwrap();
    let TransportEvent::Incoming {
        local_addr,
        upgrade,
        ..
    } = t.next_event().await
    else {
        panic!("no incoming")
    };
    assert_eq!(local_addr, lo);
    let (o, i) = tokio::join!(dial, upgrade);
    assert_eq!(o.unwrap().peer_id(), t.local_peer_id());
    assert_eq!(i.unwrap().local_addr(), &lo);
}

#[tokio::test]
async fn a_socket_handed_over_carries_the_next_dial_and_listeners_send_raw_datagrams() {
    use meshwire_transport::quic::multiaddr_to_socketaddr;
    let (mut a, a_addr) = listener().await;
    let (mut b, b_addr) = listener().await;
    let a_sock = multiaddr_to_socketaddr(&a_addr).unwrap();
    let b_sock = multiaddr_to_socketaddr(&b_addr).unwrap();

    // A raw datagram from b's listening socket leaves from b's listening port.
    let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    let sent = b
        .sockets()
        .send_from_listener(raw.local_addr().unwrap(), b"probe")
        .unwrap();
    assert_eq!(sent, 5);
    let mut buf = [0u8; 16];
    let (n, from) = raw.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"probe"[..], b_sock));
    assert_eq!(b.sockets().listener_addrs(), vec![b_sock]);

    // The handed-over socket (not b's listener) carries b's next dial to a, once.
    let handed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let handed_addr = handed.local_addr().unwrap();
    b.sockets().adopt_for_dial(a_sock, handed).unwrap();
    let (out, inc) = connect(&mut b, &mut a, &a_addr).await;
    assert_eq!(
        multiaddr_to_socketaddr(inc.remote_addr()),
        Some(handed_addr)
    );
    assert_eq!(out.peer_id(), a.local_peer_id());
    assert!(b.sockets().take_adopted(a_sock).is_none(), "used once");
    let (_out2, inc2) = connect(&mut b, &mut a, &a_addr).await;
    assert_eq!(
        inc2.remote_addr(),
        &b_addr,
        "later dials use the listener again"
    );

    // Bounded, and a socket of the wrong family is refused.
    let few = meshwire_transport::quic::QuicSockets::new(1);
    let s = |_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    few.adopt_for_dial(a_sock, s(0)).unwrap();
    assert!(few.adopt_for_dial(b_sock, s(1)).is_err());
    assert!(few
        .adopt_for_dial("[::1]:1".parse().unwrap(), s(2))
        .is_err());
}

#[tokio::test]
async fn a_detached_stream_carries_on_and_leaves_an_inert_handle() {
    let (mut a, a_addr) = listener().await;
    let (mut b, _) = listener().await;
    let (out, inc) = connect(&mut b, &mut a, &a_addr).await;
    let mut handle = out.open_stream().await.unwrap();
    assert!(handle.drop_finishes(), "quinn finishes a dropped stream");
    let mut moved = handle.detach();
    assert!(!handle.drop_finishes());
    // The moved stream is the stream: its bytes and its end reach the remote.
    moved.write_all(b"moved").await.unwrap();
    moved.close().await.unwrap();
    let mut remote = inc.accept_stream().await.unwrap();
    let mut got = Vec::new();
    remote.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"moved");
    // The handle left behind reads an end at once and refuses writes.
    let mut buf = [0u8; 4];
    assert_eq!(handle.read(&mut buf).await.unwrap(), 0);
    let err = handle.write_all(b"x").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
    assert!(handle.close().await.is_err());
    drop(handle);
    // Dropping the inert handle did nothing to the stream.
    remote.write_all(b"back").await.unwrap();
    remote.close().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(T, moved.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"back");
}
