//! What the status page and the `meshwire_*` gauges show: one snapshot of the node, taken
//! through the public API (the swarm handle, the behaviours, the connection manager).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meshwire::connmgr::{BasicConnMgr, ConnManagerHandle};
use meshwire::prelude::*;
use meshwire::swim::MemberState;
use serde::Serialize;

use crate::node::Node;

/// One snapshot of the node.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Our peer id.
    pub peer_id: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Our listen addresses.
    pub listen: Vec<String>,
    /// Connected peers, sorted.
    pub peers: Vec<PeerStatus>,
    /// SWIM realms and their members.
    pub realms: Vec<RealmStatus>,
    /// Reservations we hold on relays.
    pub relay_reservations: Vec<ReservationStatus>,
    /// Reservations held on us (as a relay).
    pub relay_server_reservations: usize,
    /// Circuits through us.
    pub relay_server_circuits: usize,
    /// Peers in kademlia's routing table.
    pub kad_routing_table: usize,
    /// `server` or `client`.
    pub kad_mode: String,
    /// Records in kademlia's local store.
    pub kad_records: usize,
    /// Keys kademlia's local store holds provider records for.
    pub kad_provider_keys: usize,
    /// The RPC procedures this node serves (`meshwire rpc serve`).
    pub rpc_served: Vec<String>,
    /// The pubsub topics this node is subscribed to, with their mesh peers.
    pub pubsub_topics: Vec<TopicStatus>,
    /// SWIM datagrams sent and received since start.
    pub swim_datagrams: (u64, u64),
    /// The connection manager's watermarks and connection count.
    pub connmgr: ConnMgrStatus,
    /// Our NAT as detected (`[nat] observers`); `None` until a detection classified it.
    pub nat: Option<NatStatus>,
}

/// Our NAT's profile.
#[derive(Clone, Debug, Serialize)]
pub struct NatStatus {
    /// `none`, `endpoint-independent`, `address-dependent` or `address-and-port-dependent`,
    /// the last two with the port allocation (`sequential +<delta>` or `random`).
    pub mapping: String,
    /// `endpoint-independent`, `address-dependent`, `address-and-port-dependent` or
    /// `unknown`.
    pub filtering: &'static str,
    /// Whether the NAT keeps the local port.
    pub port_preserving: bool,
}

impl NatStatus {
    /// The profile in the page's words.
    pub fn of(p: &meshwire::nat::NatProfile) -> Self {
        use meshwire::nat::{Filtering, Mapping, PortAllocation};
        let alloc = |a: &PortAllocation| match a {
            PortAllocation::Sequential { delta } => format!("sequential {delta:+}"),
            PortAllocation::Random => "random".to_string(),
        };
        NatStatus {
            mapping: match &p.mapping {
                Mapping::None => "none".to_string(),
                Mapping::EndpointIndependent => "endpoint-independent".to_string(),
                Mapping::AddressDependent(a) => format!("address-dependent, {}", alloc(a)),
                Mapping::AddressAndPortDependent(a) => {
                    format!("address-and-port-dependent, {}", alloc(a))
                }
            },
            filtering: match p.filtering {
                Filtering::EndpointIndependent => "endpoint-independent",
                Filtering::AddressDependent => "address-dependent",
                Filtering::AddressAndPortDependent => "address-and-port-dependent",
                Filtering::Unknown => "unknown",
            },
            port_preserving: p.port_preserving,
        }
    }
}

impl std::fmt::Display for NatStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mapping {}, filtering {}{}",
            self.mapping,
            self.filtering,
            if self.port_preserving {
                ", port preserving"
            } else {
                ""
            }
        )
    }
}

/// A pubsub topic we are subscribed to.
#[derive(Clone, Debug, Serialize)]
pub struct TopicStatus {
    /// The topic.
    pub topic: String,
    /// Peers in our mesh of the topic.
    pub mesh_peers: usize,
}

/// A connected peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// Its peer id.
    pub peer: String,
    /// Its connections.
    pub connections: Vec<ConnStatus>,
    /// Last ping RTT in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its agent (identify).
    pub agent: Option<String>,
    /// Its protocols (identify).
    pub protocols: Vec<String>,
    /// Connection-manager tags and their values.
    pub tags: BTreeMap<String, i32>,
    /// Connection-manager protection tags.
    pub protected: Vec<String>,
}

/// One connection.
#[derive(Clone, Debug, Serialize)]
pub struct ConnStatus {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The remote address.
    pub address: String,
    /// Through a relay.
    pub relayed: bool,
    /// The relay, if relayed.
    pub relay: Option<String>,
    /// Seconds since established.
    pub age_secs: u64,
    /// Streams open now.
    pub streams: usize,
}

/// A SWIM realm.
#[derive(Clone, Debug, Serialize)]
pub struct RealmStatus {
    /// Its name.
    pub realm: String,
    /// Every member known (this node not included).
    pub members: Vec<MemberStatus>,
}

/// A SWIM member.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    /// Its peer id.
    pub peer: String,
    /// `alive`, `suspect`, `failed` or `left`.
    pub state: &'static str,
    /// Its incarnation.
    pub incarnation: u64,
}

/// A reservation we hold.
#[derive(Clone, Debug, Serialize)]
pub struct ReservationStatus {
    /// The relay.
    pub relay: String,
    /// Seconds until it expires (renewed before).
    pub expires_in_secs: u64,
}

