//! The NAT lab: Linux network namespaces joined by veth pairs, one NAT router per site
//! (nftables), a public host, documentation prefixes on the public side. Test support: it
//! builds the topology in [`Lab::new`] and removes every namespace (and with them every veth
//! and nftables table) when the [`Lab`] is dropped, also when a test panics.
//!
//! ```text
//!   host ns "<tag>-pub": 198.51.100.10/24 + 203.0.113.10/24 (relay, observers)
//!        │ veth
//!   router ns "<tag>-inet": 198.51.100.1/24 + 203.0.113.1/24 ─ bridge "br0" 192.0.2.1/24
//!        │ veth per site                                       (forwards between them)
//!   NAT ns "<tag>-nat<i>": wan 192.0.2.(11+i)/24 ── lan 10.(i+1).0.1/24   (nftables: the kind)
//!        │ veth
//!   host ns "<tag>-host<i>": 10.(i+1).0.2/24, default via the NAT
//! ```
//!
//! The NAT kinds ([`NatKind`]), as RFC 4787 names their mapping and filtering:
//!
//! | kind | mapping | filtering | nftables |
//! | --- | --- | --- | --- |
//! | full cone | endpoint-independent (port kept) | endpoint-independent | `masquerade` + inbound UDP `dnat` to the host |
//! | restricted cone | endpoint-independent | address-dependent | `masquerade` + inbound `dnat` from addresses the host sent to (a timed set) |
//! | port-restricted cone | endpoint-independent | address-and-port-dependent | `masquerade` (conntrack) |
//! | symmetric sequential | address-and-port-dependent, ports +1 per mapping from 20000 | address-and-port-dependent | `snat to <wan>:numgen inc` (a 256-port map) |
//! | symmetric random | address-and-port-dependent, random ports | address-and-port-dependent | `masquerade fully-random` |
//!
//! Every NAT router drops unsolicited inbound packets on its WAN side, forwarded or addressed
//! to itself (what home routers do; without it Linux conntrack lets the first inbound punch
//! claim the mapping, and the router's own answer to a packet for an unmapped port would
//! occupy that port's tuple). The public host has no NAT.
//!
//! Impairments, combinable: [`Lab::set_loss`] drops a share of the UDP packets the internet
//! router forwards (nftables `numgen random`), and [`Lab::set_delay`] holds every UDP packet
//! a NAT router forwards for a fixed time, both ways (the access links; no netem in this
//! kernel, so nftables `queue` rules hand the packets to a user-space thread per router
//! through `nfnetlink_queue`, which releases them in order after the delay). With a delay
//! `d`, a host's round trip to the public host grows by `2d` and a round trip between two
//! hosts behind NATs by `4d`:
//!
//! ```no_run
//! use std::time::Duration;
//! use interop_tests::natlab::{Lab, NatKind, DEFAULT_ACCESS_DELAY};
//!
//! let lab = Lab::new(&[NatKind::PortRestrictedCone, NatKind::FullCone]).unwrap();
//! lab.set_delay(DEFAULT_ACCESS_DELAY).unwrap(); // 50 ms each way on each access link
//! lab.set_loss(5).unwrap(); // and 5 % loss each way in the internet router
//! // ... run the nodes; lab.delayed_packets() and lab.loss_dropped() tell what happened ...
//! lab.set_delay(Duration::ZERO).unwrap(); // back to loopback speed
//! ```
//!
//! Sockets are opened inside a namespace by [`Lab::udp_socket`] (a short-lived thread enters
//! the namespace with `setns` and binds; the socket stays in that namespace wherever it is
//! used), and [`Lab::enter`] runs a closure on a thread inside a namespace (for whole
//! meshwire nodes with their own tokio runtime).
//!
//! Needs Linux, root, `ip` (iproute2) and `nft` (nftables): [`missing_prerequisite`] tells
//! why not, [`skip`] prints it or, with `MESHWIRE_REQUIRE_NETNS=1` (CI), panics.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::nfqueue::Delayer;

/// The access-link delay the NAT lab's tests use by default with [`Lab::set_delay`] (50 ms
/// each way, so 100 ms between a host and the public host).
pub const DEFAULT_ACCESS_DELAY: Duration = Duration::from_millis(50);

/// The public host's first address (relay, first observer).
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The public host's second address (an observer on another IP).
pub const PUBLIC_IP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// First port of the symmetric sequential NAT's mappings.
pub const SEQUENTIAL_BASE_PORT: u16 = 20000;
/// Ports of the symmetric sequential NAT before it wraps.
pub const SEQUENTIAL_PORTS: u16 = 256;

