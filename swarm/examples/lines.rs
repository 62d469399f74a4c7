//! `cargo run -p meshwire-swarm --example lines`: two swarms exchange text lines over
//! `/example/lines/1.0.0`, a behaviour written on the toolkit (`docs/ARCHITECTURE.md` walks
//! through it). Each peer keeps one stream open to the other for its lines; a line is a frame
//! of at most `MAX_LINE` bytes, at most `QUEUE` lines wait per peer, and every read and write
//! has a time limit (an idle stream ends after `TIMEOUT`; the next line opens a new one).

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use meshwire_swarm::toolkit::{write_frames, FrameError, FrameReaders, Outbox, Tasks};
use meshwire_swarm::{toolkit::QueueFull, PeerId, StreamProtocol, ToSwarm};
use meshwire_swarm::{InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult};

// ---- The behaviour, to the end of `poll`. ----
const PROTOCOL: StreamProtocol = StreamProtocol::new("/example/lines/1.0.0");
const MAX_LINE: usize = 1024; // bytes in a line
const QUEUE: usize = 32; // lines waiting per peer
const TIMEOUT: Duration = Duration::from_secs(30); // per write; idle time of a stream

/// A line from a peer, or why a stream with it ended.
pub type Event = (PeerId, Result<Vec<u8>, FrameError>);

#[derive(Default)] // each part holds at most 256 streams
pub struct Lines {
    outbox: Outbox<Event, mpsc::Receiver<Vec<u8>>>, // a stream being opened keeps its queue
    writers: Tasks<PeerId, Result<(), FrameError>>, // our stream to each peer
    readers: FrameReaders<PeerId>,                  // the peers' streams to us
    senders: HashMap<PeerId, mpsc::Sender<Vec<u8>>>, // into each peer's queue
}

impl Lines {
    pub fn send(&mut self, peer: PeerId, line: Vec<u8>) -> Result<(), QueueFull> {
        self.senders.retain(|_, tx| !tx.is_closed()); // forget ended writers
        if line.len() > MAX_LINE {
            return Err(QueueFull { limit: QUEUE }); // the remote would refuse it
        }
        if !self.senders.contains_key(&peer) {
            let (tx, rx) = mpsc::channel(QUEUE - 1); // holds QUEUE
            self.outbox
                .open_stream(OpenStream::new(peer, PROTOCOL), rx)?;
            self.senders.insert(peer, tx);
        }
        let sent = self.senders.get_mut(&peer).map(|tx| tx.try_send(line));
        sent.and_then(Result::ok).ok_or(QueueFull { limit: QUEUE })
    }
}

impl NetworkBehaviour for Lines {
    type Event = Event;
    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL]
    }
    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let (peer, stream) = (inbound.peer, inbound.stream); // at the limit, dropped
        let _ = self.readers.push(peer, stream, MAX_LINE, 2 * TIMEOUT);
    }
    fn on_outbound_stream(&mut self, res: OutboundStreamResult) {
        if let Some(mut queue) = self.outbox.take_stream(res.id) {
            let write = async move {
                let s = &mut res.result?.stream; // ends after TIMEOUT without a line
                write_frames(s, &mut queue, TIMEOUT, TIMEOUT).await
            };
            let _ = self.writers.try_push(res.peer, Duration::MAX, write);
        }
    }
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        let ended = loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            match self.writers.poll_result(cx) {
                Poll::Ready((_, Ok(()))) => continue, // went idle; the next line opens a stream
                Poll::Ready((peer, Err(e))) => break (peer, Err(e)),
                Poll::Pending => return self.readers.poll_next(cx).map(ToSwarm::GenerateEvent),
            }
        };
        Poll::Ready(ToSwarm::GenerateEvent(ended))
    }
}
// ---- End of the behaviour. ----

/// Two swarms on loopback: `a` sends three lines to `b`, which answers each.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use meshwire_core::Keypair;
    use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent};
    use meshwire_transport::quic::{QuicConfig, QuicTransport};

    let node = || -> Result<Swarm<Lines>, Box<dyn std::error::Error>> {
        let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
        Ok(Swarm::new(
            transport,
            Lines::default(),
            SwarmConfig::default(),
        ))
    };
    let (mut a, mut b) = (node()?, node()?);
    b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await {
            break address;
        }
    };
    a.add_peer_address(b.local_peer_id(), addr);
    for line in ["one", "two", "three"] {
        a.behaviour_mut().send(b.local_peer_id(), line.into())?;
    }
    let mut answers = 0;
    while answers < 3 {
        tokio::select! {
            ev = a.next_event() => if let SwarmEvent::Behaviour((peer, Ok(line))) = ev {
                println!("a got {:?} from {peer}", String::from_utf8_lossy(&line));
                answers += 1;
            },
            ev = b.next_event() => if let SwarmEvent::Behaviour((peer, Ok(line))) = ev {
                println!("b got {:?} from {peer}", String::from_utf8_lossy(&line));
                let answer = [b"re: ".as_slice(), &line].concat();
                b.behaviour_mut().send(peer, answer)?;
            },
        }
    }
    Ok(())
}
