//! The `/meshwire/spray/1.0.0` messages (`docs/holepunch.md`, "The spray protocol"): each
//! one length-prefixed frame (the swarm toolkit's framing) of at most [`MAX_MESSAGE_SIZE`]
//! bytes, decoded into typed values or a typed [`DecodeError`].
//!
//! ```text
//! HELLO  = 0x01 version(1) nonce(u64) profile params n_addrs(u8 ≤ 8) addr*
//! profile = 0x00 | 0x01 mapping(u8) allocation(u8) delta(i8) filtering(u8) preserving(u8)
//! params  = sockets(u16) probes(u16) rate(u32, probes/s) port_lo(u16) port_hi(u16) window_ms(u32)
//! addr    = 0x04 ip(4) port(u16) | 0x06 ip(16) port(u16)
//! READY  = 0x02
//! ```
//! Integers are big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use meshwire_nat::{Filtering, Mapping, NatProfile, PortAllocation};

/// The protocol name.
pub const PROTOCOL_NAME: &str = "/meshwire/spray/1.0.0";
/// The largest message (a `HELLO` with 8 IPv6 addresses is 188 bytes).
pub const MAX_MESSAGE_SIZE: usize = 256;
/// Addresses in a `HELLO`, at most.
pub const MAX_ADDRS: usize = 8;
const VERSION: u8 = 1;

/// The spray's numbers, proposed by the peer that opened the stream; the other side
/// clamps them to its own limits ([`SprayConfig::agree`](super::spray::SprayConfig::agree)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SprayParams {
    /// Mappings the sprayer opens (K).
    pub sockets: u16,
    /// Probes the prober sends (N).
    pub probes: u16,
    /// Probes per second.
    pub rate: u32,
    /// The lowest port probed.
    pub port_lo: u16,
    /// The highest port probed.
    pub port_hi: u16,
    /// How long the spray runs after `READY`, in milliseconds.
    pub window_ms: u32,
}

/// A peer's introduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The spray session's nonce (the opener's; echoed by the answer). Probes carry it.
    pub nonce: u64,
    /// The sender's NAT, if it knows it.
    pub profile: Option<NatProfile>,
    /// The spray's numbers.
    pub params: SprayParams,
    /// The sender's public addresses (at most [`MAX_ADDRS`]).
    pub addrs: Vec<SocketAddr>,
}

/// A message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Profiles, addresses and numbers; both directions, the opener first.
    Hello(Hello),
    /// From the sprayer: its mappings are open, probing may start.
    Ready,
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Over [`MAX_MESSAGE_SIZE`].
    #[error("message of {0} bytes, over the limit")]
    TooLarge(usize),
    /// Ends early.
    #[error("message truncated")]
    Truncated,
    /// Bytes after the message.
    #[error("{0} bytes after the message")]
    Trailing(usize),
    /// A type, version or field value not defined.
    #[error("invalid {field}: {value}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u8,
    },
    /// Over [`MAX_ADDRS`] addresses.
    #[error("{0} addresses, over the limit")]
    TooManyAddrs(usize),
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

fn invalid(field: &'static str, value: u8) -> DecodeError {
    DecodeError::Invalid { field, value }
}

fn encode_profile(p: &Option<NatProfile>, out: &mut Vec<u8>) {
    let Some(p) = p else {
        out.push(0);
        return;
    };
    let (mapping, alloc) = match p.mapping {
        Mapping::None => (0, None),
        Mapping::EndpointIndependent => (1, None),
        Mapping::AddressDependent(a) => (2, Some(a)),
        Mapping::AddressAndPortDependent(a) => (3, Some(a)),
    };
    let (alloc, delta) = match alloc {
        None => (0u8, 0i8),
        Some(PortAllocation::Sequential { delta }) => (
            1,
            i8::try_from(delta).unwrap_or(if delta < 0 { i8::MIN } else { i8::MAX }),
        ),
        Some(PortAllocation::Random) => (2, 0),
    };
    let filtering = match p.filtering {
        Filtering::EndpointIndependent => 0,
        Filtering::AddressDependent => 1,
        Filtering::AddressAndPortDependent => 2,
        Filtering::Unknown => 3,
    };
    out.extend_from_slice(&[
        1,
        mapping,
        alloc,
        delta.to_be_bytes()[0],
        filtering,
        u8::from(p.port_preserving),
    ]);
}

fn decode_profile(r: &mut Reader<'_>) -> Result<Option<NatProfile>, DecodeError> {
    match r.u8()? {
        0 => return Ok(None),
        1 => {}
        v => return Err(invalid("profile flag", v)),
    }
    let [mapping, alloc, delta, filtering, preserving] = r.take::<5>()?;
    let delta = i32::from(i8::from_be_bytes([delta]));
    let alloc = match alloc {
        0 => None,
        1 if delta != 0 => Some(PortAllocation::Sequential { delta }),
        2 => Some(PortAllocation::Random),
        v => return Err(invalid("port allocation", v)),
    };
    let mapping = match (mapping, alloc) {
        (0, None) => Mapping::None,
        (1, None) => Mapping::EndpointIndependent,
        (2, Some(a)) => Mapping::AddressDependent(a),
        (3, Some(a)) => Mapping::AddressAndPortDependent(a),
        (v, _) => return Err(invalid("mapping", v)),
    };
    let filtering = match filtering {
        0 => Filtering::EndpointIndependent,
        1 => Filtering::AddressDependent,
        2 => Filtering::AddressAndPortDependent,
        3 => Filtering::Unknown,
        v => return Err(invalid("filtering", v)),
    };
    let port_preserving = match preserving {
        0 => false,
        1 => true,
        v => return Err(invalid("port preserving", v)),
    };
    Ok(Some(NatProfile {
        mapping,
        filtering,
        port_preserving,
    }))
}

