//! AutoNAT v2 against peers that break the protocol, on loopback: raw streams into a
//! meshwire server (wrong first message, nothing to dial, an oversized frame, the per-peer
//! limit), and fake servers lying to a meshwire client (OK without a dial-back, a dial-back
//! on the request's own connection).

// The generated event enums carry identify's events, which these tests do not read.
#![allow(dead_code)]

use std::time::Duration;

use futures::AsyncWriteExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_nat::autonat::wire::{
    encode_dial_back, ClientMessage, DialStatus, ResponseStatus, ServerMessage, MAX_MESSAGE,
};
use meshwire_nat::autonat::{
    Client, ClientConfig, DialBackRejected, ProbeError, Refusal, ServeError, Server, ServerConfig,
    ServerEvent, TestResult, DIAL_BACK_PROTOCOL, DIAL_REQUEST_PROTOCOL,
};
use meshwire_swarm::toolkit::{read_frame, write_frame};
use meshwire_swarm::{Multiaddr, NetworkBehaviour, Stream, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::with_peer_id;
use tokio::sync::mpsc;

#[derive(NetworkBehaviour)]
struct ClientNode {
    autonat: Client,
    identify: meshwire_identify::Behaviour,
}

fn identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new("hostile/1", key.public()))
}

fn swarm<B: NetworkBehaviour>(key: Keypair, b: B) -> Swarm<B> {
    Swarm::new(
        QuicTransport::new(key, QuicConfig::default()).unwrap(),
        b,
        SwarmConfig::default(),
    )
}

async fn listen<B: NetworkBehaviour>(s: &mut Swarm<B>) -> Multiaddr {
    s.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.next_event().await {
            return address;
        }
    }
}

/// Runs `s` on its own task, its behaviour events into the returned channel.
fn run<B>(mut s: Swarm<B>) -> mpsc::UnboundedReceiver<B::Event>
where
    B: NetworkBehaviour + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(e) = s.next_event().await {
                let _ = tx.send(e);
            }
        }
    });
    rx
}

async fn response(stream: &mut Stream) -> Option<ServerMessage> {
    let bytes = read_frame(stream, MAX_MESSAGE).await.ok()??;
    ServerMessage::decode(&bytes).ok()
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<ServerEvent>) -> ServerEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a server event")
        .expect("server running")
}

fn status(msg: Option<ServerMessage>) -> Option<ResponseStatus> {
    match msg? {
        ServerMessage::DialResponse { status, .. } => Some(status),
        ServerMessage::DialDataRequest { .. } => None,
    }
}

#[tokio::test]
async fn server_answers_protocol_violations_and_limits() {
    let skey = Keypair::generate();
    let config = ServerConfig {
        dial_private: true,
        requests_per_peer: 3,
        ..ServerConfig::default()
    };
    let mut server = swarm(skey.clone(), Server::new(config, skey).unwrap());
    let server_addr = listen(&mut server).await;
    let server_peer = server.local_peer_id();
    let mut events = run(server);

    let ckey = Keypair::generate();
    let mut client = swarm(ckey.clone(), identify(&ckey));
    client
        .dial(with_peer_id(&server_addr, server_peer))
        .unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = client.next_event().await {
            break;
        }
    }
    let control = client.stream_control();
    let _client_events = run(client);

    // Dial data before any request: rejected.
    let mut s = control
        .open_stream(server_peer, DIAL_REQUEST_PROTOCOL)
        .await
        .unwrap();
    write_frame(&mut s, &ClientMessage::DialData { len: 10 }.encode())
        .await
        .unwrap();
    assert_eq!(
        status(response(&mut s).await),
        Some(ResponseStatus::RequestRejected)
    );
    assert!(matches!(
        next_event(&mut events).await.result,
        Err(ServeError::Wire(_))
    ));

    // Nothing the server dials (TCP only): refused.
    let mut s = control
        .open_stream(server_peer, DIAL_REQUEST_PROTOCOL)
        .await
        .unwrap();
    let req = ClientMessage::DialRequest {
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        nonce: 1,
    };
    write_frame(&mut s, &req.encode()).await.unwrap();
    assert_eq!(
        status(response(&mut s).await),
        Some(ResponseStatus::DialRefused)
    );
    assert_eq!(
        next_event(&mut events).await.result,
        Err(ServeError::DialRefused)
    );

    // A frame announcing more than the bound: refused before its body, no answer.
    let mut s = control
        .open_stream(server_peer, DIAL_REQUEST_PROTOCOL)
        .await
        .unwrap();
    s.write_all(&[0x90, 0x4e]).await.unwrap(); // 10,000 bytes
    s.write_all(&[0u8; 64]).await.unwrap();
    assert_eq!(response(&mut s).await, None);
    assert!(matches!(
        next_event(&mut events).await.result,
        Err(ServeError::Stream(_))
    ));

    // The fourth request in the window: over the per-peer rate, answered rejected.
    let mut s = control
        .open_stream(server_peer, DIAL_REQUEST_PROTOCOL)
        .await
        .unwrap();
    write_frame(&mut s, &req.encode()).await.unwrap();
    assert_eq!(
        status(response(&mut s).await),
        Some(ResponseStatus::RequestRejected)
    );
    assert_eq!(
        next_event(&mut events).await.result,
        Err(ServeError::Rejected(Refusal::PeerRate))
    );
}

