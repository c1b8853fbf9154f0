//! Addresses and routes inside the jail, set through rtnetlink (the
//! container image has no `ip`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::model::JailNet;

/// Why the jail's or the pod's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("no link named {0}")]
    NoLink(String),
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Labels a failed netlink request with what it was for.
fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// Brings `lo` and the TUN up, gives the TUN the SUT's addresses and routes
/// everything (both families) through it.
/// Packets the kernel queues on the TUN for meshwrap to read. The default
/// 500 overflowed when thousands of connections opened at once (the
/// stress bench saw 9,729 of 25,600 dropped: SYNs resent after a second,
/// DNS queries retried after two).
const TUN_QUEUE: u32 = 10_000;

pub(super) fn configure(tun: &str, net: &JailNet) -> Result<(), NetlinkError> {
    // A private current-thread runtime: the child is single-threaded and
    // about to exec, so nothing else runs here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetlinkError::Runtime)?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        let index = |name: &str| {
            let handle = handle.clone();
            let name = name.to_string();
            async move {
                let mut links = handle.link().get().match_name(name.clone()).execute();
                match links.try_next().await {
                    Ok(Some(link)) => Ok(link.header.index),
                    Ok(None) => Err(NetlinkError::NoLink(name)),
                    Err(e) => Err(request(format!("looking up {name}"))(e)),
                }
            }
        };
        let lo = index("lo").await?;
        let tun_idx = index(tun).await?;
        for idx in [lo, tun_idx] {
            let mut link = LinkUnspec::new_with_index(idx).up();
            if idx == tun_idx {
                link = link.txqueuelen(TUN_QUEUE);
            }
            handle
                .link()
                .set(link.build())
                .execute()
                .await
                .map_err(request(format!("setting link {idx} up")))?;
        }
        handle
            .address()
            .add(tun_idx, IpAddr::V4(net.sut_v4), net.prefix_v4)
            .execute()
            .await
            .map_err(request(format!("adding {}", net.sut_v4)))?;
        handle
            .address()
            .add(tun_idx, IpAddr::V6(net.sut_v6), net.prefix_v6)
            .execute()
            .await
            .map_err(request(format!("adding {}", net.sut_v6)))?;
        for (family, route) in default_routes(tun_idx, None, true) {
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(request(format!("adding the {family} default route")))?;
        }
        Ok::<(), NetlinkError>(())
    })
}

/// Default routes (IPv4, and IPv6 when `ipv6`) through the TUN, in the
/// main table or in `table`.
fn default_routes(
    tun_idx: u32,
    table: Option<u32>,
    ipv6: bool,
) -> Vec<(&'static str, rtnetlink::packet_route::route::RouteMessage)> {
    let mut v4 = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .output_interface(tun_idx);
    let mut v6 = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
        .output_interface(tun_idx);
    if let Some(t) = table {
        v4 = v4.table_id(t);
        v6 = v6.table_id(t);
    }
    let mut routes = vec![("IPv4", v4.build())];
    if ipv6 {
        routes.push(("IPv6", v6.build()));
    }
    routes
}

/// The policy routing `sidecar-init` installs, one rule family per step.
/// Lower preference numbers are consulted first; the kernel's `local`
/// table (preference 0) still comes before all of them, so loopback and
/// the pod's own addresses are never sent into the TUN.
pub(super) mod pref {
    /// meshwrap's own uid: the main table (its sockets reach the network).
    pub const OWNER_MAIN: u32 = 100;
    /// ... and nothing else, so a socket of meshwrap's can never loop back
    /// into the TUN when the main table has no route.
    pub const OWNER_UNREACHABLE: u32 = 101;
    /// Packets sourced from the pod's own addresses: replies of inbound
    /// connections (probes, other pods calling the app).
    pub const FROM_POD: u32 = 110;
    /// `--exclude-cidr` destinations.
    pub const EXCLUDED_CIDR: u32 = 120;
    /// `--exclude-port` destinations.
    pub const EXCLUDED_PORT: u32 = 130;
    /// Everything else: the TUN's table.
    pub const INTO_TUN: u32 = 200;
    pub const RANGE: std::ops::RangeInclusive<u32> = OWNER_MAIN..=INTO_TUN;
}

