//! The typed layer, events, interests and unregistering, on three swarms.

mod common;

use std::time::Duration;

use common::{start, AppEvent};
use meshwire_rpc::{
    AttemptError, CallError, CallOpts, Config, Event, ProcedureName, RemoteError, RpcConfig,
    RpcEvent, TypedCallError,
};
use meshwire_swarm::SwarmEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Charge {
    cents: u64,
    card: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Receipt {
    id: String,
    cents: u64,
}

fn config() -> Config {
    Config {
        engine: RpcConfig {
            provider_ttl: Duration::from_millis(500),
            interest_interval: Duration::from_millis(300),
            ..RpcConfig::default()
        },
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_typed_calls_interests_events_and_unregister() {
    let name: ProcedureName = "org.example.billing.charge".parse().unwrap();
    let boot = start(config()).await;
    let provider = start(config()).await;
    let mut caller = start(config()).await;
    provider.join(&boot).await;
    caller.join(&boot).await;

    // The caller asks to hear of providers before there are any.
    let n = name.clone();
    assert!(caller.rpc(move |r| r.add_interest(n)).await);
    let n = name.clone();
    provider
        .rpc(move |r| {
            r.register_typed(n, |c: Charge| async move {
                if c.card == "declined" {
                    return Err("card declined".to_string());
                }
                Ok(Receipt {
                    id: format!("r-{}", c.cents),
                    cents: c.cents,
                })
            })
            .unwrap()
        })
        .await;
    let (want_name, want_peer) = (name.clone(), provider.peer);
    caller
        .wait_for(|ev| match ev {
            SwarmEvent::Behaviour(AppEvent::Rpc(Event::Rpc(RpcEvent::ProviderAppeared {
                name,
                peer,
            }))) if name == want_name && peer == want_peer => Some(()),
            _ => None,
        })
        .await;

    // A typed call, a handler's error, an argument of the wrong type.
    let n = name.clone();
    let receipt = caller
        .rpc(move |r| {
            let charge = Charge {
                cents: 4200,
                card: "ok".into(),
            };
            r.call_typed::<_, Receipt>(n, &charge, CallOpts::default())
        })
        .await
        .await
        .unwrap();
    assert_eq!(
        receipt,
        Receipt {
            id: "r-4200".into(),
            cents: 4200
        }
    );
    let n = name.clone();
    let declined = caller
        .rpc(move |r| {
            let charge = Charge {
                cents: 1,
                card: "declined".into(),
            };
            r.call_typed::<_, Receipt>(n, &charge, CallOpts::default())
        })
        .await
        .await;
    assert_eq!(
        declined,
        Err(TypedCallError::Call(CallError::Remote(
            RemoteError::Handler("card declined".into())
        )))
    );
    let n = name.clone();
    let wrong = caller
        .rpc(move |r| r.call_typed::<_, Receipt>(n, &"not a charge", CallOpts::default()))
        .await
        .await;
    assert!(
        matches!(&wrong, Err(TypedCallError::Call(CallError::Remote(RemoteError::Handler(m)))) if m.starts_with("bad argument")),
        "{wrong:?}"
    );

    // The event API: `call` reports `CallFinished` with the provider.
    let n = name.clone();
    let payload = serde_json::to_vec(&Charge {
        cents: 7,
        card: "ok".into(),
    })
    .unwrap();
    let id = caller
        .rpc(move |r| r.call(n, payload, CallOpts::default()))
        .await
        .unwrap();
    let (provider_seen, result) = caller
        .wait_for(|ev| match ev {
            SwarmEvent::Behaviour(AppEvent::Rpc(Event::Rpc(RpcEvent::CallFinished {
                id: got,
                provider,
                result,
                ..
            }))) if got == id => Some((provider, result)),
            _ => None,
        })
        .await;
    assert_eq!(provider_seen, Some(provider.peer));
    let receipt: Receipt = serde_json::from_slice(&result.unwrap()).unwrap();
    assert_eq!(receipt.cents, 7);

    // Unregistered: the provider refuses (the handler never runs), so even a call that is
    // not idempotent moves on — and finds nobody else.
    let n = name.clone();
    assert_eq!(provider.rpc(move |r| r.unregister(&n)).await, 1);
    let n = name.clone();
    let gone = caller
        .rpc(move |r| r.call_async(n, b"{}".to_vec(), CallOpts::default()))
        .await
        .await;
    match gone {
        Err(CallError::AllProvidersFailed { attempts }) => {
            assert_eq!(
                attempts,
                [(
                    provider.peer,
                    AttemptError::Remote(RemoteError::NoSuchProcedure)
                )]
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Sets its flag when dropped: tells that a handler's future was cancelled.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_a_timeout_cancels_the_providers_handler() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let name: ProcedureName = "org.example.slow.report".parse().unwrap();
    let boot = start(config()).await;
    let provider = start(config()).await;
    let caller = start(config()).await;
    provider.join(&boot).await;
    caller.join(&boot).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (d, f, n) = (dropped.clone(), finished.clone(), name.clone());
    provider
        .rpc(move |r| {
            r.register(n, move |_| {
                let guard = DropFlag(d.clone());
                let f = f.clone();
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    f.store(true, Ordering::SeqCst);
                    Ok(Vec::new())
                }
            })
            .unwrap()
        })
        .await;
    // Wait until the provider is found (a quick call on another name would not do: use
    // the interest).
    let n = name.clone();
    caller.rpc(move |r| r.add_interest(n)).await;
    let mut caller = caller;
    caller
        .wait_for(|ev| match ev {
            SwarmEvent::Behaviour(AppEvent::Rpc(Event::Rpc(RpcEvent::ProviderAppeared {
                ..
            }))) => Some(()),
            _ => None,
        })
        .await;
    let started = Instant::now();
    let n = name.clone();
    let result = caller
        .rpc(move |r| {
            let opts = CallOpts::default().with_timeout(Duration::from_millis(300));
            r.call_async(n, Vec::new(), opts)
        })
        .await
        .await;
    assert_eq!(result, Err(CallError::Timeout));
    // The provider dropped the handler at the caller's deadline, long before it would
    // have finished.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dropped.load(Ordering::SeqCst), "handler still running");
    assert!(!finished.load(Ordering::SeqCst));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(provider.metrics.served("cancelled"), 1);
    assert_eq!(caller.metrics.errors("timeout"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_an_abandoned_remote_attempt_closes_its_exchange_at_once() {
    use std::time::Instant;

    let name: ProcedureName = "org.example.stuck.report".parse().unwrap();
    let boot = start(config()).await;
    let provider = start(config()).await;
    let caller = start(config()).await;
    provider.join(&boot).await;
    caller.join(&boot).await;
    let n = name.clone();
    provider
        .rpc(move |r| {
            // A partitioned provider: its swarm stalls for 3 s as the request arrives,
            // so it neither answers nor cancels at the caller's deadline.
            r.register(n, |_| async {
                std::thread::sleep(Duration::from_millis(3000));
                Ok(Vec::new())
            })
            .unwrap()
        })
        .await;
    let n = name.clone();
    caller.rpc(move |r| r.add_interest(n)).await;
    let mut caller = caller;
    caller
        .wait_for(|ev| match ev {
            SwarmEvent::Behaviour(AppEvent::Rpc(Event::Rpc(RpcEvent::ProviderAppeared {
                ..
            }))) => Some(()),
            _ => None,
        })
        .await;
    let started = Instant::now();
    let n = name.clone();
    let result = caller
        .rpc(move |r| {
            let opts = CallOpts::default()
                .with_timeout(Duration::from_millis(300))
                .with_retries(0);
            r.call_async(n, Vec::new(), opts)
        })
        .await
        .await;
    assert_eq!(result, Err(CallError::Timeout));
    // The attempt's exchange closed with the timeout (its stream reset), well before the
    // provider could answer: the slot the engine freed is a stream freed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let open = caller.rpc(|r| r.remote_attempts_in_flight()).await;
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "checked too late"
    );
    assert_eq!(open, 0, "the abandoned exchange is still open");
}
