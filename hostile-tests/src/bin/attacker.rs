//! The attack generator of the hostile-peer tests, in a process of its own so that the
//! attack reaches its size without taking the test process's time (where the honest peer
//! measures the victim).
//!
//! `attacker <victim multiaddr with /p2p/> <attack> [options]`, attacks:
//!
//! - `connect`: `--identities N` fresh identities (each its own QUIC endpoint and key) dial
//!   the victim `--spacing-ms S` apart and hold their connection, doing nothing;
//! - `hold`: `--conns K` connections each open `--streams M` streams, propose one of the
//!   victim's protocols on each (kad, ping, identify push in turn) and then send nothing;
//! - `churn`: `--conns K` connections each run `--loops L` loops that open a kad stream,
//!   send a request's first bytes, wait `--pause-ms P` (default 5) and reset it;
//! - `negotiate`: `--conns K` connections each keep `--streams M` streams in
//!   multistream-select (half stalled after the header, half proposing unknown protocols
//!   over and over);
//! - `malformed`: `--conns K` connections each run `--loops L` loops sending malformed and
//!   oversized frames on every protocol.
//!
//! `--rate R` paces the looping attacks (`churn`, `negotiate`, `malformed`) at R new
//! streams a second on each connection; without it they go as fast as they can.
//! (`hostile_tests::attack` has the details.) Every connection refuses the streams the
//! victim opens (identify, ping) by resetting them.
//!
//! Every identity, endpoint and certificate is made first; then it prints `ready` and waits
//! for `go` on stdin. Every 200 ms it prints an [`AttackerStatus`](hostile_tests::AttackerStatus)
//! line. `stop` on stdin ends the attack's streams (resets the held ones, ends the loops) and
//! keeps the connections; the end of stdin, or `--max-secs` (default 120) after `go`, closes
//! the connections and exits.

use std::sync::Arc;
use std::time::Duration;

use hostile_tests::attack::{self, Attack, Counters, Plan};
use meshwire::core::{Keypair, PeerId};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::{CloseReason, Connection, Multiaddr, Transport};
use tokio::sync::watch;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    victim: Multiaddr,
    peer: PeerId,
    plan: Plan,
    identities: usize,
    spacing: Duration,
    max: Duration,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = std::env::args().skip(1);
    let full: Multiaddr = args.next().ok_or("missing the victim's address")?.parse()?;
    let (victim, peer) = meshwire::transport::split_peer_id(&full, None)?;
    let peer = peer.ok_or("the victim's address must end with /p2p/<peer>")?;
    let name = args.next().unwrap_or_default();
    let attack = Attack::from_name(&name).ok_or_else(|| format!("unknown attack {name:?}"))?;
    let mut a = Args {
        victim,
        peer,
        plan: Plan {
            attack,
            streams: 1,
            loops: 1,
            pause: Duration::from_millis(5),
            rate: None,
        },
        identities: 1,
        spacing: Duration::ZERO,
        max: Duration::from_secs(120),
    };
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()?;
        let n = usize::try_from(value)?;
        match flag.as_str() {
            "--identities" | "--conns" => a.identities = n,
            "--spacing-ms" => a.spacing = Duration::from_millis(value),
            "--streams" => a.plan.streams = n,
            "--loops" => a.plan.loops = n,
            "--pause-ms" => a.plan.pause = Duration::from_millis(value),
            "--rate" => a.plan.rate = Some(u32::try_from(value)?),
            "--max-secs" => a.max = Duration::from_secs(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(a)
}

/// Refuses every stream the victim opens (identify, ping): reset at once, as a peer without
/// those protocols would.
async fn refuse_streams(conn: Connection) {
    while let Ok(mut s) = conn.accept_stream().await {
        s.reset();
    }
}

/// The soft limit of open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn main() -> Result<(), Error> {
    let args = Arc::new(parse_args()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Arc<Args>) -> Result<(), Error> {
    // Each identity has its own UDP socket: say so rather than fail the dials.
    if let Some(limit) = open_files_limit() {
        if args.identities as u64 + 64 > limit {
            return Err(format!(
                "{} identities need as many sockets; the open files limit is {limit} (ulimit -n)",
                args.identities
            )
            .into());
        }
    }
    // Every identity and its certificate first, so the attack measures the victim.
    let mut transports = Vec::with_capacity(args.identities);
    for _ in 0..args.identities {
        transports.push(QuicTransport::new(
            Keypair::generate(),
            QuicConfig::default(),
        )?);
    }
    let (commands, mut command) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if commands.send(line.trim().to_string()).is_err() {
                return;
            }
        }
        // The end of stdin: the test is done with us.
        let _ = commands.send("exit".to_string());
    });
    println!("ready");
    loop {
        match command.recv().await.as_deref() {
            Some("go") => break,
            Some("exit") | None => return Ok(()),
            Some(_) => {}
        }
    }

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dialer = {
        let (args, counters, conns) = (args.clone(), counters.clone(), conns.clone());
        tokio::spawn(async move {
            let target = meshwire::transport::with_peer_id(&args.victim, args.peer);
            for mut transport in transports {
                let dial = transport.dial(&target, Some(args.peer));
                let (a, c, stop, conns) =
                    (args.clone(), counters.clone(), stop.clone(), conns.clone());
                tokio::spawn(async move {
                    // The transport owns the endpoint: keep it for the connection's life.
                    let _transport = transport;
                    let conn = match async { dial?.await }.await {
                        Ok(conn) => conn,
                        Err(_) => {
                            Counters::inc(&c.dial_failures);
                            return;
                        }
                    };
                    Counters::inc(&c.connected);
                    if let Ok(mut all) = conns.lock() {
                        all.push(conn.clone());
                    }
                    tokio::spawn(refuse_streams(conn.clone()));
                    {
                        let (conn, c) = (conn.clone(), c.clone());
                        tokio::spawn(async move {
                            let reason = conn.closed().await;
                            if !matches!(reason, CloseReason::Local { .. }) {
                                Counters::inc(&c.closed);
                            }
                        });
                    }
                    attack::run(a.plan.clone(), conn, c, stop).await;
                });
                if !args.spacing.is_zero() {
                    tokio::time::sleep(args.spacing).await;
                }
            }
        })
    };

    let deadline = tokio::time::sleep(args.max);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => println!("{}", counters.status().to_line()),
            cmd = command.recv() => match cmd.as_deref() {
                Some("stop") => {
                    dialer.abort();
                    let _ = stop_tx.send(true);
                }
                Some("exit") | None => break,
                Some(_) => {}
            },
            _ = &mut deadline => break,
        }
    }
    dialer.abort();
    let _ = stop_tx.send(true);
    let all = conns.lock().map(|c| c.clone()).unwrap_or_default();
    for conn in &all {
        conn.close(0, "done");
    }
    // Let the close frames leave.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("{}", counters.status().to_line());
    Ok(())
}