/// What `sidecar-init` asks of the kernel.
pub(super) struct SidecarRouting<'a> {
    pub tun: &'a str,
    pub net: &'a JailNet,
    pub owner: u32,
    pub table: u32,
    pub exclude_cidrs: &'a [(IpAddr, u8)],
    pub exclude_ports: &'a [(u16, u16)],
}

/// What was installed, for the init container's log.
#[derive(Debug, Default)]
pub struct SidecarReport {
    pub pod_addresses: Vec<IpAddr>,
    pub ipv6: bool,
    pub rules: usize,
}

/// Brings the persistent TUN up with the sidecar's addresses, routes the
/// TUN's table into it and installs the rules of [`pref`]. Safe to run
/// again: earlier rules in meshwrap's preference range are replaced.
pub(super) fn configure_sidecar(r: &SidecarRouting<'_>) -> Result<SidecarReport, NetlinkError> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
    use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RulePortRange, RuleUidRange};
    use rtnetlink::packet_route::{AddressFamily, IpProtocol};
    use rtnetlink::IpVersion;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetlinkError::Runtime)?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        let mut links = handle.link().get().match_name(r.tun.to_string()).execute();
        let tun_idx = match links.try_next().await {
            Ok(Some(link)) => link.header.index,
            Ok(None) => return Err(NetlinkError::NoLink(r.tun.to_string())),
            Err(e) => return Err(request(format!("looking up {}", r.tun))(e)),
        };
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(tun_idx)
                    .mtu(u32::from(r.net.mtu))
                    .txqueuelen(TUN_QUEUE)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(request(format!("setting {} up", r.tun)))?;
        let mut report = SidecarReport::default();
        // The pod's own addresses, before the TUN's are added.
        let mut addrs = handle.address().get().execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(request("listing addresses"))?
        {
            if msg.header.index == tun_idx {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    if !ip.is_loopback() && !report.pod_addresses.contains(ip) {
                        report.pod_addresses.push(*ip);
                    }
                }
            }
        }
        handle
            .address()
            .add(tun_idx, IpAddr::V4(r.net.sut_v4), r.net.prefix_v4)
            .replace()
            .execute()
            .await
            .map_err(request(format!("adding {}", r.net.sut_v4)))?;
        // A pod may have IPv6 switched off; then the sidecar is IPv4 only.
        // No duplicate address detection: the TUN has only meshwrap on
        // it, and a tentative address could not be a source for a second
        // after the sidecar attaches (the pod's sysctls are read-only).
        let mut v6_addr = handle
            .address()
            .add(tun_idx, IpAddr::V6(r.net.sut_v6), r.net.prefix_v6)
            .replace();
        v6_addr.message_mut().header.flags = AddressHeaderFlags::Nodad;
        report.ipv6 = match v6_addr.execute().await {
            Ok(()) => true,
            // IPv6 switched off on the link (EACCES) or absent from the
            // kernel (EAFNOSUPPORT, EOPNOTSUPP): serve IPv4 only.
            Err(rtnetlink::Error::NetlinkError(m))
                if [libc::EACCES, libc::EAFNOSUPPORT, libc::EOPNOTSUPP]
                    .contains(&m.raw_code().abs()) =>
            {
                false
            }
            Err(e) => return Err(request(format!("adding {}", r.net.sut_v6))(e)),
        };
        for (family, route) in default_routes(tun_idx, Some(r.table), report.ipv6) {
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(request(format!(
                    "adding the {family} default route of table {}",
                    r.table
                )))?;
        }
        for family in [IpVersion::V4, IpVersion::V6] {
            let v6 = matches!(family, IpVersion::V6);
            // Remove what an earlier run left in meshwrap's range, in both
            // families (an earlier run may have had IPv6). A kernel without
            // IPv6 cannot list its rules: nothing to remove there.
            let mut old = Vec::new();
            let mut rules = handle.rule().get(family.clone()).execute();
            while let Some(msg) = match rules.try_next().await {
                Ok(m) => m,
                Err(_) if v6 => None,
                Err(e) => return Err(request("listing rules")(e)),
            } {
                // Only rules meshwrap made (its protocol mark) in its range:
                // other components of the pod may have rules there too.
                let in_range = msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::Priority(p) if pref::RANGE.contains(p)));
                let marked = msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::Protocol(p) if *p == RULE_PROTOCOL));
                let ours = in_range && marked;
                if ours {
                    old.push(msg);
                }
            }
            for msg in old {
                handle
                    .rule()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(request("removing an earlier rule"))?;
            }
            if v6 && !report.ipv6 {
                continue;
            }
            let mut wanted = Vec::new();
            let uid = RuleAttribute::UidRange(RuleUidRange {
                start: r.owner,
                end: r.owner,
            });
            wanted.push(Rule::new(pref::OWNER_MAIN, Target::Main).with(uid.clone()));
            wanted.push(Rule::new(pref::OWNER_UNREACHABLE, Target::Unreachable).with(uid));
            for ip in report.pod_addresses.iter().filter(|ip| ip.is_ipv6() == v6) {
                let mut rule = Rule::new(pref::FROM_POD, Target::Main);
                rule.from = Some((*ip, if v6 { 128 } else { 32 }));
                wanted.push(rule);
            }
            for cidr in r.exclude_cidrs.iter().filter(|(ip, _)| ip.is_ipv6() == v6) {
                let mut rule = Rule::new(pref::EXCLUDED_CIDR, Target::Main);
                rule.to = Some(*cidr);
                wanted.push(rule);
            }
            for (start, end) in r.exclude_ports {
                for proto in [IpProtocol::Tcp, IpProtocol::Udp] {
                    wanted.push(
                        Rule::new(pref::EXCLUDED_PORT, Target::Main)
                            .with(RuleAttribute::IpProtocol(proto))
                            .with(RuleAttribute::DestinationPortRange(RulePortRange {
                                start: *start,
                                end: *end,
                            })),
                    );
                }
            }
            wanted.push(Rule::new(pref::INTO_TUN, Target::Table(r.table)));
            for rule in wanted {
                let priority = rule.priority;
                let mut req = handle.rule().add().priority(priority);
                req = match rule.target {
                    Target::Main => req.action(RuleAction::ToTable).table_id(MAIN_TABLE),
                    Target::Table(t) => req.action(RuleAction::ToTable).table_id(t),
                    Target::Unreachable => {
                        let mut req = req.action(RuleAction::Unreachable);
                        req.message_mut().header.table = 0;
                        req
                    }
                };
                let msg = req.message_mut();
                msg.header.family = if v6 {
                    AddressFamily::Inet6
                } else {
                    AddressFamily::Inet
                };
                if let Some((ip, len)) = rule.from {
                    msg.header.src_len = len;
                    msg.attributes.push(RuleAttribute::Source(ip));
                }
                if let Some((ip, len)) = rule.to {
                    msg.header.dst_len = len;
                    msg.attributes.push(RuleAttribute::Destination(ip));
                }
                msg.attributes.extend(rule.matches);
                msg.attributes.push(RuleAttribute::Protocol(RULE_PROTOCOL));
                req.execute()
                    .await
                    .map_err(request(format!("adding the rule at preference {priority}")))?;
                report.rules += 1;
            }
        }
        Ok::<_, NetlinkError>(report)
    })
}

const MAIN_TABLE: u32 = 254;

/// The `proto` mark of meshwrap's rules (`ip rule` shows `proto 109`, "m"),
/// so a second run removes its own rules and nothing else.
const RULE_PROTOCOL: rtnetlink::packet_route::route::RouteProtocol =
    rtnetlink::packet_route::route::RouteProtocol::Other(109);

/// Where a rule sends the packets it matches.
enum Target {
    Main,
    Table(u32),
    Unreachable,
}

/// One `ip rule`: its preference, what it matches and where it sends.
struct Rule {
    priority: u32,
    target: Target,
    from: Option<(IpAddr, u8)>,
    to: Option<(IpAddr, u8)>,
    matches: Vec<rtnetlink::packet_route::rule::RuleAttribute>,
}

impl Rule {
    fn new(priority: u32, target: Target) -> Rule {
        Rule {
            priority,
            target,
            from: None,
            to: None,
            matches: Vec::new(),
        }
    }

    fn with(mut self, attr: rtnetlink::packet_route::rule::RuleAttribute) -> Rule {
        self.matches.push(attr);
        self
    }
}
