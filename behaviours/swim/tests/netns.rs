//! SWIM across five hosts in Linux network namespaces: a host cut off from the network (its
//! link down) is declared failed by the four others; once its link is back it rejoins on its
//! own and is alive again everywhere.
//!
//! The test builds its lab itself: one namespace per host and one holding a bridge, joined by
//! veth pairs, addresses 10.77.0.1–5/24 (traffic only ever goes to these addresses of the
//! test's own namespaces). Every host runs the `swim-node` example (built by `cargo test`) with
//! `ip netns exec`, which prints one line per membership event. Namespace and interface names
//! carry the test's process id, so parallel runs do not clash; a guard removes namespaces and
//! processes even when the test fails.
//!
//! It needs root and the `ip` tool (iproute2). Without them it is skipped with the reason
//! printed on standard error, unless `MESHWIRE_REQUIRE_NETNS=1` (set by `.ci/run` in CI), which
//! turns the skip into a failure.
//!
//! Run with output: `cargo test -p meshwire-swim --test netns -- --nocapture` (as root). With
//! `MESHWIRE_NETNS_LOG_DIR=<dir>` each node's log (filtered by `RUST_LOG`) is written to
//! `<dir>/node<i>.log`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HOSTS: usize = 5;
const PORT: u16 = 4001;
/// The protocol period the nodes run with.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const PUSH_PULL_INTERVAL: Duration = Duration::from_secs(2);
const REJOIN_INTERVAL: Duration = Duration::from_secs(1);

fn ip_of(host: usize) -> String {
    format!("10.77.0.{}", host + 1)
}

/// Writes straight to the process's standard error, which the test harness does not capture,
/// so a skip is always visible.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("network namespaces need Linux".into());
    }
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("not root (effective uid {uid})")),
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`ip -V` failed: {}", o.status)),
        Err(e) => Some(format!("the `ip` tool (iproute2) is missing: {e}")),
    }
}

