//! meshwire and rust-libp2p 0.57 kademlia nodes in one DHT on loopback QUIC (3 + 3 nodes).
//!
//! 1. A rust-libp2p-only DHT forms; one libp2p node stores a record and announces a provider
//!    key, so only libp2p nodes hold them.
//! 2. meshwire nodes join through a libp2p node, then read that record and find that provider:
//!    meshwire decodes libp2p's GET_VALUE / GET_PROVIDERS responses.
//! 3. Every node finds every other node with FIND_NODE, in both implementations.
//! 4. A meshwire node stores a record and announces a provider key: the libp2p nodes store
//!    both (they decoded PUT_VALUE / ADD_PROVIDER). The libp2p copies are then deleted, so a
//!    libp2p node can only GET the record and the provider from meshwire nodes.
//!
//! The harness (`kad_harness/mod.rs`) explains how the rust-libp2p nodes are set up.

mod kad_harness;

use std::collections::HashSet;
use std::time::Duration;

use libp2p::kad as lp_kad;
use libp2p::kad::store::RecordStore;
use meshwire_core::PeerId;
use meshwire_kad as mw_kad;
use meshwire_kad::protocol::{Record, RecordKey};

use kad_harness::*;

/// Waits until `check` holds on libp2p node `node`.
async fn lp_eventually(
    node: &LpNode,
    what: &str,
    check: fn(&mut LpSwarm, &[u8]) -> bool,
    key: &[u8],
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let k = key.to_vec();
        if node.call(move |s| check(s, &k)).await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshwire_and_libp2p_in_one_dht() {
    // ---- 1. A rust-libp2p DHT holding a record and a provider record ----------------------
    let mut lp = Vec::new();
    for _ in 0..3 {
        lp.push(libp2p_node().await);
    }
    let (lp0_peer, lp0_addr) = (lp[0].peer, lp[0].addr.clone());
    for node in lp[1..].iter_mut() {
        lp_bootstrap(node, lp0_peer, lp0_addr.clone()).await;
    }
    let lp_peers: Vec<PeerId> = lp.iter().map(|n| n.peer).collect();

    let b_key = b"written-by-libp2p".to_vec();
    let b_value = b"hello from rust-libp2p".to_vec();
    let record = lp_kad::Record::new(b_key.clone(), b_value.clone());
    let id = lp[1]
        .call(move |s| {
            s.behaviour_mut()
                .kad
                .put_record(record, lp_kad::Quorum::N(2.try_into().unwrap()))
                .expect("stored locally")
        })
        .await;
    let steps = lp_finished(&mut lp[1], id).await;
    assert!(
        matches!(steps[0].result, lp_kad::QueryResult::PutRecord(Ok(_))),
        "{:?}",
        steps[0].result
    );
    let k2 = mw_kad::discovery::service_key("libp2p-provided");
    let k2_lp = lp_kad::RecordKey::new(&k2.to_vec());
    let id = lp[1]
        .call(move |s| {
            s.behaviour_mut()
                .kad
                .start_providing(k2_lp)
                .expect("provider store")
        })
        .await;
    let steps = lp_finished(&mut lp[1], id).await;
    assert!(matches!(
        steps[0].result,
        lp_kad::QueryResult::StartProviding(Ok(_))
    ));

    // ---- 2. meshwire nodes join through a libp2p node and read what libp2p wrote ----------
    let mut mw = Vec::new();
    for _ in 0..3 {
        mw.push(meshwire_node(mw_kad::Config::default()).await);
    }
    for node in mw.iter_mut() {
        mw_bootstrap(node, lp0_peer, lp0_addr.clone()).await;
    }
    let mw_peers: Vec<PeerId> = mw.iter().map(|n| n.peer).collect();

    let key = RecordKey::new(b_key.clone());
    let id = mw[2]
        .call(move |s| s.behaviour_mut().kad.get_value(key, 6))
        .await;
    let (result, _, _) = mw_finished(&mut mw[2], id).await;
    let mw_kad::QueryResult::GetValue(Ok(got)) = result else {
        panic!("meshwire GET of the libp2p record: {result:?}")
    };
    assert!(!got.records.is_empty());
    for r in &got.records {
        let from = r.peer.expect("only libp2p nodes hold the record");
        assert!(lp_peers.contains(&from), "record from {from}");
        assert_eq!(r.record.value, b_value);
        assert_eq!(r.record.publisher, Some(lp[1].peer));
    }

    // No meshwire node holds the provider record: it was announced before they joined.
    for node in &mw {
        let k = k2.clone();
        let held = node
            .call(move |s| {
                let now = tokio::time::Instant::now().into_std();
                !s.behaviour()
                    .kad
                    .engine()
                    .provider_store()
                    .get(&k, now)
                    .is_empty()
            })
            .await;
        assert!(!held);
    }
    let k = k2.clone();
    let id = mw[2]
        .call(move |s| s.behaviour_mut().kad.get_providers(k))
        .await;
    let (result, _, _) = mw_finished(&mut mw[2], id).await;
    let mw_kad::QueryResult::GetProviders(Ok(found)) = result else {
        panic!("meshwire GET_PROVIDERS of the libp2p provider: {result:?}")
    };
    let provider = found
        .providers
        .iter()
        .find(|p| p.id == lp[1].peer)
        .expect("the libp2p provider is found");
    // rust-libp2p announces its addresses with a trailing /p2p/<id>.
    let full = meshwire_transport::with_peer_id(&lp[1].addr, lp[1].peer);
    assert!(
        provider.addrs.contains(&lp[1].addr) || provider.addrs.contains(&full),
        "with its address: {:?}",
        provider.addrs
    );

    // ---- 3. Everyone finds everyone --------------------------------------------------------
    let all: Vec<PeerId> = mw_peers.iter().chain(&lp_peers).copied().collect();
    for (i, node) in mw.iter_mut().enumerate() {
        for target in all.iter().copied().filter(|p| *p != mw_peers[i]) {
            let id = node
                .call(move |s| s.behaviour_mut().kad.find_peer(target))
                .await;
            let (result, _, _) = mw_finished(node, id).await;
            let mw_kad::QueryResult::FindNode(Ok(ok)) = result else {
                panic!("meshwire lookup: {result:?}")
            };
            assert_eq!(
                ok.peers.first().map(|p| p.id),
                Some(target),
                "meshwire node {i} finds {target}"
            );
        }
    }
    for (i, node) in lp.iter_mut().enumerate() {
        for target in all.iter().copied().filter(|p| *p != lp_peers[i]) {
            let t = to_lp(&target);
            let id = node
                .call(move |s| s.behaviour_mut().kad.get_closest_peers(t))
                .await;
            let steps = lp_finished(node, id).await;
            let lp_kad::QueryResult::GetClosestPeers(Ok(ok)) = &steps.last().unwrap().result else {
                panic!("libp2p lookup: {:?}", steps.last().unwrap().result)
            };
            assert_eq!(
                ok.peers.first().map(|p| p.peer_id),
                Some(t),
                "libp2p node {i} finds {target}: {:?}",
                ok.peers
            );
        }
    }

    // ---- 4. libp2p reads what meshwire wrote -----------------------------------------------
    let a_key = b"written-by-meshwire".to_vec();
    let a_value = b"hello from meshwire".to_vec();
    let record = Record::new(a_key.clone(), a_value.clone());
    let id = mw[1]
        .call(move |s| s.behaviour_mut().kad.put_value(record, 5))
        .await
        .expect("stored locally");
    let (result, _, _) = mw_finished(&mut mw[1], id).await;
    let mw_kad::QueryResult::PutValue(Ok(put)) = result else {
        panic!("meshwire PUT: {result:?}")
    };
    assert_eq!(
        put.successes, 5,
        "stored at the 2 other meshwire and 3 libp2p nodes"
    );
    let k1 = mw_kad::discovery::service_key("meshwire-provided");
    let k = k1.clone();
    let id = mw[1]
        .call(move |s| s.behaviour_mut().kad.start_providing(k))
        .await
        .expect("provider store");
    let (result, _, _) = mw_finished(&mut mw[1], id).await;
    assert!(
        matches!(result, mw_kad::QueryResult::StartProviding(Ok(_))),
        "{result:?}"
    );

    // Every libp2p node decoded the PUT_VALUE and the ADD_PROVIDER.
    let mw1 = to_lp(&mw[1].peer);
    for node in &lp {
        let (key, value) = (a_key.clone(), a_value.clone());
        let stored = node
            .call(move |s| {
                s.behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&lp_kad::RecordKey::new(&key))
                    .map(|r| (r.value == value, r.publisher))
            })
            .await;
        assert_eq!(
            stored,
            Some((true, Some(mw1))),
            "libp2p stored meshwire's record"
        );
        // ADD_PROVIDER has no response: wait for it to be processed.
        lp_eventually(
            node,
            "libp2p stores meshwire's provider record",
            |s, key| {
                let k = lp_kad::RecordKey::new(&key.to_vec());
                let local = *s.local_peer_id();
                s.behaviour_mut()
                    .kad
                    .store_mut()
                    .providers(&k)
                    .iter()
                    .any(|p| p.provider != local && !p.addresses.is_empty())
            },
            k1.as_bytes(),
        )
        .await;
    }

    // Delete the libp2p copies: now only meshwire nodes hold the record and the provider.
    for node in &lp {
        let (key, k1) = (a_key.clone(), k1.to_vec());
        node.call(move |s| {
            let store = s.behaviour_mut().kad.store_mut();
            store.remove(&lp_kad::RecordKey::new(&key));
            store.remove_provider(&lp_kad::RecordKey::new(&k1), &mw1);
        })
        .await;
    }
    let key = lp_kad::RecordKey::new(&a_key);
    let id = lp[2]
        .call(move |s| s.behaviour_mut().kad.get_record(key))
        .await;
    let mut sources = HashSet::new();
    for step in lp_finished(&mut lp[2], id).await {
        if let lp_kad::QueryResult::GetRecord(Ok(lp_kad::GetRecordOk::FoundRecord(r))) = step.result
        {
            assert_eq!(r.record.value, a_value);
            assert_eq!(r.record.publisher, Some(mw1));
            sources.insert(to_mw(&r.peer.expect("from a remote peer")));
        }
    }
    assert!(!sources.is_empty(), "libp2p GET found the meshwire record");
    assert!(
        sources.iter().all(|p| mw_peers.contains(p)),
        "only meshwire nodes hold it: {sources:?}"
    );

    let key = lp_kad::RecordKey::new(&k1.to_vec());
    let id = lp[2]
        .call(move |s| s.behaviour_mut().kad.get_providers(key))
        .await;
    let mut providers = HashSet::new();
    for step in lp_finished(&mut lp[2], id).await {
        if let lp_kad::QueryResult::GetProviders(Ok(lp_kad::GetProvidersOk::FoundProviders {
            providers: p,
            ..
        })) = step.result
        {
            providers.extend(p);
        }
    }
    assert!(
        providers.contains(&mw1),
        "libp2p found the meshwire provider: {providers:?}"
    );
}
