//! Ten swarms on loopback QUIC: three providers of one procedure found through the DHT,
//! the distribution of 3,000 calls per strategy, failover when a provider dies, the result
//! cache, `NoProviders`, and calls from another task through the handle.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start, start_with, Node, T};
use meshwire_rpc::{CallError, CallOpts, Config, ProcedureName, Strategy};

const CALLS: usize = 3000;
/// Calls under way at once from the caller.
const CONCURRENCY: usize = 150;

fn name() -> ProcedureName {
    "org.example.echo.whoami".parse().unwrap()
}

/// Makes `n` calls from `caller`, `CONCURRENCY` at a time, through the handle.
async fn calls(
    caller: &Node,
    name: &ProcedureName,
    n: usize,
    opts: &CallOpts,
    payload: impl Fn(usize) -> Vec<u8>,
) -> Vec<Result<Vec<u8>, CallError>> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<Vec<u8>> = (i..(i + CONCURRENCY).min(n)).map(&payload).collect();
        i += batch.len();
        let (name, opts) = (name.clone(), opts.clone());
        let pending = caller
            .rpc(move |r| {
                batch
                    .into_iter()
                    .map(|p| r.call_async(name.clone(), p, opts.clone()))
                    .collect::<Vec<_>>()
            })
            .await;
        let results = tokio::time::timeout(T, futures::future::join_all(pending))
            .await
            .expect("calls finish in time");
        out.extend(results);
    }
    out
}

/// Calls per provider (the handler answers with its provider's index).
fn distribution(results: &[Result<Vec<u8>, CallError>]) -> HashMap<u8, usize> {
    let mut d = HashMap::new();
    for r in results {
        match r {
            Ok(v) => *d.entry(v[0]).or_default() += 1,
            Err(e) => panic!("call failed: {e}"),
        }
    }
    d
}

