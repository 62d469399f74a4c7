//! Hostile callers: malformed, unknown, oversized requests and floods get typed answers or
//! resets, and the provider's work stays within its limits.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start, T};
use meshwire_core::Keypair;
use meshwire_request_response::{self as rr, Event, Message, ProtocolSupport};
use meshwire_rpc::wire::{decode_response, WireRequest};
use meshwire_rpc::{Config, ProcedureName, Realm, RemoteError, PROTOCOL};
use meshwire_swarm::{StreamProtocol, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};

type Raw = rr::bytes::Behaviour<u64>;

fn request(name: &str, payload: Vec<u8>) -> Vec<u8> {
    WireRequest {
        realm: Realm::default(),
        name: ProcedureName::new(name).unwrap(),
        timeout_ms: 5000,
        payload,
    }
    .encode()
}

/// The attacker's events.
type Events = tokio::sync::mpsc::Receiver<SwarmEvent<Event<Vec<u8>, Vec<u8>, u64>>>;

type Answer = (
    u64,
    Result<Result<Vec<u8>, RemoteError>, rr::OutboundFailure>,
);

/// Waits for the answers to `n` requests: (tag, decoded response or the failure), by tag.
async fn answers(events: &mut Events, n: usize) -> Vec<Answer> {
    let mut out = Vec::new();
    tokio::time::timeout(T, async {
        while out.len() < n {
            match events.recv().await.unwrap() {
                SwarmEvent::Behaviour(Event::Message {
                    message:
                        Message::Response {
                            response,
                            user_data,
                            ..
                        },
                    ..
                }) => out.push((user_data, Ok(decode_response(response).unwrap()))),
                SwarmEvent::Behaviour(Event::OutboundFailure {
                    error, user_data, ..
                }) => out.push((user_data, Err(error))),
                _ => {}
            }
        }
    })
    .await
    .expect("answers in time");
    out.sort_by_key(|(t, _)| *t);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_hostile_requests_get_typed_errors_and_bounded_work() {
    let provider = start(Config {
        max_handlers_per_peer: 16,
        max_handlers: 64,
        ..Config::default()
    })
    .await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    provider
        .rpc(move |b| {
            b.register("org.example.slow.op".parse().unwrap(), move |payload| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok(payload)
                }
            })
            .unwrap()
        })
        .await;

    // The attacker speaks the protocol with raw bytes (up to 4 MiB).
    let key = Keypair::generate();
    let raw = Raw::with_codec(
        rr::bytes::Codec::new(4 << 20, 4 << 20),
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Outbound)],
        rr::Config::default().with_max_outbound_in_flight(1024),
    );
    let quic = QuicTransport::new(key, QuicConfig::default()).unwrap();
    let mut attacker = Swarm::new(quic, raw, SwarmConfig::default());
    attacker.add_peer_address(provider.peer, provider.addr.clone());
    let (handle, mut events) = attacker.spawn();
    let target = provider.peer;
    let send = |bytes: Vec<u8>, tag: u64| {
        let handle = handle.clone();
        async move {
            handle
                .with_behaviour(move |b| {
                    b.send_request_with(target, bytes, tag);
                })
                .await
                .unwrap()
        }
    };
    // Malformed, unknown, wrong realm: typed refusals; the handler never ran.
    send(vec![9, 9, 9], 1).await;
    send(vec![1, 3, b'a', b'b'], 2).await;
    send(request("org.example.nobody.here", vec![]), 3).await;
    // A served name, asked in another realm: not served there.
    let other_realm = WireRequest {
        realm: Realm::new("staging").unwrap(),
        name: ProcedureName::new("org.example.slow.op").unwrap(),
        timeout_ms: 5000,
        payload: vec![],
    };
    send(other_realm.encode(), 4).await;
    let a = answers(&mut events, 4).await;
    assert!(matches!(&a[0].1, Ok(Err(RemoteError::BadRequest(m))) if m.contains("version")));
    assert!(matches!(&a[1].1, Ok(Err(RemoteError::BadRequest(_)))));
    assert_eq!(a[2].1.as_ref().unwrap(), &Err(RemoteError::NoSuchProcedure));
    assert_eq!(a[3].1.as_ref().unwrap(), &Err(RemoteError::NoSuchProcedure));

    // Oversized (2 MiB against the 1 MiB + 512 limit): reset unread.
    send(request("org.example.slow.op", vec![0; 2 << 20]), 5).await;
    let a = answers(&mut events, 1).await;
    assert!(a[0].1.is_err(), "{:?}", a[0].1);
    assert_eq!(peak.load(Ordering::SeqCst), 0);

    // A flood of 300 calls at once: at most 16 handlers run for this caller, the next
    // ones get `Overloaded`, past twice the limit the streams are reset.
    for i in 0..300 {
        send(request("org.example.slow.op", vec![1; 64]), 100 + i).await;
    }
    let a = answers(&mut events, 300).await;
    let ok = a.iter().filter(|(_, r)| matches!(r, Ok(Ok(_)))).count();
    let overloaded = a
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Err(RemoteError::Overloaded))))
        .count();
    let reset = a.iter().filter(|(_, r)| r.is_err()).count();
    println!(
        "flood: {ok} served, {overloaded} overloaded, {reset} reset; peak handlers {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) <= 16);
    assert!(ok >= 16, "{ok}");
    assert!(overloaded > 0);
    assert_eq!(ok + overloaded + reset, 300);
    assert!(provider.metrics.served("overloaded") >= overloaded as u64);
    // Everything let go afterwards.
    let running_after = provider.rpc(|b| b.handlers_running()).await;
    assert_eq!(running_after, 0);
    assert_eq!(running.load(Ordering::SeqCst), 0);
}