/// Skips (returns `true`) with the reason printed, or panics if skipping is forbidden.
fn skip(reason: &str) -> bool {
    if std::env::var("MESHWIRE_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("network-namespace test cannot run: {reason} (MESHWIRE_REQUIRE_NETNS=1 forbids skipping)");
    }
    say(&format!(
        "netns: SKIPPED: {reason} (run as root with iproute2; MESHWIRE_REQUIRE_NETNS=1 makes this a failure)"
    ));
    true
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The lab: namespaces, links and node processes; all removed on drop.
struct Lab {
    tag: String,
    bridge_ns: String,
    hosts: Vec<String>,
    /// Veth ends created in the root namespace, deleted on drop if still there.
    root_links: Vec<String>,
    nodes: Vec<Option<(Child, ChildStdin)>>,
}

impl Lab {
    fn host_link(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    fn bridge_link(&self, i: usize) -> String {
        format!("{}b{i}", self.tag)
    }

    fn new() -> Result<Lab, String> {
        let pid = std::process::id();
        let mut lab = Lab {
            // Interface names are at most 15 bytes: "mws" + pid (≤ 7 digits) + "h4".
            tag: format!("mws{pid}"),
            bridge_ns: format!("mwswim-{pid}-br"),
            hosts: (0..HOSTS).map(|i| format!("mwswim-{pid}-h{i}")).collect(),
            root_links: Vec::new(),
            nodes: (0..HOSTS).map(|_| None).collect(),
        };
        let br = lab.bridge_ns.clone();
        run(&["netns", "add", &br])?;
        run(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..HOSTS {
            let ns = lab.hosts[i].clone();
            let (vh, vb) = (lab.host_link(i), lab.bridge_link(i));
            run(&["netns", "add", &ns])?;
            run(&["-n", &ns, "link", "set", "lo", "up"])?;
            lab.root_links.push(vh.clone());
            run(&["link", "add", &vh, "type", "veth", "peer", "name", &vb])?;
            run(&["link", "set", &vb, "netns", &br])?;
            run(&["link", "set", &vh, "netns", &ns])?;
            lab.root_links.pop();
            run(&["-n", &ns, "link", "set", &vh, "name", "eth0"])?;
            let addr = format!("{}/24", ip_of(i));
            run(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run(&["-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["-n", &br, "link", "set", &vb, "master", "br0"])?;
            run(&["-n", &br, "link", "set", &vb, "up"])?;
        }
        Ok(lab)
    }

    /// Takes host `i`'s link down (on the bridge side) or back up.
    fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        run(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &self.bridge_link(i),
            state,
        ])
    }

    fn start(
        &mut self,
        i: usize,
        binary: &PathBuf,
        seed: Option<&str>,
        lines: mpsc::Sender<(usize, Instant, String)>,
    ) -> Result<(), String> {
        let listen = format!("/ip4/{}/udp/{PORT}/quic-v1", ip_of(i));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i]])
            .arg(binary)
            .args(["--listen", &listen])
            .args([
                "--probe-interval-ms",
                &PROBE_INTERVAL.as_millis().to_string(),
            ])
            .args([
                "--push-pull-interval-ms",
                &PUSH_PULL_INTERVAL.as_millis().to_string(),
            ])
            .args([
                "--rejoin-interval-ms",
                &REJOIN_INTERVAL.as_millis().to_string(),
            ])
            .arg("--stdin-control")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // MESHWIRE_NETNS_LOG_DIR=<dir>: each node's log (RUST_LOG) goes to <dir>/node<i>.log.
        match std::env::var_os("MESHWIRE_NETNS_LOG_DIR") {
            Some(dir) => {
                let path = PathBuf::from(dir).join(format!("node{i}.log"));
                let file =
                    std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                cmd.stderr(file);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        let mut child = cmd.spawn().map_err(|e| format!("start node {i}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send((i, Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        self.nodes[i] = Some((child, stdin));
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (child, stdin) in self.nodes.iter_mut().flatten() {
            let _ = stdin.flush();
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge_ns)) {
            let _ = run(&["netns", "del", ns]);
        }
        for link in &self.root_links {
            let _ = run(&["link", "del", link]);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Alive,
    Suspect,
    Failed,
    Left,
}

/// What the test knows from the nodes' output.
#[derive(Default)]
struct Cluster {
    peer: HashMap<usize, String>,
    listening: HashMap<usize, String>,
    /// `views[i][peer]`: what host `i` last said about `peer`.
    views: HashMap<usize, HashMap<String, View>>,
    /// Failure declarations: (host, peer, when).
    failed: Vec<(usize, String, Instant)>,
}

impl Cluster {
    fn apply(&mut self, i: usize, at: Instant, line: &str) {
        let mut words = line.split_whitespace();
        let (Some(what), Some(arg)) = (words.next(), words.next()) else {
            return;
        };
        let view = match what {
            "peer" => {
                self.peer.insert(i, arg.to_owned());
                return;
            }
            "listening" => {
                self.listening.insert(i, arg.to_owned());
                return;
            }
            "joined" | "alive" | "updated" => View::Alive,
            "suspected" => View::Suspect,
            "failed" => {
                self.failed.push((i, arg.to_owned(), at));
                View::Failed
            }
            "left" => View::Left,
            _ => return,
        };
        self.views
            .entry(i)
            .or_default()
            .insert(arg.to_owned(), view);
    }

    fn view(&self, i: usize, of: usize) -> Option<View> {
        let peer = self.peer.get(&of)?;
        self.views.get(&i)?.get(peer).copied()
    }

    fn peer_index(&self, peer: &str) -> Option<usize> {
        self.peer.iter().find(|(_, p)| *p == peer).map(|(i, _)| *i)
    }
}

/// Reads node output until `done` holds, for at most `timeout`.
fn wait_for(
    rx: &mpsc::Receiver<(usize, Instant, String)>,
    cluster: &mut Cluster,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Cluster) -> bool,
) -> Duration {
    let start = Instant::now();
    while !done(cluster) {
        let left = timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok((i, at, line)) => cluster.apply(i, at, &line),
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() >= timeout => {
                panic!("netns: timed out after {timeout:?} waiting for {what}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("netns: every node exited while waiting for {what}")
            }
        }
    }
    start.elapsed()
}

/// The time within which every live member declares an unreachable one failed (the same
/// reasoning as in `tests/swarm.rs`), for nodes started with [`PROBE_INTERVAL`].
fn failure_bound(members: usize) -> Duration {
    let mut c = meshwire_swim::Config::default().swim;
    c.probe_interval = PROBE_INTERVAL;
    c.gossip_interval = Some(PROBE_INTERVAL / 5);
    let first_probe = c.probe_interval * (2 * members as u32);
    let max = c.suspicion_min_timeout(members + 1) * c.suspicion_max_timeout_mult;
    let spread = c.gossip_interval.unwrap_or(c.probe_interval) * 5;
    first_probe + c.probe_interval + spread + max + spread
}

fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/netns-<hash> → target/<profile>/examples/swim-node
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    dir.join("examples").join("swim-node")
}

#[test]
fn five_hosts_cut_off_host_fails_and_rejoins() {
    if let Some(reason) = missing_prerequisite() {
        if skip(&reason) {
            return;
        }
    }
    let binary = node_binary();
    assert!(
        binary.exists(),
        "{} not found: `cargo test -p meshwire-swim` builds it (or `cargo build -p meshwire-swim --example swim-node`)",
        binary.display()
    );
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(e) => {
            // Root without the right to create namespaces (e.g. a restricted container).
            if skip(&format!("cannot build the namespace lab: {e}")) {
                return;
            }
            unreachable!()
        }
    };
    let test_start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut cluster = Cluster::default();

    // The seed first, to learn its peer id; then the others through it.
    lab.start(0, &binary, None, tx.clone()).unwrap();
    wait_for(
        &rx,
        &mut cluster,
        Duration::from_secs(15),
        "the seed to listen",
        |c| c.peer.contains_key(&0) && c.listening.contains_key(&0),
    );
    let seed = format!("{}/p2p/{}", cluster.listening[&0], cluster.peer[&0]);
    for i in 1..HOSTS {
        lab.start(i, &binary, Some(&seed), tx.clone()).unwrap();
    }
    let all_alive = |c: &Cluster, hosts: &[usize]| {
        hosts.iter().all(|&i| {
            (0..HOSTS)
                .filter(|&j| j != i)
                .all(|j| c.view(i, j) == Some(View::Alive))
        })
    };
    let everyone: Vec<usize> = (0..HOSTS).collect();
    let formed = wait_for(
        &rx,
        &mut cluster,
        Duration::from_secs(20),
        "every host to see the 4 others alive",
        |c| c.peer.len() == HOSTS && all_alive(c, &everyone),
    );
    println!(
        "netns: {HOSTS} hosts in namespaces formed a cluster in {formed:.2?} ({:.1} protocol periods)",
        formed.as_secs_f64() / PROBE_INTERVAL.as_secs_f64()
    );
    let failed_before = cluster.failed.len();

    // Cut host 4 off.
    let cut = HOSTS - 1;
    let others: Vec<usize> = (0..cut).collect();
    lab.set_link(cut, false).unwrap();
    let cut_at = Instant::now();
    let bound = failure_bound(HOSTS - 1);
    wait_for(
        &rx,
        &mut cluster,
        bound * 2,
        "the 4 other hosts to declare the cut-off host failed",
        |c| others.iter().all(|&i| c.view(i, cut) == Some(View::Failed)),
    );
    let cut_peer = cluster.peer[&cut].clone();
    let mut declared: Vec<(usize, Duration)> = cluster.failed[failed_before..]
        .iter()
        .filter(|(i, p, _)| *i != cut && *p == cut_peer)
        .map(|(i, _, at)| (*i, at.duration_since(cut_at)))
        .collect();
    declared.sort_by_key(|(_, d)| *d);
    println!(
        "netns: link of host {cut} down: declared failed by all {} others after {:.2?} (first after {:.2?}); bound from the config {bound:.2?}",
        others.len(),
        declared.last().map(|d| d.1).unwrap_or_default(),
        declared.first().map(|d| d.1).unwrap_or_default(),
    );
    for (i, d) in &declared {
        assert!(
            *d <= bound,
            "host {i} declared the cut-off host failed after {d:?}, above the bound {bound:?}"
        );
    }

    // Keep it cut off until it has given up on everyone (it is alone): only a rejoin brings it
    // back then, since members declared failed are never probed again.
    let alone = wait_for(
        &rx,
        &mut cluster,
        Duration::from_secs(40),
        "the cut-off host to declare the others failed",
        |c| others.iter().all(|&j| c.view(cut, j) == Some(View::Failed)),
    );
    println!(
        "netns: the cut-off host declared the {} others failed {:.2?} after the cut",
        others.len(),
        cut_at.elapsed().max(alone)
    );

    lab.set_link(cut, true).unwrap();
    let restored_at = Instant::now();
    let healed = wait_for(
        &rx,
        &mut cluster,
        Duration::from_secs(20),
        "the host to rejoin and be alive everywhere",
        |c| all_alive(c, &everyone),
    );
    println!(
        "netns: link restored: the host rejoined by itself and every host sees all {} others alive after {healed:.2?}",
        HOSTS - 1
    );
    println!(
        "netns: phases since start: cut at {:.2?}, restored at {:.2?}",
        cut_at.duration_since(test_start),
        restored_at.duration_since(test_start)
    );

    // No host that stayed connected ever declared another such host failed.
    let wrong: Vec<(usize, Option<usize>, Duration)> = cluster
        .failed
        .iter()
        .filter(|(i, p, _)| *i != cut && *p != cut_peer)
        .map(|(i, p, at)| (*i, cluster.peer_index(p), at.duration_since(test_start)))
        .collect();
    assert!(
        wrong.is_empty(),
        "connected hosts declared each other failed: {wrong:?}"
    );
    println!(
        "netns: whole run {:.1?}, no failure declaration among connected hosts",
        test_start.elapsed()
    );
}