/// Encodes `message`; addresses beyond [`MAX_ADDRS`] are left out.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match message {
        Message::Ready => out.push(2),
        Message::Hello(h) => {
            out.extend_from_slice(&[1, VERSION]);
            out.extend_from_slice(&h.nonce.to_be_bytes());
            encode_profile(&h.profile, &mut out);
            let p = &h.params;
            out.extend_from_slice(&p.sockets.to_be_bytes());
            out.extend_from_slice(&p.probes.to_be_bytes());
            out.extend_from_slice(&p.rate.to_be_bytes());
            out.extend_from_slice(&p.port_lo.to_be_bytes());
            out.extend_from_slice(&p.port_hi.to_be_bytes());
            out.extend_from_slice(&p.window_ms.to_be_bytes());
            let addrs = &h.addrs[..h.addrs.len().min(MAX_ADDRS)];
            out.push(addrs.len() as u8);
            for a in addrs {
                match a.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&a.port().to_be_bytes());
            }
        }
    }
    out
}

/// Decodes one message.
///
/// # Errors
///
/// [`DecodeError`] for anything but exactly one well-formed message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let mut r = Reader(bytes);
    let message = match r.u8()? {
        2 => Message::Ready,
        1 => {
            let version = r.u8()?;
            if version != VERSION {
                return Err(invalid("version", version));
            }
            let nonce = r.u64()?;
            let profile = decode_profile(&mut r)?;
            let params = SprayParams {
                sockets: r.u16()?,
                probes: r.u16()?,
                rate: r.u32()?,
                port_lo: r.u16()?,
                port_hi: r.u16()?,
                window_ms: r.u32()?,
            };
            let n = usize::from(r.u8()?);
            if n > MAX_ADDRS {
                return Err(DecodeError::TooManyAddrs(n));
            }
            let mut addrs = Vec::with_capacity(n);
            for _ in 0..n {
                let ip = match r.u8()? {
                    4 => IpAddr::V4(Ipv4Addr::from(r.take::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(r.take::<16>()?)),
                    v => return Err(invalid("address family", v)),
                };
                addrs.push(SocketAddr::new(ip, r.u16()?));
            }
            Message::Hello(Hello {
                nonce,
                profile,
                params,
                addrs,
            })
        }
        v => return Err(invalid("message type", v)),
    };
    if !r.0.is_empty() {
        return Err(DecodeError::Trailing(r.0.len()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            nonce: 0x0102_0304_0506_0708,
            profile: Some(NatProfile {
                mapping: Mapping::AddressAndPortDependent(PortAllocation::Sequential { delta: -2 }),
                filtering: Filtering::AddressAndPortDependent,
                port_preserving: true,
            }),
            params: SprayParams {
                sockets: 256,
                probes: 768,
                rate: 2000,
                port_lo: 1024,
                port_hi: 65535,
                window_ms: 8000,
            },
            addrs: vec![
                "192.0.2.11:4001".parse().unwrap(),
                "[2001:db8::1]:4001".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn golden_bytes_and_round_trips() {
        assert_eq!(encode(&Message::Ready), vec![2]);
        let h = Message::Hello(hello());
        let bytes = encode(&h);
        assert_eq!(
            &bytes[..16],
            &[1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 1, 0xfe, 2, 1],
            "type, version, nonce, profile"
        );
        assert_eq!(
            &bytes[16..32],
            &[1, 0, 3, 0, 0, 0, 7, 0xd0, 4, 0, 0xff, 0xff, 0, 0, 0x1f, 0x40],
            "params"
        );
        assert_eq!(
            &bytes[32..40],
            &[2, 4, 192, 0, 2, 11, 0x0f, 0xa1],
            "addresses"
        );
        assert_eq!(decode(&bytes), Ok(h));
        let mut none = hello();
        none.profile = None;
        none.addrs.clear();
        let m = Message::Hello(none);
        assert_eq!(decode(&encode(&m)), Ok(m));
        // Eight IPv6 addresses fit the limit; more are left out when encoding.
        let mut many = hello();
        many.addrs = vec!["[2001:db8::1]:1".parse().unwrap(); 12];
        let bytes = encode(&Message::Hello(many));
        assert!(bytes.len() <= MAX_MESSAGE_SIZE, "{}", bytes.len());
        let Ok(Message::Hello(back)) = decode(&bytes) else {
            panic!("decodes")
        };
        assert_eq!(back.addrs.len(), MAX_ADDRS);
    }

    #[test]
    fn hostile_bytes_give_typed_errors() {
        let good = encode(&Message::Hello(hello()));
        for cut in 0..good.len() {
            assert_eq!(
                decode(&good[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Trailing(1)));
        assert_eq!(decode(&[0u8; 300]), Err(DecodeError::TooLarge(300)));
        assert_eq!(decode(&[9]), Err(invalid("message type", 9)));
        let mut v = good.clone();
        v[1] = 2;
        assert_eq!(decode(&v), Err(invalid("version", 2)));
        let mut m = good.clone();
        m[11] = 1; // EIM with a port allocation
        assert_eq!(decode(&m), Err(invalid("mapping", 1)));
        let mut f = good.clone();
        f[14] = 7;
        assert_eq!(decode(&f), Err(invalid("filtering", 7)));
        let mut n = good.clone();
        n[32] = 9;
        assert_eq!(decode(&n), Err(DecodeError::TooManyAddrs(9)));
        let mut fam = good;
        fam[33] = 5;
        assert_eq!(decode(&fam), Err(invalid("address family", 5)));
    }
}