/// A kind of NAT (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// EIM + EIF.
    FullCone,
    /// EIM + ADF.
    RestrictedCone,
    /// EIM + APDF (Linux `masquerade`).
    PortRestrictedCone,
    /// APDM with sequential ports + APDF.
    SymmetricSequential,
    /// APDM with random ports + APDF (`masquerade fully-random`).
    SymmetricRandom,
}

impl NatKind {
    /// The five kinds.
    pub const ALL: [NatKind; 5] = [
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::SymmetricSequential,
        NatKind::SymmetricRandom,
    ];

    /// The NAT's source translation (postrouting) for packets leaving on "wan".
    fn snat(self, wan: Ipv4Addr) -> String {
        match self {
            NatKind::FullCone | NatKind::RestrictedCone | NatKind::PortRestrictedCone => {
                "masquerade".into()
            }
            NatKind::SymmetricRandom => "masquerade fully-random".into(),
            NatKind::SymmetricSequential => {
                // numgen yields a host-order number; a map gives properly typed ports.
                let entries: Vec<String> = (0..SEQUENTIAL_PORTS)
                    .map(|i| format!("{i} : {}", SEQUENTIAL_BASE_PORT + i))
                    .collect();
                // UDP gets the sequential ports, anything else plain masquerade.
                format!(
                    "meta l4proto udp snat to {wan} : numgen inc mod {SEQUENTIAL_PORTS} \
                     map {{ {} }}\n    oifname \"wan\" masquerade",
                    entries.join(", ")
                )
            }
        }
    }

    /// The nftables ruleset of a NAT router of this kind.
    fn ruleset(self, wan: Ipv4Addr, host: Ipv4Addr) -> String {
        let inbound_dnat = match self {
            NatKind::FullCone => format!("iifname \"wan\" udp dport 1024-65535 dnat to {host}"),
            NatKind::RestrictedCone => {
                format!("iifname \"wan\" ip saddr @contacted udp dport 1024-65535 dnat to {host}")
            }
            _ => String::new(),
        };
        let remember = if self == NatKind::RestrictedCone {
            "iifname \"lan\" oifname \"wan\" update @contacted { ip daddr }"
        } else {
            ""
        };
        format!(
            "table ip natlab {{
  set contacted {{ type ipv4_addr; flags timeout; timeout 120s; }}
  chain pre {{ type nat hook prerouting priority -100; policy accept;
    {inbound_dnat}
  }}
  chain post {{ type nat hook postrouting priority 100; policy accept;
    oifname \"wan\" {snat}
  }}
  chain filter_forward {{ type filter hook forward priority 0; policy accept;
    {remember}
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" ct status dnat accept
    iifname \"wan\" drop
  }}
  chain filter_input {{ type filter hook input priority 0; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" drop
  }}
}}
",
            snat = self.snat(wan)
        )
    }
}

/// One site: a host behind a NAT router.
#[derive(Clone, Debug)]
pub struct Site {
    /// The NAT's kind.
    pub kind: NatKind,
    /// The NAT router's namespace.
    pub router_ns: String,
    /// The host's namespace.
    pub host_ns: String,
    /// The host's (private) address.
    pub host_ip: Ipv4Addr,
    /// The NAT's public address.
    pub wan_ip: Ipv4Addr,
}

/// The topology; removed on drop. See the [module docs](self).
#[derive(Debug)]
pub struct Lab {
    /// The public host's namespace.
    pub public_ns: String,
    /// The internet router's namespace.
    pub inet_ns: String,
    /// The sites, in the order of the kinds given to [`Lab::new`].
    pub sites: Vec<Site>,
    namespaces: Vec<String>,
    tag: String,
    /// The NFQUEUE threads of [`Lab::set_delay`], one per NAT router.
    delayers: Mutex<Vec<Delayer>>,
}

/// Why the lab cannot be built here, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("network namespaces need Linux".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse::<u32>().ok())
        });
    match uid {
        Some(0) => {}
        Some(uid) => return Some(format!("not root (effective uid {uid})")),
        None => return Some("cannot read the effective uid".into()),
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Some(format!("`{tool} {arg}` failed: {}", o.status)),
            Err(e) => return Some(format!("`{tool}` is missing: {e}")),
        }
    }
    None
}

