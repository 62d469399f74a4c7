//! Bad configs and key files: each stops `meshwire` with exit status 1 and one line on stderr
//! naming the cause (no panic, no backtrace).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{new_key, run};

/// Runs `meshwire node --config <file>` (or the given args) and returns its one-line error.
fn error_of(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("meshwire: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err.trim_end().to_string()
}

fn config(dir: &Path, text: &str) -> String {
    let p = dir.join("meshwire.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn id_new_writes_a_0600_key_and_show_prints_the_same_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, peer) = new_key(dir.path(), "node.key");
    assert!(peer.starts_with("12D3KooW"), "{peer}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = run(&["id", "show", path.to_str().unwrap()]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), peer);
    // Never overwritten.
    let err = error_of(&["id", "new", path.to_str().unwrap()]);
    assert!(
        err.ends_with("already exists (refusing to overwrite a key)"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_line_key_and_accepted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "[node]\nkey = \"k\"\n\n[kad]\nk = 20\nalfa = 3\n",
    );
    let err = error_of(&["node", "--config", &c]);
    assert!(err.contains("meshwire.toml:6:1: kad.alfa: unknown field `alfa`, expected one of `mode`, `k`, `alpha`"), "{err}");
}

#[test]
fn unknown_section_names_the_accepted_sections() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "[kademlia]\nk = 20\n");
    let err = error_of(&["node", "--config", &c]);
    assert!(
        err.contains(
            "meshwire.toml:1:2: unknown field `kademlia`, expected one of `node`, `metrics`"
        ),
        "{err}"
    );
}

#[test]
fn wrong_type_names_line_key_and_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "[connmgr]\nhigh_water = \"lots\"\n");
    let err = error_of(&["node", "--config", &c]);
    assert!(
        err.contains(
            "meshwire.toml:2:14: connmgr.high_water: invalid type: string \"lots\", expected usize"
        ),
        "{err}"
    );
    let c = config(dir.path(), "[log]\nformat = \"xml\"\n");
    let err = error_of(&["node", "--config", &c]);
    assert!(
        err.contains("log.format: unknown variant `xml`, expected `text` or `json`"),
        "{err}"
    );
}

#[test]
fn bad_address_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = new_key(dir.path(), "node.key");
    let c = config(
        dir.path(),
        &format!(
            "[node]\nkey = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp\"]\n",
            key.display()
        ),
    );
    let err = error_of(&["node", "--config", &c]);
    assert!(
        err.contains("meshwire.toml:3: node.listen: \"/ip4/127.0.0.1/tcp\" is not a multiaddr"),
        "{err}"
    );
}

#[test]
fn bad_override_names_the_variable_or_flag() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "");
    let out = common::bin()
        .args(["node", "--config", &c])
        .env("MESHWIRE__SWARM__DIAL_TIMEOUT", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err.starts_with("meshwire: error: MESHWIRE__SWARM__DIAL_TIMEOUT: swarm.dial_timeout: invalid duration \"soon\""), "{err}");
    let err = error_of(&["node", "--config", &c, "--set", "kad.k=-1"]);
    assert!(
        err.contains("--set kad.k=-1: kad.k: invalid value: integer `-1`"),
        "{err}"
    );
}

#[test]
fn unreadable_config_names_the_file_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let err = error_of(&["node", "--config", missing.to_str().unwrap()]);
    assert!(
        err.ends_with("absent.toml: No such file or directory (os error 2)"),
        "{err}"
    );
    // A directory is not readable as a file (whoever runs the test, root included).
    let err = error_of(&["node", "--config", dir.path().to_str().unwrap()]);
    assert!(err.contains("Is a directory"), "{err}");
}

#[test]
fn missing_key_file_setting_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "[node]\nlisten = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\n",
    );
    let err = error_of(&["node", "--config", &c]);
    assert!(err.contains("node.key: no key file; give --key <path> or node.key (create one with `meshwire id new <path>`)"), "{err}");
}

#[test]
fn too_open_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = new_key(dir.path(), "node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = error_of(&["node", "--key", key.to_str().unwrap()]);
    assert!(err.contains("node.key: permissions 0644 are too open (group or others can access the key); run `chmod 600"), "{err}");
    let err = error_of(&["id", "show", key.to_str().unwrap()]);
    assert!(err.contains("too open"), "{err}");
}

#[test]
fn garbage_or_missing_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = error_of(&["node", "--key", key.to_str().unwrap()]);
    assert!(
        err.contains("bad.key: not an ed25519 private key in libp2p's protobuf encoding"),
        "{err}"
    );
    let err = error_of(&["id", "show", dir.path().join("none.key").to_str().unwrap()]);
    assert!(
        err.ends_with("none.key: No such file or directory (os error 2)"),
        "{err}"
    );
}

#[test]
fn flags_are_read_from_their_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = new_key(dir.path(), "node.key");
    // MESHWIRE_KEY names the key file, MESHWIRE_LISTEN the listen addresses (comma-separated):
    // the listen address is refused, so the key was found and loaded.
    let out = common::bin()
        .arg("node")
        .env("MESHWIRE_KEY", &key)
        .env("MESHWIRE_LISTEN", "/ip4/127.0.0.1/udp/0/quic-v1,bogus")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "meshwire: error: node.listen: \"bogus\" is not a multiaddr (invalid multiaddr); expected e.g. \"/ip4/127.0.0.1/udp/4001/quic-v1\""
    );
}
