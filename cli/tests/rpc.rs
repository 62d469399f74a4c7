//! `meshwire rpc`: a `meshwire rpc serve` process announces a procedure in the DHT of a
//! `meshwire node`; `meshwire rpc call` processes that know only that node find it and get
//! the answer; the realm separates providers; bad arguments are refused.

mod common;

use common::{new_key, node_config, run, NodeProc};

const NAME: &str = "org.meshwire.test.echo";

#[test]
fn rpc_call_finds_an_rpc_serve_process_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = new_key(dir.path(), "a.key");
    let (kb, _) = new_key(dir.path(), "b.key");
    let a = NodeProc::start(&node_config(dir.path(), "a.toml", &ka, None, ""));
    let b_cfg = node_config(
        dir.path(),
        "b.toml",
        &kb,
        Some(&a.addr),
        "[rpc]\nrealm = \"blue\"\n",
    );
    let b = NodeProc::spawn(
        &[
            "rpc",
            "serve",
            NAME,
            "--echo",
            "--config",
            b_cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        b.wait_line("meshwire: serving rpc ").trim(),
        format!("{NAME} in realm blue")
    );
    let status: serde_json::Value = serde_json::from_str(&b.get("/status.json")).unwrap();
    assert_eq!(status["rpc_served"], serde_json::json!([NAME]));

    // The caller knows only A; the provider is found through A's provider records.
    let arg = r#"{"hello":["world",1]}"#;
    let out = run(&[
        "rpc",
        "call",
        NAME,
        arg,
        "--realm",
        "blue",
        "--bootstrap",
        &a.addr,
    ]);
    assert!(
        out.status.success(),
        "{out:?}\n{:#?}",
        b.lines.lock().unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), arg);

    // Another realm has no provider of the name: the call fails once its timeout passes.
    let out = run(&[
        "rpc",
        "call",
        NAME,
        "{}",
        "--bootstrap",
        &a.addr,
        "--timeout",
        "2s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no providers"), "{err}");

    // An argument that is not JSON is refused before anything is sent.
    let out = run(&["rpc", "call", NAME, "{nope", "--bootstrap", &a.addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not JSON"), "{err}");
    // And so is a name that is not reverse-DNS.
    let out = run(&["rpc", "call", "echo", "{}", "--bootstrap", &a.addr]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("procedure name"));
}