/// Skips (returns `true`) with `reason` printed on standard error, or panics when
/// `MESHWIRE_REQUIRE_NETNS=1` forbids skipping.
pub fn skip(reason: &str) -> bool {
    if std::env::var("MESHWIRE_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("NAT lab cannot run: {reason} (MESHWIRE_REQUIRE_NETNS=1 forbids skipping)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "natlab: SKIPPED: {reason} (run as root with iproute2 and nftables; \
         MESHWIRE_REQUIRE_NETNS=1 makes this a failure)"
    );
    true
}

fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("{tool} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn nft_in(ns: &str, ruleset: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft stdin")?
        .write_all(ruleset.as_bytes())
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The nftables table of [`Lab::set_delay`]'s rule, where the kernel has nftables' `queue`.
const DELAY_TABLE: &str = "table ip natlab_delay {
  chain delay { type filter hook forward priority -20; policy accept;
    meta l4proto udp queue num 0
  }
}
";
/// The same rule for iptables, whose `NFQUEUE` target kernels without nftables' `queue`
/// expression (`CONFIG_NFT_QUEUE`) may still have (`CONFIG_NETFILTER_XT_TARGET_NFQUEUE`).
const DELAY_IPTABLES: [&str; 8] = [
    "FORWARD",
    "-p",
    "udp",
    "-j",
    "NFQUEUE",
    "--queue-num",
    "0",
    "-w",
];

/// Hands the UDP packets `ns` forwards to queue 0: nftables `queue`, or iptables `NFQUEUE`.
fn queue_udp(ns: &str) -> Result<(), String> {
    let nft = match nft_in(ns, DELAY_TABLE) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let mut args = vec!["netns", "exec", ns, "iptables", "-I"];
    args.extend(DELAY_IPTABLES);
    run("ip", &args).map_err(|ipt| format!("no queue rule: {nft}; {ipt}"))
}

/// Removes what [`queue_udp`] installed (either kind), if anything.
fn unqueue_udp(ns: &str) {
    let _ = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "nft",
            "delete",
            "table",
            "ip",
            "natlab_delay",
        ],
    );
    let mut args = vec!["netns", "exec", ns, "iptables", "-D"];
    args.extend(DELAY_IPTABLES);
    while run("ip", &args).is_ok() {}
}

impl Lab {
    /// Builds the topology with one site per entry of `kinds` (at most 200). Labs built at
    /// once in one process (parallel tests) get distinct names.
    ///
    /// # Errors
    ///
    /// The failing command and its message; whatever was built is removed.
    pub fn new(kinds: &[NatKind]) -> Result<Lab, String> {
        if kinds.len() > 200 {
            return Err("at most 200 sites".into());
        }
        // Interface names are at most 15 bytes: the tag (≤ 9: "n", the pid and a counter of
        // labs in this process, in hex) and a suffix of at most 5 ("w199a").
        static LABS: AtomicU32 = AtomicU32::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed) % 16;
        let tag = format!("n{:x}{n:x}", std::process::id() % 0x100_0000);
        let mut lab = Lab {
            public_ns: format!("{tag}-pub"),
            inet_ns: format!("{tag}-inet"),
            sites: Vec::new(),
            namespaces: Vec::new(),
            tag,
            delayers: Mutex::new(Vec::new()),
        };
        lab.build(kinds)?;
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A veth pair with one end in each namespace, renamed `a_name` / `b_name` there.
    fn veth(&self, suffix: &str, a: (&str, &str), b: (&str, &str)) -> Result<(), String> {
        let (ta, tb) = (
            format!("{}{suffix}a", self.tag),
            format!("{}{suffix}b", self.tag),
        );
        ip(&["link", "add", &ta, "type", "veth", "peer", "name", &tb])?;
        for ((ns, name), tmp) in [(a, &ta), (b, &tb)] {
            if let Err(e) = ip(&["link", "set", tmp, "netns", ns]) {
                let _ = ip(&["link", "del", &ta]);
                return Err(e);
            }
            ip(&["-n", ns, "link", "set", tmp, "name", name])?;
            ip(&["-n", ns, "link", "set", name, "up"])?;
        }
        Ok(())
    }

