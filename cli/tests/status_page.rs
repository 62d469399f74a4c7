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
    let c = NodeProc::start(&node_config(dir.path(), "c.toml", &kc, Some(&a.addr), ""));
    eventually(
        Duration::from_secs(20),
        "A sees B and C, B holds a reservation on A",
        || {
            a.metric("meshwire_peers") == Some(2.0)
                && a.metric(r#"meshwire_swim_members{realm="org.meshwire.test",state="alive"}"#)
                    == Some(2.0)
                && a.metric("relay_reservations") == Some(1.0)
                && b.metric("meshwire_relay_client_reservations") == Some(1.0)
        },
    );

    let profile = dir.path().join("chromium");
    let dom = browse(
        &chromium,
        &profile,
        &format!("http://{}/", a.http),
        &["--dump-dom"],
    );
    // The script rendered one row per peer, and the members.
    for peer in [&b.peer, &c.peer] {
        assert!(
            dom.contains(&format!("<tr class=\"peer\" data-peer=\"{peer}\">")),
            "{peer} not in the peers table:\n{dom}"
        );
    }
    assert_eq!(dom.matches("<tr class=\"peer\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("<tr class=\"member\"").count(), 2, "{dom}");
    assert!(dom.contains("as a relay: 1 reservations"), "{dom}");
    assert!(dom.contains(&a.peer), "{dom}");
    assert!(dom.contains("/ipfs/kad/1.0.0"), "protocols: {dom}");
    assert!(dom.contains("kad="), "connection-manager tags: {dom}");
    assert!(dom.contains(" ms</td>"), "RTTs: {dom}");

    let dom_b = browse(
        &chromium,
        &profile,
        &format!("http://{}/", b.http),
        &["--dump-dom"],
    );
    assert!(
        dom_b.contains(&format!(
            "reservations held on relays: {} (expires in",
            a.peer
        )),
        "{dom_b}"
    );
    // The relay is protected while B holds a reservation on it.
    assert!(dom_b.contains("<td>relay</td>"), "protection: {dom_b}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &chromium,
        &profile,
        &format!("http://{}/", a.http),
        &[&format!("--screenshot={}", shot.display())],
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot {shot:?}: {size} bytes");
    println!("screenshot: {}", shot.display());
}
