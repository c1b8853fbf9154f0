//! The sidecar's front door: in a Kubernetes pod every container already
//! shares one network namespace, so instead of making a jail meshwrap
//! prepares a TUN in the pod's namespace (`sidecar-init`, the only step
//! that needs NET_ADMIN) and later attaches to it with no capability.
//! From the stack up everything is the same as under `meshwrap -- cmd`.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use nix::unistd::{Gid, Uid};

pub use super::netlink::SidecarReport;
use super::netlink::{self, SidecarRouting};
use super::tun::{self, TunError};
use crate::model::JailNet;

/// The uid Istio's sidecar uses; meshwrap's default for the same reason:
/// one well-known uid whose sockets bypass the interception.
pub const DEFAULT_OWNER: u32 = 1337;
/// The routing table whose default route is the TUN.
pub const DEFAULT_TABLE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Tun(#[from] TunError),
    // The netlink error is in the message and not a source, so the CLI's
    // error chain prints it once.
    #[error("cannot set up routing for {tun}: {cause} (sidecar-init needs CAP_NET_ADMIN)")]
    Routing {
        tun: String,
        cause: netlink::NetlinkError,
    },
    #[error("cannot drop privileges to uid {uid}, gid {gid}: {source} (the single-container form needs CAP_SETUID and CAP_SETGID)")]
    Drop {
        uid: u32,
        gid: u32,
        #[source]
        source: nix::Error,
    },
}

/// An address range excluded from interception, e.g. `10.96.0.1/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range (e.g. 10.96.0.0/12)"))?;
        let max = if addr.is_ipv6() { 128 } else { 32 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0-{max}")),
            },
        };
        Ok(Cidr { addr, len })
    }
}

/// A destination port or inclusive range, e.g. `5432` or `15000-15010`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?} is not a port (1-65535) or a range like 15000-15010"))
        };
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if start > end {
            return Err(format!("{s:?}: the range is backwards"));
        }
        Ok(PortRange { start, end })
    }
}

/// What `sidecar-init` sets up.
#[derive(Debug, Clone)]
pub struct SidecarInit {
    pub tun: String,
    pub owner: u32,
    /// Also required of the attaching process, when given.
    pub group: Option<u32>,
    pub table: u32,
    pub exclude_cidrs: Vec<Cidr>,
    pub exclude_ports: Vec<PortRange>,
}

/// Creates the persistent TUN owned by the sidecar's uid and routes every
/// packet the pod originates into it, except the sidecar's own, loopback,
/// replies from the pod's addresses and the exclusions.
pub fn init(plan: &SidecarInit, net: &JailNet) -> Result<SidecarReport, SidecarError> {
    tun::create_persistent(&plan.tun, plan.owner, plan.group)?;
    let cidrs: Vec<(IpAddr, u8)> = plan.exclude_cidrs.iter().map(|c| (c.addr, c.len)).collect();
    let ports: Vec<(u16, u16)> = plan
        .exclude_ports
        .iter()
        .map(|p| (p.start, p.end))
        .collect();
    netlink::configure_sidecar(&SidecarRouting {
        tun: &plan.tun,
        net,
        owner: plan.owner,
        table: plan.table,
        exclude_cidrs: &cidrs,
        exclude_ports: &ports,
    })
    .map_err(|cause| SidecarError::Routing {
        tun: plan.tun.clone(),
        cause,
    })
}

/// Attaches to the TUN `sidecar-init` made; needs no capability when run
/// as its owner.
pub fn attach(name: &str) -> Result<OwnedFd, SidecarError> {
    Ok(tun::attach(name)?)
}

/// Becomes `uid`/`gid` for good: no supplementary groups, no capabilities
/// (the kernel clears them when root's uids all change) and no way to gain
/// any back (no_new_privs). The single-container form calls it between
/// the init step and serving.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), SidecarError> {
    let err = |source| SidecarError::Drop { uid, gid, source };
    nix::unistd::setgroups(&[]).map_err(err)?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(err)?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(err)?;
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    nix::errno::Errno::result(rc).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_and_ports() {
        assert_eq!(
            "10.96.0.0/12".parse::<Cidr>().unwrap(),
            Cidr {
                addr: "10.96.0.0".parse().unwrap(),
                len: 12
            }
        );
        assert_eq!("fd00::1".parse::<Cidr>().unwrap().len, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("kube-dns".parse::<Cidr>().is_err());
        assert_eq!(
            "15000-15010".parse::<PortRange>().unwrap(),
            PortRange {
                start: 15000,
                end: 15010
            }
        );
        assert_eq!("443".parse::<PortRange>().unwrap().end, 443);
        assert!("0".parse::<PortRange>().is_err());
        assert!("20-10".parse::<PortRange>().is_err());
    }
}