/// The connection manager.
#[derive(Clone, Debug, Serialize)]
pub struct ConnMgrStatus {
    /// Low watermark.
    pub low_water: usize,
    /// High watermark.
    pub high_water: usize,
    /// Connections tracked.
    pub connections: usize,
}

/// The name of a SWIM state as the page and the metrics show it.
pub fn state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "failed",
        MemberState::Left => "left",
    }
}

/// Takes a snapshot.
///
/// # Errors
///
/// [`HandleError`] if the swarm is gone.
pub async fn collect(
    handle: &SwarmHandle<Node>,
    cm: &ConnManagerHandle<BasicConnMgr>,
    realms: &[swim::Realm],
    started: Instant,
) -> Result<Status, HandleError> {
    let conns = handle.connections().await?;
    let listen = handle.listeners().await?;
    let realms = realms.to_vec();
    let peers_of: Vec<PeerId> = {
        let mut p: Vec<PeerId> = conns.iter().map(|c| c.peer).collect();
        p.sort();
        p.dedup();
        p
    };
    let peers_for_b = peers_of.clone();
    let (per_peer, realm_status, reservations, server, kad, io, nat) = handle
        .with_behaviour(move |b: &mut Node| {
            let per_peer: Vec<_> = peers_for_b
                .iter()
                .map(|p| {
                    let info = b.identify.info(p);
                    (
                        b.ping.rtt(p),
                        info.map(|i| i.agent_version.clone()),
                        info.map(|i| {
                            i.protocols
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                    )
                })
                .collect();
            let realm_status: Vec<RealmStatus> = realms
                .iter()
                .map(|r| RealmStatus {
                    realm: r.to_string(),
                    members: b
                        .swim
                        .as_ref()
                        .map(|s| s.members(r))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|m| MemberStatus {
                            peer: m.peer.to_string(),
                            state: state_name(m.state),
                            incarnation: m.incarnation,
                        })
                        .collect(),
                })
                .collect();
            let server = b.relay_server.as_ref().map_or((0, 0), |s| {
                (s.engine().reservation_count(), s.engine().circuit_count())
            });
            let io = b.swim.as_ref().map_or((0, 0), |s| {
                (s.io_stats().datagrams_sent, s.io_stats().datagrams_received)
            });
            (
                per_peer,
                realm_status,
                b.relay_client.reservations(),
                server,
                (
                    b.kad().routing_table().len(),
                    format!("{:?}", b.kad().mode()).to_lowercase(),
                    b.kad().engine().record_store().len(),
                    b.kad().engine().provider_store().len(),
                    b.rpc
                        .registered()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                    b.pubsub.as_ref().map_or_else(Vec::new, |p| {
                        let e = p.engine();
                        e.subscriptions()
                            .map(|t| TopicStatus {
                                topic: t.to_string(),
                                mesh_peers: e.mesh_peers(t).count(),
                            })
                            .collect()
                    }),
                ),
                io,
                b.holepunch
                    .as_ref()
                    .and_then(|h| h.nat_profile())
                    .map(|p| NatStatus::of(&p)),
            )
        })
        .await?;
    let now = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let peers = peers_of
        .iter()
        .zip(per_peer)
        .map(|(peer, (rtt, agent, protocols))| {
            let info = cm.get_tag_info(*peer);
            PeerStatus {
                peer: peer.to_string(),
                connections: conns
                    .iter()
                    .filter(|c| c.peer == *peer)
                    .map(|c| ConnStatus {
                        direction: if c.endpoint.is_dialer() {
                            "outbound"
                        } else {
                            "inbound"
                        },
                        address: c.endpoint.remote_addr().to_string(),
                        relayed: c.endpoint.is_relayed(),
                        relay: c.endpoint.relay_peer_id().map(|r| r.to_string()),
                        age_secs: now.saturating_duration_since(c.established_at).as_secs(),
                        streams: c.streams,
                    })
                    .collect(),
                rtt_ms: rtt.map(|d| d.as_secs_f64() * 1e3),
                agent,
                protocols,
                tags: info
                    .map(|i| i.tags.into_iter().collect())
                    .unwrap_or_default(),
                protected: cm.with(|m| m.protections(*peer)),
            }
        })
        .collect();
    let info = cm.with(|m| m.info());
    let local = handle.local_peer_id();
    Ok(Status {
        peer_id: local.to_string(),
        uptime_secs: now.saturating_duration_since(started).as_secs(),
        listen: listen
            .iter()
            .map(|a| with_peer_id(a, local).to_string())
            .collect(),
        peers,
        realms: realm_status,
        relay_reservations: reservations
            .into_iter()
            .map(|(relay, expire)| ReservationStatus {
                relay: relay.to_string(),
                expires_in_secs: expire.saturating_sub(unix),
            })
            .collect(),
        relay_server_reservations: server.0,
        relay_server_circuits: server.1,
        kad_routing_table: kad.0,
        kad_mode: kad.1,
        kad_records: kad.2,
        kad_provider_keys: kad.3,
        rpc_served: kad.4,
        pubsub_topics: kad.5,
        swim_datagrams: io,
        connmgr: ConnMgrStatus {
            low_water: info.low_water,
            high_water: info.high_water,
            connections: info.conn_count,
        },
        nat,
    })
}
