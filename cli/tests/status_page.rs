//! The status page in a real browser: headless Chromium loads it from running nodes, runs its
//! script, and the rendered peers table, SWIM members and relay reservations show the other
//! nodes. A screenshot is saved under `target/tmp/` (`CARGO_TARGET_TMPDIR`).
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Without it the test fails in CI
//! (`CI=true`) and is skipped with a printed reason elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, new_key, node_config, NodeProc};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
}

/// Runs headless Chromium on `url` with `extra` (`--dump-dom`, `--screenshot=…`), giving the
/// page's script 3 s of virtual time; stdout.
fn browse(chromium: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn status_page_shows_peers_members_and_reservations_in_a_browser() {
    let Some(chromium) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is not installed (CI=true: .ci/run installs it)");
        }
        println!("skipped: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = new_key(dir.path(), "a.key");
    let (kb, _) = new_key(dir.path(), "b.key");
    let (kc, _) = new_key(dir.path(), "c.key");
    let a = NodeProc::start(&node_config(dir.path(), "a.toml", &ka, None, ""));
    // B also listens through A as a relay.
    let b_cfg = node_config(dir.path(), "b.toml", &kb, Some(&a.addr), "");
    let text = std::fs::read_to_string(&b_cfg).unwrap().replace(
        "realms = [",
        &format!("relay_listen = [\"{}\"]\nrealms = [", a.addr),
    );
    std::fs::write(&b_cfg, text).unwrap();
    let b = NodeProc::start(&b_cfg);
    // C reaches the network only through B's relayed address: a relayed connection.
    let line = b.wait_containing("/p2p-circuit/p2p/");
    let b_relayed = line.strip_prefix("meshwire: listening on ").unwrap();
    let c = NodeProc::start(&node_config(dir.path(), "c.toml", &kc, Some(b_relayed), ""));
    let alive = r#"meshwire_swim_members{realm="org.meshwire.test",state="alive"}"#;
    let relayed = r#"meshwire_connections{kind="relayed"}"#;
    eventually(
        Duration::from_secs(20),
        "a realm of three, C relayed to B",
        || {
            a.metric(alive) == Some(2.0)
                && a.metric("relay_reservations") == Some(1.0)
                && b.metric("meshwire_relay_client_reservations") == Some(1.0)
                && b.metric(relayed) >= Some(1.0)
        },
    );

    let profile = dir.path().join("chromium");
    let page = |n: &NodeProc| {
        browse(
            &chromium,
            &profile,
            &format!("http://{}/", n.http),
            &["--dump-dom"],
        )
    };
    let row = |peer: &str| format!("<tr class=\"peer\" data-peer=\"{peer}\">");

    // A (the relay): B in the peers table with RTT, protocols and tags; both members; the
    // reservation held on it.
    let dom = page(&a);
    assert!(
        dom.contains(&row(&b.peer)),
        "B not in A's peers table:\n{dom}"
    );
    assert_eq!(dom.matches("<tr class=\"member\"").count(), 2, "{dom}");
    assert!(dom.contains(&c.peer), "C not on A's page:\n{dom}");
    assert!(dom.contains("as a relay: 1 reservations"), "{dom}");
    assert!(dom.contains(&a.peer), "{dom}");
    assert!(dom.contains("/ipfs/kad/1.0.0"), "protocols: {dom}");
    assert!(dom.contains("kad="), "connection-manager tags: {dom}");
    assert!(dom.contains(" ms</td>"), "RTTs: {dom}");

    // B: its reservation on A, A protected (tag `relay`), and C connected through A.
    let dom_b = page(&b);
    let held = format!("reservations held on relays: {} (expires in", a.peer);
    assert!(dom_b.contains(&held), "{dom_b}");
    assert!(dom_b.contains("<td>relay</td>"), "protection: {dom_b}");
    assert!(
        dom_b.contains(&row(&a.peer)),
        "A not in B's peers table:\n{dom_b}"
    );
    assert!(
        dom_b.contains(&row(&c.peer)),
        "C not in B's peers table:\n{dom_b}"
    );
    let via = format!("inbound relayed via {}", a.peer);
    assert!(dom_b.contains(&via), "{dom_b}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &chromium,
        &profile,
        &format!("http://{}/", b.http),
        &[&format!("--screenshot={}", shot.display())],
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot {shot:?}: {size} bytes");
    println!("screenshot: {}", shot.display());
}
