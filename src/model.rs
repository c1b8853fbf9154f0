//! Small types that travel between the stages of a connection's path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// Identifies one flow (TCP connection or UDP association) for the whole run.
pub type FlowId = u64;

/// The addresses of the jail's network. The SUT sits at `sut_*`; the
/// gateway addresses stand for the host's loopback (like slirp4netns's
/// 10.0.2.2) and the resolver addresses answer DNS.
#[derive(Debug, Clone, Copy)]
pub struct JailNet {
    pub sut_v4: Ipv4Addr,
    pub gateway_v4: Ipv4Addr,
    pub dns_v4: Ipv4Addr,
    pub prefix_v4: u8,
    pub sut_v6: Ipv6Addr,
    pub gateway_v6: Ipv6Addr,
    pub dns_v6: Ipv6Addr,
    pub prefix_v6: u8,
    pub mtu: u16,
}

impl Default for JailNet {
    fn default() -> Self {
        JailNet {
            sut_v4: Ipv4Addr::new(10, 0, 2, 100),
            gateway_v4: Ipv4Addr::new(10, 0, 2, 2),
            dns_v4: Ipv4Addr::new(10, 0, 2, 3),
            prefix_v4: 24,
            sut_v6: Ipv6Addr::new(0xfd00, 0x6d77, 0, 0, 0, 0, 0, 0x100),
            gateway_v6: Ipv6Addr::new(0xfd00, 0x6d77, 0, 0, 0, 0, 0, 2),
            dns_v6: Ipv6Addr::new(0xfd00, 0x6d77, 0, 0, 0, 0, 0, 3),
            prefix_v6: 64,
            mtu: 65520,
        }
    }
}

impl JailNet {
    /// The addresses of the sidecar's TUN in a pod. They sit at the top
    /// of 198.18.0.0/15, which the fake-address pool leaves out, and in
    /// tiny prefixes so they cannot shadow any address of a cluster. The
    /// gateway still stands for loopback: the pod's.
    pub fn sidecar() -> JailNet {
        JailNet {
            sut_v4: Ipv4Addr::new(198, 19, 255, 254),
            gateway_v4: Ipv4Addr::new(198, 19, 255, 249),
            dns_v4: Ipv4Addr::new(198, 19, 255, 250),
            prefix_v4: 29,
            sut_v6: Ipv6Addr::new(0xfd00, 0x6d77, 0, 0, 0, 0, 0, 0x106),
            gateway_v6: Ipv6Addr::new(0xfd00, 0x6d77, 0, 0, 0, 0, 0, 0x101),
            dns_v6: Ipv6Addr::new(0xfd00, 0x6d77, 0, 0, 0, 0, 0, 0x102),
            prefix_v6: 125,
            mtu: 65520,
        }
    }

    /// Name that resolves to the gateway, i.e. the host's loopback.
    pub const HOST_NAME: &'static str = "host.meshwrap.internal";

    pub fn is_gateway(&self, ip: IpAddr) -> bool {
        ip == IpAddr::V4(self.gateway_v4) || ip == IpAddr::V6(self.gateway_v6)
    }

    pub fn is_resolver(&self, ip: IpAddr) -> bool {
        ip == IpAddr::V4(self.dns_v4) || ip == IpAddr::V6(self.dns_v6)
    }

    /// The host loopback address of the same family as `ip`.
    pub fn host_loopback_for(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
}

/// What the stack knows about a new flow when its first packet arrives.
#[derive(Debug, Clone, Serialize)]
pub struct FlowMeta {
    pub id: FlowId,
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The hostname the SUT asked DNS for, when the destination came from
    /// meshwrap's resolver. Later refined by SNI or a Host header.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// What the sniffer classified a flow as; its vocabulary (one variant per
/// detector) is the sniffer's, so it is defined there.
pub use crate::sniff::Protocol;

/// What happens to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    /// Connected to the real destination and bytes copied both ways.
    Pass,
    /// Reset (TCP) or dropped (UDP).
    Refuse,
    /// Answered in-process by a responder.
    Mock,
}

impl DecisionKind {
    pub fn label(self) -> &'static str {
        match self {
            DecisionKind::Pass => "pass",
            DecisionKind::Refuse => "refuse",
            DecisionKind::Mock => "mock",
        }
    }
}

/// A decision together with why it was taken and where a passed flow goes.
#[derive(Debug, Clone)]
pub struct Decision {
    pub kind: DecisionKind,
    pub reason: String,
    /// For pass: the real address to connect to from the host namespace.
    pub upstream: Option<SocketAddr>,
    /// For pass: a name to resolve on the host at connect time when the
    /// destination is a fake IP without a fixed upstream.
    pub upstream_name: Option<(String, u16)>,
    /// The service that claimed the flow, if any.
    pub service: Option<String>,
}
