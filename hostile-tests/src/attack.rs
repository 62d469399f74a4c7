//! What the `attacker` binary does on each connection it holds to the victim: raw QUIC
//! streams and bytes of its choosing (hand-made multistream-select and frames), no swarm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use meshwire::transport::{Connection, Stream};
use meshwire::{identify, kad, ping};
use tokio::sync::watch;

use crate::{ms, propose, varint, AttackerStatus};

/// One attack, run on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Hold the connection and do nothing.
    Connect,
    /// Open `streams` streams, propose one of the victim's protocols on each (kad, ping,
    /// identify push in turn) and send nothing more.
    Hold,
    /// `loops` loops that open a kad stream, send a request's first bytes, wait `pause` and
    /// reset it.
    Churn,
    /// `streams` streams in multistream-select: half send the header and stall until the
    /// stop, half propose 40 unknown protocols, read what the victim answers (2 s at most)
    /// and start over on a new stream.
    Negotiate,
    /// `loops` loops sending, on fresh streams, the exchanges of [`malformed`] in turn,
    /// then the end of the stream, and reading the answer (2 s at most).
    Malformed,
}

impl Attack {
    /// The attack named `name` on the command line.
    pub fn from_name(name: &str) -> Option<Attack> {
        Some(match name {
            "connect" => Attack::Connect,
            "hold" => Attack::Hold,
            "churn" => Attack::Churn,
            "negotiate" => Attack::Negotiate,
            "malformed" => Attack::Malformed,
            _ => return None,
        })
    }
}

/// An attack and its sizes on each connection.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to do.
    pub attack: Attack,
    /// Streams held per connection ([`Attack::Hold`], [`Attack::Negotiate`]).
    pub streams: usize,
    /// Loops per connection ([`Attack::Churn`], [`Attack::Malformed`]).
    pub loops: usize,
    /// Time a churned stream lives ([`Attack::Churn`]).
    pub pause: Duration,
    /// New streams per second on each connection, over all its loops ([`Attack::Churn`],
    /// [`Attack::Negotiate`], [`Attack::Malformed`]); `None` for as fast as the loops go.
    pub rate: Option<u32>,
}

impl Plan {
    /// The pace of loop `i` of `n`: `n / rate` seconds between its streams, the loops
    /// spread evenly over that period; `None` without a rate.
    fn pacer(&self, i: usize, n: usize) -> Option<tokio::time::Interval> {
        let rate = self.rate.filter(|r| *r > 0)?;
        let period = Duration::from_secs_f64(n.max(1) as f64 / f64::from(rate));
        let start = tokio::time::Instant::now() + period.mul_f64(i as f64 / n.max(1) as f64);
        let mut pacer = tokio::time::interval_at(start, period);
        pacer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(pacer)
    }
}

/// Waits for the next tick of `pacer`, if any.
async fn pace(pacer: &mut Option<tokio::time::Interval>) {
    if let Some(p) = pacer {
        p.tick().await;
    }
}

/// The counters behind the attacker's status lines.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections established.
    pub connected: AtomicU64,
    /// Dials that failed.
    pub dial_failures: AtomicU64,
    /// Established connections that the victim closed (or that timed out).
    pub closed: AtomicU64,
    streams_opened: AtomicU64,
    streams_open: AtomicU64,
}

impl Counters {
    /// Counts one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The status line's values now.
    pub fn status(&self) -> AttackerStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AttackerStatus {
            connected: get(&self.connected),
            dial_failures: get(&self.dial_failures),
            closed: get(&self.closed),
            streams_opened: get(&self.streams_opened),
            streams_open: get(&self.streams_open),
        }
    }
}

/// Counts a stream open for as long as it lives.
struct Open(Arc<Counters>);

