//! Port prediction for a peer behind a sequential symmetric NAT: besides each public address
//! it announced, dial the next ports of that address.
//!
//! A NAT with address-and-port-dependent mapping gives each new destination a new public
//! port; a sequential one takes the next free port. The port a peer announced is its mapping
//! towards whoever observed it (a relay, identify); its mapping towards *us*, created by its
//! hole punching dial, is then most likely one of the next few ports. Dialing that window
//! opens our NAT's filter for the port its packets will come from, and reaches its mapping
//! towards us. Private, loopback and link-local addresses get no window (no NAT in between).

use std::net::Ipv4Addr;

use multiaddr::{Multiaddr, Protocol};

/// Whether `ip` can be a NAT's public address (not private, loopback, link-local,
/// unspecified, multicast or broadcast; shared CGNAT space counts as public, as carrier NATs
/// are where symmetric mappings are common).
fn is_public(ip: Ipv4Addr) -> bool {
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast())
}

/// `addrs` with, right after each public `/ip4/<ip>/udp/<port>/..` address, the same address
/// with ports `port+1 ..= port+window` (no wrap past 65535, no duplicates), cut at `max`
/// addresses in all.
///
/// ```
/// use meshwire_holepunch::engine::with_predicted_ports;
///
/// let addrs = vec![
///     "/ip4/192.0.2.7/udp/20000/quic-v1".parse().unwrap(),
///     "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap(),
/// ];
/// let out = with_predicted_ports(addrs, 2, 16);
/// let out: Vec<String> = out.iter().map(|a| a.to_string()).collect();
/// assert_eq!(out, [
///     "/ip4/192.0.2.7/udp/20000/quic-v1",
///     "/ip4/192.0.2.7/udp/20001/quic-v1",
///     "/ip4/192.0.2.7/udp/20002/quic-v1",
///     "/ip4/10.0.0.2/udp/4001/quic-v1",
/// ]);
/// ```
pub fn with_predicted_ports(addrs: Vec<Multiaddr>, window: u16, max: usize) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for addr in addrs {
        let base = {
            let mut it = addr.iter();
            match (it.next(), it.next()) {
                (Some(Protocol::Ip4(ip)), Some(Protocol::Udp(port))) if is_public(ip) => Some(port),
                _ => None,
            }
        };
        let predicted: Vec<Multiaddr> = match base {
            Some(port) => (1..=window)
                .filter_map(|d| port.checked_add(d))
                .map(|next| {
                    addr.iter()
                        .enumerate()
                        .map(|(i, p)| if i == 1 { Protocol::Udp(next) } else { p })
                        .collect()
                })
                .collect(),
            None => Vec::new(),
        };
        for a in std::iter::once(addr).chain(predicted) {
            if out.len() < max && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}