/// Providers that answered (failures ignored: the DHT may not know them all yet).
fn answered(results: &[Result<Vec<u8>, CallError>]) -> usize {
    let mut seen: Vec<u8> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|v| v[0])
        .collect();
    seen.sort();
    seen.dedup();
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_ten_swarms_strategies_failover_cache_and_no_providers() {
    let started = Instant::now();
    let config = || Config {
        engine: meshwire_rpc::RpcConfig {
            // Short, so that the setup sees all three providers soon.
            provider_ttl: Duration::from_secs(2),
            // The strategies, not the per-provider cap, decide here (the swarm's stream
            // limits are raised to match in `common`).
            max_outstanding_per_provider: 512,
            ..Default::default()
        },
        max_handlers_per_peer: 256,
        max_handlers: 512,
        ..Config::default()
    };
    let boot = start(config()).await;
    let mut nodes = Vec::new();
    for _ in 0..9 {
        let n = start(config()).await;
        n.join(&boot).await;
        nodes.push(n);
    }
    // Providers 1..=3 (nodes[0..3]); each answers with its index, after its delay.
    let delays: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (i, node) in nodes[..3].iter().enumerate() {
        let delay = delays[i].clone();
        let tag = i as u8 + 1;
        node.rpc(move |r| {
            r.register(name(), move |_payload| {
                let delay = delay.load(Ordering::Relaxed);
                async move {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    Ok(vec![tag])
                }
            })
            .expect("register")
        })
        .await;
    }
    let caller = &nodes[5];
    // Wait until the DHT knows all three providers.
    let deadline = Instant::now() + T;
    loop {
        let r = calls(caller, &name(), 30, &CallOpts::default(), |_| vec![]).await;
        if answered(&r) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "providers not found");
        // The provider cache expires and the DHT is asked afresh.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("setup: {:?}", started.elapsed());

    // Round robin: even within ±1.
    let t = Instant::now();
    let rr = distribution(&calls(caller, &name(), CALLS, &CallOpts::default(), |_| vec![]).await);
    println!("round robin: {rr:?} in {:?}", t.elapsed());
    let (min, max) = (rr.values().min().unwrap(), rr.values().max().unwrap());
    assert_eq!(rr.len(), 3);
    assert!(max - min <= 1, "{rr:?}");

    // Random and least outstanding: every provider used.
    for strategy in [Strategy::Random, Strategy::LeastOutstanding] {
        let opts = CallOpts::default().with_strategy(strategy.clone());
        let t = Instant::now();
        let d = distribution(&calls(caller, &name(), CALLS, &opts, |_| vec![]).await);
        println!("{}: {d:?} in {:?}", strategy.label(), t.elapsed());
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.values().all(|&c| c >= CALLS / 10), "{d:?}");
    }

    // Least latency with provider 3 slowed by 200 ms: from its first slow answer on, it
    // gets nothing; before, at most the burst of calls sent at once (the calls go out
    // `CONCURRENCY` at a time, all to the provider measured fastest so far).
    delays[2].store(200, Ordering::Relaxed);
    let opts = CallOpts::default().with_strategy(Strategy::LeastLatency);
    let t = Instant::now();
    let d = distribution(&calls(caller, &name(), CALLS, &opts, |_| vec![]).await);
    println!("least latency (3 slowed): {d:?} in {:?}", t.elapsed());
    assert!(d.get(&3).copied().unwrap_or(0) <= CONCURRENCY, "{d:?}");
    let fastest = d.iter().max_by_key(|(_, c)| **c).map(|(p, _)| *p);
    assert_ne!(fastest, Some(3), "{d:?}");
    delays[2].store(0, Ordering::Relaxed);

    // Local first: a provider calling its own name stays local.
    let d = distribution(
        &calls(
            &nodes[0],
            &name(),
            100,
            &CallOpts::default().with_strategy(Strategy::LocalFirst),
            |_| vec![],
        )
        .await,
    );
    assert_eq!(d, HashMap::from([(1, 100)]));

    // The result cache: one idempotent call repeated.
    let cached = CallOpts::default().idempotent();
    let before = (caller.metrics.cache_hits(), caller.metrics.cache_misses());
    for _ in 0..10 {
        let r = calls(caller, &name(), 100, &cached, |_| b"same".to_vec()).await;
        assert!(r.iter().all(|r| r.is_ok()));
    }
    let hits = caller.metrics.cache_hits() - before.0;
    let misses = caller.metrics.cache_misses() - before.1;
    let ratio = hits as f64 / (hits + misses) as f64;
    println!("cache: {hits} hits, {misses} misses, hit ratio {ratio:.3}");
    // The first batch of 100 runs at once (all miss); every later one hits.
    assert!(ratio >= 0.89, "{hits} / {misses}");

    // A provider killed mid-run: no idempotent call fails; the failovers are counted.
    let opts = CallOpts::default()
        .idempotent()
        .with_timeout(Duration::from_secs(2))
        .with_retries(2);
    let failovers = caller.metrics.failovers();
    // The provider is shut down when a third of the calls have gone out, while the batch
    // that follows is in flight (by progress, not by time: a fixed 300 ms was once longer
    // than the whole run).
    let victim = nodes[1].handle.clone();
    let killer = std::sync::Mutex::new(None);
    let t = Instant::now();
    // Distinct payloads: no cache hits.
    let results = calls(caller, &name(), CALLS, &opts, |i| {
        if i == CALLS / 3 {
            let victim = victim.clone();
            *killer.lock().unwrap() = Some(tokio::spawn(async move {
                victim.shutdown().await.ok();
            }));
        }
        i.to_be_bytes().to_vec()
    })
    .await;
    let killer = killer.lock().unwrap().take();
    killer.expect("the kill started").await.unwrap();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let d = distribution(&results);
    let failovers = caller.metrics.failovers() - failovers;
    println!(
        "provider killed: {d:?}, {failed} failed, {failovers} failovers in {:?}",
        t.elapsed()
    );
    assert_eq!(failed, 0);
    assert!(failovers > 0);
    assert!(d.get(&2).copied().unwrap_or(0) < CALLS / 3, "{d:?}");

    // A name nobody serves: NoProviders, quickly.
    let t = Instant::now();
    let none: ProcedureName = "org.example.nobody.home".parse().unwrap();
    let r = calls(caller, &none, 1, &CallOpts::default(), |_| vec![]).await;
    let took = t.elapsed();
    println!("no providers: {:?} in {took:?}", r[0]);
    assert_eq!(r[0], Err(CallError::NoProviders));
    assert!(took < Duration::from_secs(5), "{took:?}");
    println!("total: {:?}", started.elapsed());
}

/// With every default (the swarm's 32 streams per peer and protocol, RPC's 32 calls per
/// provider), 600 calls at once to one provider all succeed: the caller queues past its
/// per-provider limit instead of having its streams reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_many_calls_to_one_provider_with_default_limits() {
    let provider = start_with(Config::default(), false).await;
    let caller = start_with(Config::default(), false).await;
    caller.join(&provider).await;
    provider
        .rpc(|r| {
            r.register(name(), |p| async move { Ok(p) })
                .expect("register")
        })
        .await;
    let n = 600;
    let pending = caller
        .rpc(move |r| {
            (0..n)
                .map(|i: u32| r.call_async(name(), i.to_be_bytes().to_vec(), CallOpts::default()))
                .collect::<Vec<_>>()
        })
        .await;
    let results = tokio::time::timeout(T, futures::future::join_all(pending))
        .await
        .expect("calls finish in time");
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed[0]
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap(), &(i as u32).to_be_bytes().to_vec());
    }
}