impl Open {
    fn new(c: &Arc<Counters>) -> Open {
        c.streams_opened.fetch_add(1, Ordering::Relaxed);
        c.streams_open.fetch_add(1, Ordering::Relaxed);
        Open(c.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn until_stop(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Opens a stream, counted while it lives.
async fn open(conn: &Connection, c: &Arc<Counters>) -> Option<(Stream, Open)> {
    let s = conn.open_stream().await.ok()?;
    Some((s, Open::new(c)))
}

/// Runs `plan` on `conn` until `stop` turns true (a held stream is reset then; a loop ends
/// after its current stream).
pub async fn run(plan: Plan, conn: Connection, c: Arc<Counters>, stop: watch::Receiver<bool>) {
    let each = |n: usize, f: &dyn Fn(usize) -> futures::future::BoxFuture<'static, ()>| {
        futures::future::join_all((0..n).map(f))
    };
    let plan = Arc::new(plan);
    match plan.attack {
        Attack::Connect => {}
        Attack::Hold => {
            let protocols = [kad::PROTOCOL, ping::PROTOCOL, identify::PUSH_PROTOCOL_NAME];
            each(plan.streams, &|i| {
                let (conn, c, stop) = (conn.clone(), c.clone(), stop.clone());
                let proposal = propose(protocols[i % protocols.len()].as_str());
                Box::pin(async move {
                    let Some((mut s, _open)) = open(&conn, &c).await else {
                        return;
                    };
                    if s.write_all(&proposal).await.is_ok() {
                        let _ = s.flush().await;
                    }
                    until_stop(stop).await;
                    s.reset();
                })
            })
            .await;
        }
        Attack::Churn => {
            let mut bytes = propose(kad::PROTOCOL.as_str());
            // A kad request of 128 bytes announced, and its first byte.
            bytes.extend([0x80, 0x01, 0x08]);
            let bytes = Arc::new(bytes);
            each(plan.loops, &|i| {
                let (conn, c, stop, bytes) = (conn.clone(), c.clone(), stop.clone(), bytes.clone());
                let pause = plan.pause;
                let mut pacer = plan.pacer(i, plan.loops);
                Box::pin(async move {
                    while !*stop.borrow() {
                        pace(&mut pacer).await;
                        let Some((mut s, _open)) = open(&conn, &c).await else {
                            return;
                        };
                        let _ = s.write_all(&bytes).await;
                        let _ = s.flush().await;
                        // Long enough for the victim to negotiate some of them.
                        tokio::time::sleep(pause).await;
                        s.reset();
                    }
                })
            })
            .await;
        }
        Attack::Negotiate => {
            each(plan.streams, &|i| {
                let (conn, c, stop) = (conn.clone(), c.clone(), stop.clone());
                // The proposing half shares the rate.
                let mut pacer = plan.pacer(i / 2, plan.streams / 2);
                Box::pin(async move {
                    let mut k = 0u64;
                    while !*stop.borrow() {
                        if i % 2 == 1 {
                            pace(&mut pacer).await;
                        }
                        let Some((mut s, _open)) = open(&conn, &c).await else {
                            return;
                        };
                        if i % 2 == 0 {
                            if s.write_all(&ms("/multistream/1.0.0")).await.is_ok() {
                                let _ = s.flush().await;
                            }
                            // Stalled for good (whatever the victim does with it).
                            until_stop(stop).await;
                            s.reset();
                            return;
                        }
                        let mut bytes = ms("/multistream/1.0.0");
                        for _ in 0..40 {
                            k += 1;
                            bytes.extend(ms(&format!("/unknown/{k}")));
                        }
                        let _ = s.write_all(&bytes).await;
                        let mut sink = Vec::new();
                        let read =
                            tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink));
                        let _ = read.await;
                    }
                })
            })
            .await;
        }
        Attack::Malformed => {
            each(plan.loops, &|j| {
                let (conn, c, stop) = (conn.clone(), c.clone(), stop.clone());
                let mut pacer = plan.pacer(j, plan.loops);
                Box::pin(async move {
                    let mut kind = j;
                    while !*stop.borrow() {
                        pace(&mut pacer).await;
                        let Some((mut s, _open)) = open(&conn, &c).await else {
                            return;
                        };
                        let _ = s.write_all(&malformed(kind)).await;
                        let _ = s.close().await;
                        let mut sink = Vec::new();
                        let read =
                            tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink));
                        let _ = read.await;
                        kind += 1;
                    }
                })
            })
            .await;
        }
    }
}

/// One malformed exchange, `kind` of 8: the bytes to send on a raw stream.
///
/// 0, 1: kad, a 1 GiB frame announced and garbage that is not a protobuf; 2, 3: the same
/// for identify push; 4: ping, a short payload (31 of 32 bytes) and the end of the stream;
/// 5: multistream-select, a message longer than any protocol name; 6: a bad header; 7: a
/// length prefix that never ends (11 continuation bytes).
pub fn malformed(kind: usize) -> Vec<u8> {
    let (kad, push) = (kad::PROTOCOL, identify::PUSH_PROTOCOL_NAME);
    let (kad, push) = (kad.as_str(), push.as_str());
    let mut out;
    match kind % 8 {
        0 => {
            out = propose(kad);
            out.extend(varint(1 << 30));
            out.extend([0xff; 64]);
        }
        1 => {
            out = propose(kad);
            out.extend(varint(200));
            out.extend([0xff; 200]);
        }
        2 => {
            out = propose(push);
            out.extend(varint(1 << 30));
            out.extend([0xff; 64]);
        }
        3 => {
            out = propose(push);
            out.extend(varint(200));
            out.extend([0xff; 200]);
        }
        4 => {
            out = propose(ping::PROTOCOL.as_str());
            out.extend([7; 31]);
        }
        5 => {
            out = varint(1 << 20);
            out.extend([b'a'; 1024]);
        }
        6 => {
            out = ms("/notmultistream/9.9.9");
            out.extend(ms(kad));
        }
        _ => {
            out = ms("/multistream/1.0.0");
            out.extend([0xff; 11]);
        }
    }
    out
}
