//! The fake-IP pool and the name ↔ address memory.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// 198.18.0.0/15 (RFC 2544 benchmarking range): never routed on the
/// internet, so a fake address cannot collide with a real destination.
const FAKE_V4_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const FAKE_V4_SIZE: u32 = 1 << 17;
/// 2001:2::/48 (RFC 5180), the IPv6 benchmarking range.
const FAKE_V6_BASE: u128 = 0x2001_0002_0000_0000_0000_0000_0000_0000;

#[derive(Debug, thiserror::Error)]
#[error("the fake address pool (198.18.0.0/15) is exhausted")]
pub struct PoolExhausted;

/// Name ↔ address memory for the whole run.
#[derive(Debug, Default)]
pub struct NameTable {
    by_name: HashMap<String, u32>,
    names: Vec<String>,
    /// Real addresses the host resolver returned, so passed flows still
    /// know the name the SUT asked for.
    real: HashMap<IpAddr, String>,
}

impl NameTable {
    /// The fake pair (v4, v6) for `name`, allocated on first use.
    pub fn fake_for(&mut self, name: &str) -> Result<(Ipv4Addr, Ipv6Addr), PoolExhausted> {
        let idx = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                // Index 0 would be the network address; skip it. The top
                // /29 holds the sidecar's TUN addresses (JailNet::sidecar).
                let i = self.names.len() as u32 + 1;
                if i >= FAKE_V4_SIZE - 8 {
                    return Err(PoolExhausted);
                }
                self.names.push(name.to_string());
                self.by_name.insert(name.to_string(), i);
                i
            }
        };
        Ok((
            Ipv4Addr::from(FAKE_V4_BASE + idx),
            Ipv6Addr::from(FAKE_V6_BASE + u128::from(idx)),
        ))
    }

    /// Whether `ip` lies in one of the fake ranges: all of 198.18.0.0/15
    /// and 2001:2::/48, allocated or not, so that no address of them is
    /// ever taken for a real destination.
    pub fn is_fake(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => u32::from(v4) & !(FAKE_V4_SIZE - 1) == FAKE_V4_BASE,
            IpAddr::V6(v6) => u128::from(v6) >> 80 == FAKE_V6_BASE >> 80,
        }
    }

    /// The pool index of a fake address (IPv6 ones past the pool's size
    /// have none).
    fn index_of(ip: IpAddr) -> Option<u32> {
        if !Self::is_fake(ip) {
            return None;
        }
        match ip {
            IpAddr::V4(v4) => Some(u32::from(v4) - FAKE_V4_BASE),
            IpAddr::V6(v6) => u32::try_from(u128::from(v6) - FAKE_V6_BASE).ok(),
        }
    }

    pub fn remember_real(&mut self, ip: IpAddr, name: &str) {
        self.real.insert(ip, name.to_string());
    }

    /// The name behind an address: a fake one's owner, or the last name
    /// the host resolver answered with this address.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        if let Some(i) = Self::index_of(ip) {
            return i
                .checked_sub(1)
                .and_then(|i| self.names.get(i as usize))
                .map(String::as_str);
        }
        self.real.get(&ip).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_and_remembers() {
        let mut t = NameTable::default();
        let (a4, a6) = t.fake_for("a.test").unwrap();
        let (b4, _) = t.fake_for("b.test").unwrap();
        assert_eq!(a4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(b4, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(t.fake_for("a.test").unwrap().0, a4);
        assert_eq!(t.name_of(a4.into()), Some("a.test"));
        assert_eq!(t.name_of(a6.into()), Some("a.test"));
        assert!(NameTable::is_fake(a6.into()));
        assert!(!NameTable::is_fake("10.0.2.2".parse().unwrap()));
        assert_eq!(t.name_of("198.18.9.9".parse().unwrap()), None);
    }

    #[test]
    fn the_whole_v6_range_is_fake() {
        // 2001:2::/48: beyond the pool's 2^17 indexes too (a /96 once).
        for ip in [
            "2001:2::c9:7",
            "2001:2:0:c9::7",
            "2001:2:0:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(NameTable::is_fake(ip), "{ip}");
            assert_eq!(NameTable::default().name_of(ip), None, "{ip}");
        }
        for ip in [
            "2001:3::1",
            "2001:1:ffff:ffff:ffff:ffff:ffff:ffff",
            "198.20.0.1",
            "198.17.255.255",
        ] {
            assert!(!NameTable::is_fake(ip.parse().unwrap()), "{ip}");
        }
        assert!(NameTable::is_fake("198.19.255.255".parse().unwrap()));
    }
}