    fn build(&mut self, kinds: &[NatKind]) -> Result<(), String> {
        let (public, inet) = (self.public_ns.clone(), self.inet_ns.clone());
        self.add_ns(&public)?;
        self.add_ns(&inet)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &inet,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &inet, "addr", "add", "192.0.2.1/24", "dev", "br0"])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        self.veth("p", (&public, "eth0"), (&inet, "pub"))?;
        ip(&["-n", &inet, "addr", "add", "198.51.100.1/24", "dev", "pub"])?;
        ip(&["-n", &inet, "addr", "add", "203.0.113.1/24", "dev", "pub"])?;
        ip(&[
            "-n",
            &public,
            "addr",
            "add",
            "198.51.100.10/24",
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &public,
            "addr",
            "add",
            "203.0.113.10/24",
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &public,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
        ])?;
        for (i, kind) in kinds.iter().enumerate() {
            let router = format!("{}-nat{i}", self.tag);
            let host = format!("{}-host{i}", self.tag);
            self.add_ns(&router)?;
            self.add_ns(&host)?;
            let wan_ip = Ipv4Addr::new(192, 0, 2, 11 + i as u8);
            let host_ip = Ipv4Addr::new(10, i as u8 + 1, 0, 2);
            let lan_gw = Ipv4Addr::new(10, i as u8 + 1, 0, 1);
            self.veth(
                &format!("w{i}"),
                (&router, "wan"),
                (&inet, &format!("s{i}")),
            )?;
            ip(&[
                "-n",
                &inet,
                "link",
                "set",
                &format!("s{i}"),
                "master",
                "br0",
            ])?;
            self.veth(&format!("l{i}"), (&host, "eth0"), (&router, "lan"))?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{wan_ip}/24"),
                "dev",
                "wan",
            ])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{lan_gw}/24"),
                "dev",
                "lan",
            ])?;
            ip(&["-n", &router, "route", "add", "default", "via", "192.0.2.1"])?;
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &router,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &lan_gw.to_string(),
            ])?;
            nft_in(&router, &kind.ruleset(wan_ip, host_ip))?;
            self.sites.push(Site {
                kind: *kind,
                router_ns: router,
                host_ns: host,
                host_ip,
                wan_ip,
            });
        }
        Ok(())
    }

    /// Drops `percent` % of the UDP packets the internet router forwards, at random, both
    /// ways (nftables `numgen random`, in the kernel: no netem here); 0 removes the loss.
    /// Every path between sites and the public host crosses that router once.
    ///
    /// # Errors
    ///
    /// `percent` over 100, or nft failed.
    pub fn set_loss(&self, percent: u8) -> Result<(), String> {
        if percent > 100 {
            return Err(format!("loss of {percent} %"));
        }
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.inet_ns,
                "nft",
                "delete",
                "table",
                "ip",
                "impair",
            ],
        );
        if percent == 0 {
            return Ok(());
        }
        nft_in(
            &self.inet_ns,
            &format!(
                "table ip impair {{
  chain loss {{ type filter hook forward priority -10; policy accept;
    meta l4proto udp numgen random mod 100 < {percent} counter drop
  }}
}}
"
            ),
        )
    }

    /// Delays every UDP packet a NAT router forwards by `one_way`, both ways, on every site
    /// (the access links): a host's round trip to the public host grows by `2 × one_way`,
    /// a round trip between two hosts behind NATs by `4 × one_way`. Zero removes the delay.
    /// Combines with [`Lab::set_loss`] (loss is applied by the internet router, after or
    /// before the delay). Calling it again replaces the previous delay.
    ///
    /// The kernel here has no netem, so the delay is made in user space: a rule in each
    /// router's forward hook (nftables `meta l4proto udp queue num 0`, or where the kernel
    /// lacks nftables' `queue` expression, as here, iptables `-p udp -j NFQUEUE`, which
    /// iptables-nft runs through nftables' xt compatibility) hands packets to a
    /// netlink socket of `nfnetlink_queue` (the `nfqueue` module of this crate), whose
    /// thread gives each packet its verdict `one_way` after it arrived, in arrival order:
    /// packets are never reordered. Precision is that of a thread's sleep (~0.1–1 ms on a
    /// loaded machine); up to 10,000 packets per router wait at once, beyond which the kernel
    /// drops them like a full router queue.
    ///
    /// # Errors
    ///
    /// A namespace could not be entered, the queue could not be bound (no
    /// `nfnetlink_queue` in the kernel), or neither nft nor iptables could add the rule; the
    /// delay is then removed.
    pub fn set_delay(&self, one_way: Duration) -> Result<(), String> {
        let mut delayers = self.delayers.lock().unwrap_or_else(|e| e.into_inner());
        // The rules go first, so no packet waits for a thread that is gone.
        for site in &self.sites {
            unqueue_udp(&site.router_ns);
        }
        delayers.clear();
        if one_way.is_zero() {
            return Ok(());
        }
        let result = self.install_delay(one_way, &mut delayers);
        if result.is_err() {
            drop(delayers);
            let _ = self.set_delay(Duration::ZERO);
        }
        result
    }

    fn install_delay(&self, one_way: Duration, delayers: &mut Vec<Delayer>) -> Result<(), String> {
        for site in &self.sites {
            let delayer = Lab::enter(&site.router_ns, move || Delayer::start(0, one_way))?
                .map_err(|e| format!("nfqueue in {}: {e}", site.router_ns))?;
            delayers.push(delayer);
            queue_udp(&site.router_ns)?;
        }
        Ok(())
    }

    /// Drops `percent` % of the UDP packets every NAT router forwards, at random, both ways:
    /// loss on each site's access link, so a packet between two sites crosses two lossy
    /// links (`1 − (1 − p)²` end to end) and one between a site and the public host one;
    /// 0 removes it. Counted by [`Lab::access_loss_dropped`].
    ///
    /// # Errors
    ///
    /// `percent` over 100, or nft failed.
    pub fn set_access_loss(&self, percent: u8) -> Result<(), String> {
        if percent > 100 {
            return Err(format!("loss of {percent} %"));
        }
        for site in &self.sites {
            let _ = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &site.router_ns,
                    "nft",
                    "delete",
                    "table",
                    "ip",
                    "impair",
                ],
            );
            if percent > 0 {
                nft_in(
                    &site.router_ns,
                    &format!(
                        "table ip impair {{
  chain loss {{ type filter hook forward priority -10; policy accept;
    meta l4proto udp numgen random mod 100 < {percent} counter drop
  }}
}}
"
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// UDP packets released by [`Lab::set_delay`]'s threads since the delay was last set.
    pub fn delayed_packets(&self) -> u64 {
        self.delayers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(Delayer::delayed)
            .sum()
    }

    /// UDP packets dropped by [`Lab::set_access_loss`] so far, all sites together.
    ///
    /// # Errors
    ///
    /// nft failed or printed no counter.
    pub fn access_loss_dropped(&self) -> Result<u64, String> {
        let mut total = 0;
        for site in &self.sites {
            total += dropped_in(&site.router_ns)?;
        }
        Ok(total)
    }

    /// UDP packets dropped by [`Lab::set_loss`] so far (0 without loss).
    ///
    /// # Errors
    ///
    /// nft failed or printed no counter.
    pub fn loss_dropped(&self) -> Result<u64, String> {
        dropped_in(&self.inet_ns)
    }

    /// Runs `f` on a new thread inside the network namespace `ns` and returns its result.
    /// Sockets `f` opens belong to `ns` for their whole life, whichever thread uses them.
    ///
    /// # Errors
    ///
    /// The namespace cannot be entered, or `f` panicked.
    pub fn enter<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        Lab::spawn_in(ns, f)?
            .join()
            .map_err(|_| "the thread in the namespace panicked".to_string())?
    }

    /// Starts `f` on a new thread inside the network namespace `ns` (a whole node, say,
    /// with its own tokio runtime); the handle yields `f`'s result, or why the namespace
    /// could not be entered.
    ///
    /// # Errors
    ///
    /// The namespace does not exist or the thread cannot be started.
    pub fn spawn_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, String>>, String> {
        let path = format!("/var/run/netns/{ns}");
        let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        std::thread::Builder::new()
            .name(format!("netns {ns}"))
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {path}: {e}"))?;
                Ok(f())
            })
            .map_err(|e| format!("thread for {ns}: {e}"))
    }

    /// A UDP socket bound to `addr` inside namespace `ns`.
    ///
    /// # Errors
    ///
    /// As [`Lab::enter`], or the bind failed.
    pub fn udp_socket(ns: &str, addr: SocketAddrV4) -> Result<UdpSocket, String> {
        Lab::enter(ns, move || UdpSocket::bind(SocketAddr::V4(addr)))?
            .map_err(|e| format!("bind {addr} in {ns}: {e}"))
    }
}

/// The packets the `impair` table of `ns` dropped (0 without the table).
fn dropped_in(ns: &str) -> Result<u64, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "impair"])
        .output()
        .map_err(|e| format!("nft list: {e}"))?;
    if !out.status.success() {
        return Ok(0);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("no packet count in {text}"));
        }
    }
    Err(format!("no counter in {text}"))
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.set_delay(Duration::ZERO);
        // Deleting a namespace deletes its veth ends (and the peers) and nftables tables.
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
