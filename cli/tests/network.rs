//! Three `meshwire node` processes from config files on loopback (one bootstrap): they form
//! a DHT and a SWIM realm (seen through `/metrics`), answer `meshwire ping` and `meshwire
//! kad`, every metric the Grafana dashboards query exists, and a node stopped with SIGTERM
//! is reported `left` by the others, never `failed`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, metric_in, new_key, node_config, run, NodeProc};

const ALIVE: &str = r#"meshwire_swim_members{realm="org.meshwire.test",state="alive"}"#;
const LEFT: &str = r#"meshwire_swim_members{realm="org.meshwire.test",state="left"}"#;
const FAILED: &str = r#"meshwire_swim_members{realm="org.meshwire.test",state="failed"}"#;

/// The metric names a dashboard's queries use.
fn dashboard_metrics(json: &str) -> BTreeSet<String> {
    let dash: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut names = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            {
                if [
                    "swarm_",
                    "rcmgr_",
                    "connmgr_",
                    "relay_",
                    "meshwire_",
                    "pubsub_",
                ]
                .iter()
                .any(|p| token.starts_with(p))
                {
                    names.insert(token.to_string());
                }
            }
        }
    }
    names
}

/// Whether `/metrics` text declares `name` (a family's `# TYPE` line — counters are declared
/// without `_total` — or a sample).
fn declares(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        let base = name.strip_suffix("_total").unwrap_or(name);
        l == format!("# TYPE {name} gauge")
            || l.starts_with(&format!("# TYPE {base} counter"))
            || l.starts_with(&format!("# TYPE {name} "))
            || l.starts_with(&format!("{name} "))
            || l.starts_with(&format!("{name}{{"))
    })
}

#[test]
fn three_nodes_form_a_dht_and_a_realm_answer_ping_and_leave_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = new_key(dir.path(), "a.key");
    let (kb, _) = new_key(dir.path(), "b.key");
    let (kc, _) = new_key(dir.path(), "c.key");
    // A logs its connections (info), so the reason C closes with shows.
    let a = NodeProc::start_with(
        &node_config(dir.path(), "a.toml", &ka, None, ""),
        &[("RUST_LOG", "warn,meshwire_cli=info")],
    );
    let b = NodeProc::start(&node_config(dir.path(), "b.toml", &kb, Some(&a.addr), ""));
    // C listens through A as a relay too, and logs JSON (from the environment).
    let c_cfg = node_config(dir.path(), "c.toml", &kc, Some(&a.addr), "");
    let text = std::fs::read_to_string(&c_cfg).unwrap().replace(
        "realms = [",
        &format!("relay_listen = [\"{}\"]\nrealms = [", a.addr),
    );
    std::fs::write(&c_cfg, text).unwrap();
    let mut c = NodeProc::start_with(
        &c_cfg,
        &[("MESHWIRE_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    );
    let nodes = [&a, &b, &c];

    // A DHT and a realm: every routing table and every member list holds the two others.
    eventually(Duration::from_secs(20), "DHT and realm of three", || {
        nodes.iter().all(|n| {
            let m = n.get("/metrics");
            metric_in(&m, "meshwire_kad_routing_table_peers") == Some(2.0)
                && metric_in(&m, ALIVE) == Some(2.0)
        })
    });
    eventually(Duration::from_secs(10), "C's reservation on A", || {
        a.metric("relay_reservations") == Some(1.0)
            && c.metric("meshwire_relay_client_reservations") == Some(1.0)
    });
    let boot = b.wait_line("meshwire: bootstrap: ");
    assert!(
        boot.contains("peers in the routing table"),
        "{boot}: {:#?}",
        b.lines.lock().unwrap()
    );

    // Every metric the dashboards query is served.
    let text = a.get("/metrics");
    let dir_dash = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir_dash).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let names = dashboard_metrics(&std::fs::read_to_string(&path).unwrap());
            assert!(!names.is_empty(), "{path:?} queries nothing");
            for name in names {
                assert!(
                    declares(&text, &name),
                    "{path:?} queries {name}, not in /metrics:\n{text}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} metrics checked");

    // ping from a short-lived node.
    let out = run(&["ping", &b.addr, "--count", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.matches(&format!("ping {} rtt=", b.peer)).count(),
        2,
        "{stdout}"
    );

    // ping through the relay: a short-lived node dials C's relayed address.
    let relayed = c.wait_containing("/p2p-circuit/p2p/");
    let relayed = relayed.strip_prefix("meshwire: listening on ").unwrap();
    let out = run(&["ping", relayed, "--count", "4"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("ping {} rtt=", c.peer)));
    // C accepted the relayed connection, so it led a DCUtR upgrade to a direct one.
    eventually(Duration::from_secs(10), "C's hole punch upgrade", || {
        c.metric(r#"holepunch_upgrades_total{role="initiator",result="succeeded"}"#) >= Some(1.0)
    });
    // C logs JSON objects on stderr (MESHWIRE_LOG_FORMAT=json, RUST_LOG=info).
    let json_lines: Vec<String> = c
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("stderr: ").map(str::to_string))
        .collect();
    assert!(!json_lines.is_empty());
    for l in &json_lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }

    // kad: a value put through A is read through C; a provider announced through B is found
    // through C.
    let out = run(&[
        "kad",
        "--bootstrap",
        &a.addr,
        "put",
        "greeting",
        "hello meshwire",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["kad", "--bootstrap", &c.addr, "get", "greeting"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello meshwire"
    );
    let (kd, peer_d) = new_key(dir.path(), "d.key");
    let key_d = kd.to_str().unwrap();
    let out = run(&[
        "kad",
        "--key",
        key_d,
        "--bootstrap",
        &b.addr,
        "provide",
        "service/x",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["kad", "--bootstrap", &c.addr, "providers", "service/x"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&peer_d),
        "{out:?}"
    );
    let out = run(&["kad", "--bootstrap", &c.addr, "get", "absent"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // SIGTERM: C leaves; A and B see `left`, never `failed`.
    let status = c.terminate();
    assert!(
        status.success(),
        "{status:?}: {:#?}",
        c.lines.lock().unwrap()
    );
    let summary = c.wait_line("meshwire: left 1 realms");
    assert!(
        summary.contains("released 1 relay reservations"),
        "{summary}"
    );
    a.wait_containing("meshwire node shutting down (SIGTERM)");
    eventually(Duration::from_secs(5), "A released C's reservation", || {
        a.metric("relay_reservations") == Some(0.0)
    });
    for n in [&a, &b] {
        eventually(Duration::from_secs(10), "C reported left", || {
            n.metric(LEFT) == Some(1.0)
        });
        n.wait_line(&format!(
            "meshwire: swim org.meshwire.test: {} left",
            c.peer
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    for n in [&a, &b] {
        let m = n.get("/metrics");
        assert_eq!(metric_in(&m, FAILED), Some(0.0));
        assert_eq!(metric_in(&m, ALIVE), Some(1.0));
        assert!(!n
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.ends_with(" failed")));
    }
}
