//! Where a flow goes and why. Kept apart from the code that acts on the
//! answer so that `on_syn`, UDP and `meshwrap rules explain` (through
//! `Appliance::decide`) share one set of precedence rules, and so that the
//! order they apply in can be read top to bottom in one place.

use std::net::{IpAddr, SocketAddr};

use super::{Appliance, Snapshot};
use crate::dns::Resolver;
use crate::model::{Decision, DecisionKind, JailNet};
use crate::rules::{Action, FlowKey, Unmatched};

impl Appliance {
    /// Where a flow to `dst` goes and why, under the rules in force.
    pub fn decide(&self, host: Option<&str>, dst: SocketAddr) -> Decision {
        self.decide_with(&self.snapshot(), host, dst)
    }

    /// As `decide`, under a given snapshot (the one the flow keeps).
    pub(super) fn decide_with(
        &self,
        snap: &Snapshot,
        host: Option<&str>,
        dst: SocketAddr,
    ) -> Decision {
        let d = self.decide_inner(snap, host, dst);
        // The admin API listens on the host's loopback: the gateway must not
        // become a way in, unless a rule deliberately claims the port.
        let to_protected = d.kind == DecisionKind::Pass
            && d.service.is_none()
            && d.upstream.is_some_and(|u| self.is_protected(u));
        if to_protected {
            return protected_refusal();
        }
        d
    }

    /// Whether a pass-out to `target` would reach one of meshwrap's own
    /// listeners: a protected port on any address of this host, however
    /// it is written (`::ffff:127.0.0.1`, `0.0.0.0`, `::`, a non-loopback
    /// address of an interface when the admin API listens on all of them).
    pub(super) fn is_protected(&self, target: SocketAddr) -> bool {
        self.inner.protected_ports.contains(&target.port()) && is_host_address(target.ip())
    }

    fn decide_inner(&self, snap: &Snapshot, host: Option<&str>, dst: SocketAddr) -> Decision {
        let net = &self.inner.net;
        let pass = |reason: String,
                    upstream: Option<SocketAddr>,
                    name: Option<(String, u16)>,
                    service: Option<String>| Decision {
            kind: DecisionKind::Pass,
            reason,
            upstream,
            upstream_name: name,
            service,
        };
        let refuse = |reason: String, service: Option<String>| Decision {
            kind: DecisionKind::Refuse,
            reason,
            upstream: None,
            upstream_name: None,
            service,
        };
        let rules = &snap.rules;
        // Where a pass of this flow would connect.
        let target = || -> (Option<SocketAddr>, Option<(String, u16)>) {
            if net.is_gateway(dst.ip()) {
                return (
                    Some(SocketAddr::new(
                        JailNet::host_loopback_for(dst.ip()),
                        dst.port(),
                    )),
                    None,
                );
            }
            if Resolver::is_fake(dst.ip()) {
                if let Some(h) = host {
                    if let Some(addr) = rules.host_address(h) {
                        return (Some(SocketAddr::new(addr, dst.port())), None);
                    }
                    return (None, Some((h.to_string(), dst.port())));
                }
                return (None, None);
            }
            (Some(dst), None)
        };
        if let Some(claim) = rules.claim(FlowKey { host, dst }) {
            let service = Some(claim.service.name.clone());
            return match claim.service.action {
                Action::Pass => {
                    let (up, name) = target();
                    pass(claim.why, up, name, service)
                }
                Action::Refuse => refuse(claim.why, service),
                Action::Mock(_) => {
                    let (up, name) = target();
                    Decision {
                        kind: DecisionKind::Mock,
                        reason: claim.why,
                        upstream: up,
                        upstream_name: name,
                        service,
                    }
                }
            };
        }
        if net.is_gateway(dst.ip()) {
            let (up, _) = target();
            return pass("gateway: the host's loopback".into(), up, None, None);
        }
        if let Some(h) = host {
            if let Some(addr) = rules.host_address(h) {
                return pass(
                    format!("hosts: {h} → {addr}"),
                    Some(SocketAddr::new(addr, dst.port())),
                    None,
                    None,
                );
            }
        }
        match snap.unmatched {
            Unmatched::Refuse => {
                refuse("unmatched: refuse (no rule claims this flow)".into(), None)
            }
            Unmatched::Pass => {
                let (up, name) = target();
                pass("unmatched: pass".into(), up, name, None)
            }
        }
    }

    /// The resolver address answers DNS on port 53 and nothing else (a
    /// TCP flow to port 53 never gets here: `on_syn` accepts it first).
    pub(super) fn refuse_at_resolver(&self, ip: IpAddr) -> Option<Decision> {
        self.inner
            .net
            .is_resolver(ip)
            .then(|| local_refusal("the resolver address only answers DNS on port 53"))
    }

    /// Addresses of the jail's own subnet other than the gateway have
    /// nothing behind them; no rule can send a flow there.
    pub(super) fn refuse_in_jail_subnet(&self, ip: IpAddr) -> Option<Decision> {
        (self.in_jail_subnet(ip) && !self.inner.net.is_gateway(ip))
            .then(|| local_refusal("nothing listens at this address of the jail's own subnet"))
    }

    /// Addresses of the jail's own subnet other than the gateway and the
    /// resolver have nothing behind them.
    fn in_jail_subnet(&self, ip: IpAddr) -> bool {
        let net = &self.inner.net;
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX << (32 - u32::from(net.prefix_v4));
                u32::from(v4) & mask == u32::from(net.sut_v4) & mask
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(net.prefix_v6));
                u128::from(v6) & mask == u128::from(net.sut_v6) & mask
            }
        }
    }
}

/// A refusal that comes before the rules, for an address of the jail's
/// own network.
fn local_refusal(reason: &str) -> Decision {
    Decision {
        kind: DecisionKind::Refuse,
        reason: reason.into(),
        upstream: None,
        upstream_name: None,
        service: None,
    }
}

/// The refusal of a flow that would reach meshwrap's own listeners, taken
/// at the SYN or once a name is resolved on the host.
pub(super) fn protected_refusal() -> Decision {
    Decision {
        kind: DecisionKind::Refuse,
        reason: "meshwrap's admin API is not reachable from the jail (claim the port with a service to allow it)".into(),
        upstream: None,
        upstream_name: None,
        service: None,
    }
}

/// An address that names this host: loopback (also IPv4-mapped), the
/// unspecified address (a connect to it reaches local listeners), or an
/// address of one of its interfaces (it can be bound).
fn is_host_address(ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}
