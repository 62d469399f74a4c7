//! Helpers of the CLI's integration tests: `meshwire` processes, their progress lines and a
//! minimal HTTP GET.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshwire"));
    // The tests' environment must not leak overrides into the nodes.
    for (k, _) in std::env::vars() {
        if k.starts_with("MESHWIRE") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `meshwire args…` to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// `meshwire id new <dir>/<name>`: the key file and its peer id.
pub fn new_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = run(&["id", "new", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// A running `meshwire node`; killed when dropped.
pub struct NodeProc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub peer: String,
    pub addr: String,
    pub http: String,
}

impl NodeProc {
    /// Starts `meshwire node --config <config>` and waits for its peer id, listen address and
    /// metrics address.
    pub fn start(config: &Path) -> NodeProc {
        Self::start_with(config, &[])
    }

    /// [`NodeProc::start`] with extra environment variables.
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> NodeProc {
        Self::spawn(&["node", "--config", config.to_str().unwrap()], env)
    }

    /// Starts `meshwire args…` (a node: `node` or `rpc serve`), waiting as [`NodeProc::start`].
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> NodeProc {
        let mut command = bin();
        command.args(args).envs(env.iter().copied());
        let mut node = Self::collect(command);
        node.peer = node.wait_line("meshwire: peer id ").trim().to_string();
        node.addr = node.wait_line("meshwire: listening on ").trim().to_string();
        let m = node.wait_line("meshwire: metrics on http://");
        node.http = m.split('/').next().unwrap().to_string();
        node
    }

    /// Runs `command` (a `meshwire` process, or one wrapped, e.g. in `ip netns exec`) with its
    /// stdout and stderr lines collected (stderr lines prefixed `stderr: `); waits for nothing.
    pub fn collect(mut command: Command) -> NodeProc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        NodeProc {
            child,
            lines,
            peer: String::new(),
            addr: String::new(),
            http: String::new(),
        }
    }

    /// The rest of the first line starting with `prefix`, waiting up to 20 s for it.
    pub fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l[prefix.len()..].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line {prefix:?} in {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first output line containing `needle`, waiting up to 20 s for it.
    pub fn wait_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} in {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` on the node's HTTP server.
    pub fn get(&self, path: &str) -> String {
        http_get(&self.http, path)
    }

    /// The value of the sample `name` (with its labels, as printed) in `/metrics`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        metric_in(&self.get("/metrics"), sample)
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `sample` (`name` or `name{labels}`) in a Prometheus text.
pub fn metric_in(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A minimal HTTP/1.0 GET; the body.
pub fn http_get(host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// Polls `check` every 100 ms until it is true or `limit` passes.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node config for loopback tests: fast SWIM, metrics on a free port.
pub fn node_config(
    dir: &Path,
    name: &str,
    key: &Path,
    bootstrap: Option<&str>,
    extra: &str,
) -> PathBuf {
    let bootstrap = bootstrap.map_or(String::new(), |b| format!("\"{b}\""));
    let text = format!(
        r#"[node]
key = "{key}"
listen = ["/ip4/127.0.0.1/udp/0/quic-v1"]
bootstrap = [{bootstrap}]
realms = ["org.meshwire.test"]
shutdown_grace = "500ms"

[metrics]
listen = "127.0.0.1:0"
refresh = "500ms"

[log]
filter = "warn"

[swim]
probe_interval = "200ms"
probe_timeout = "100ms"
gossip_interval = "50ms"
push_pull_interval = "2s"
rejoin_interval = "500ms"

[ping]
interval = "500ms"
{extra}
"#,
        key = key.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