/// A fake server: announces the dial-request protocol (through identify) and answers every
/// request OK/OK without dialing back; the first request also gets a dial-back stream with
/// the right nonce *on the request's own connection*. Returns whether that dial-back was
/// answered.
async fn lying_server(
    control: meshwire_swarm::StreamControl,
    client: PeerId,
) -> mpsc::UnboundedReceiver<bool> {
    let mut incoming = control.accept(DIAL_REQUEST_PROTOCOL).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        while let Some(mut inbound) = incoming.next().await {
            let Ok(Some(bytes)) = read_frame(&mut inbound.stream, MAX_MESSAGE).await else {
                continue;
            };
            let Ok(ClientMessage::DialRequest { nonce, .. }) = ClientMessage::decode(&bytes) else {
                continue;
            };
            if first {
                first = false;
                let mut back = control
                    .open_stream(client, DIAL_BACK_PROTOCOL)
                    .await
                    .unwrap();
                write_frame(&mut back, &encode_dial_back(nonce))
                    .await
                    .unwrap();
                let answered = matches!(read_frame(&mut back, 10).await, Ok(Some(_)));
                let _ = tx.send(answered);
            }
            let ok = ServerMessage::DialResponse {
                status: ResponseStatus::Ok,
                addr_idx: 0,
                dial_status: DialStatus::Ok,
            };
            let _ = write_frame(&mut inbound.stream, &ok.encode()).await;
            let _ = inbound.stream.close().await;
        }
    });
    rx
}

/// Runs a client against [`lying_server`]; with `second_connection` the fake also dials
/// the client (a second, inbound connection, established before any request) first. Returns
/// the first two probe results, after checking nothing was confirmed and the dial-back went
/// unanswered.
async fn against_lying_server(second_connection: bool) -> Vec<TestResult> {
    let fkey = Keypair::generate();
    let mut fake = swarm(fkey.clone(), identify(&fkey));
    let fake_addr = listen(&mut fake).await;
    let fake_peer = fake.local_peer_id();

    let ckey = Keypair::generate();
    let client_peer = ckey.public().to_peer_id();
    let mut answered = lying_server(fake.stream_control(), client_peer).await;

    let behaviour = ClientNode {
        autonat: Client::new(ClientConfig {
            probe_interval: Duration::from_millis(100),
            ..ClientConfig::default()
        }),
        identify: identify(&ckey),
    };
    let mut client = swarm(ckey, behaviour);
    let addr = listen(&mut client).await;
    if second_connection {
        fake.dial(with_peer_id(&addr, client_peer)).unwrap();
        let inbound = async {
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = client.next_event().await
                {
                    assert_eq!(peer_id, fake_peer);
                    break;
                }
            }
        };
        tokio::select! {
            _ = inbound => {}
            _ = async { loop { fake.next_event().await; } } => {}
        }
    }
    let _fake_events = run(fake);
    client.behaviour_mut().autonat.test_address(addr.clone());
    client.dial(with_peer_id(&fake_addr, fake_peer)).unwrap();

    let mut results: Vec<TestResult> = Vec::new();
    let mut confirmed = false;
    let run = async {
        while results.len() < 2 {
            match client.next_event().await {
                SwarmEvent::Behaviour(ClientNodeEvent::Autonat(r)) => results.push(r),
                SwarmEvent::ExternalAddrConfirmed { .. } => confirmed = true,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("two probes within 15 s");
    for r in &results {
        assert_eq!(r.addr, addr);
        assert_eq!(r.server, fake_peer);
    }
    assert!(!confirmed);
    assert!(client.behaviour().autonat.reachable_addresses().is_empty());
    assert_eq!(
        answered.recv().await,
        Some(false),
        "a dial-back on an existing connection is not answered"
    );
    results
}

#[tokio::test]
async fn client_does_not_believe_a_server_without_a_dial_back_on_a_new_connection() {
    let results = against_lying_server(false).await;
    // The nonce came back on the request's own connection, which we dialed.
    assert_eq!(
        results[0].result,
        Err(ProbeError::DialBackRejected(DialBackRejected::Outbound))
    );
    assert_eq!(results[1].result, Err(ProbeError::MissingDialBack));
}

/// A server holding a second connection to us (one it dialed, before the request) delivers
/// the nonce there: an existing connection proves nothing about the address.
#[tokio::test]
async fn client_does_not_believe_a_dial_back_on_a_pre_existing_second_connection() {
    let results = against_lying_server(true).await;
    // The fake's stream goes out on either of its two connections: ours (outbound for us)
    // or its own (inbound for us, but established before the request).
    assert!(
        matches!(
            results[0].result,
            Err(ProbeError::DialBackRejected(
                DialBackRejected::Outbound | DialBackRejected::PreExisting
            ))
        ),
        "{:?}",
        results[0].result
    );
    assert_eq!(results[1].result, Err(ProbeError::MissingDialBack));
}
