//! The fake-IP pool and the name ↔ address memory.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// 198.18.0.0/15 (RFC 2544 benchmarking range): never routed on the
/// internet, so a fake address cannot collide with a real destination.
const FAKE_V4_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const FAKE_V4_SIZE: u32 = 1 << 17;
/// 2001:2::/48 (RFC 5180), the IPv6 benchmarking range.
const FAKE_V6_BASE: u128 = 0x2001_0002_0000_0000_0000_0000_0000_0000;

#[derive(Debug, thiserror::Error)]
#[error("the fake address pool (198.18.0.0/15) is exhausted: every address was given out within the last {RECYCLE_SECS} s")]
pub struct PoolExhausted;

/// Indexes of the pool: 0 would be the network address; the top /29 holds
/// the sidecar's TUN addresses (`JailNet::sidecar`).
const POOL_SIZE: u32 = FAKE_V4_SIZE - 9;
/// The pool's last indexes, kept for names the rules claim or `hosts:`
/// gives: a SUT asking for ever new names (random subdomains, a crawler)
/// must not leave the mocked ones unanswered.
const RESERVED_FOR_CLAIMED: u32 = 4096;
/// An address unused (not answered, no new flow) this long may be given
/// to another name once the pool is full: far past the answers' TTL (30
/// s), so a client's cache has let go of it.
const RECYCLE_SECS: u32 = 300;
/// Real addresses remembered for passed flows' names, at most.
const REAL_NAMES_KEPT: usize = 65_536;

/// Name ↔ address memory for the whole run.
#[derive(Debug)]
pub struct NameTable {
    by_name: HashMap<String, u32>,
    /// Index - 1 → the name it was given to.
    names: Vec<String>,
    /// Index - 1 → when it was last answered or dialled, in seconds from
    /// `epoch`.
    last_used: Vec<u32>,
    epoch: Instant,
    /// Seconds added to the clock (tests move time on with it).
    skew: u32,
    /// No address can be recycled before this time (seconds from `epoch`):
    /// spares a scan per query while the pool is full of recent names.
    no_recycle_before: u32,
    /// Indexes handed out, at most (smaller in tests).
    pool: u32,
    /// Of them, the last ones kept for claimed names.
    reserved: u32,
    /// Real addresses the host resolver returned, so passed flows still
    /// know the name the SUT asked for.
    real: HashMap<IpAddr, String>,
}

impl Default for NameTable {
    fn default() -> Self {
        Self::with_pool(POOL_SIZE, RESERVED_FOR_CLAIMED)
    }
}

impl NameTable {
    fn with_pool(pool: u32, reserved: u32) -> Self {
        NameTable {
            by_name: HashMap::new(),
            names: Vec::new(),
            last_used: Vec::new(),
            epoch: Instant::now(),
            skew: 0,
            no_recycle_before: 0,
            pool,
            reserved,
            real: HashMap::new(),
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs())
            .unwrap_or(u32::MAX)
            .saturating_add(self.skew)
    }

    /// The fake pair (v4, v6) for `name`, allocated on first use. `claimed`:
    /// the rules claim the name (or `hosts:` gives it), so the reserved end
    /// of the pool serves it too. Once the pool is full, the address used
    /// the longest ago (and not for `RECYCLE_SECS`) goes to the new name.
    pub fn fake_for(
        &mut self,
        name: &str,
        claimed: bool,
    ) -> Result<(Ipv4Addr, Ipv6Addr), PoolExhausted> {
        let now = self.now();
        let idx = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let limit = if claimed {
                    self.pool
                } else {
                    self.pool - self.reserved
                };
                let i = if (self.names.len() as u32) < limit {
                    self.names.push(name.to_string());
                    self.last_used.push(now);
                    self.names.len() as u32
                } else {
                    if now < self.no_recycle_before {
                        return Err(PoolExhausted);
                    }
                    let i = match self.least_recently_used(limit, now) {
                        Ok(i) => i,
                        Err(oldest) => {
                            self.no_recycle_before = oldest.saturating_add(RECYCLE_SECS);
                            return Err(PoolExhausted);
                        }
                    };
                    let old = std::mem::replace(&mut self.names[i as usize - 1], name.to_string());
                    self.by_name.remove(&old);
                    i
                };
                self.by_name.insert(name.to_string(), i);
                i
            }
        };
        self.last_used[idx as usize - 1] = now;
        Ok((
            Ipv4Addr::from(FAKE_V4_BASE + idx),
            Ipv6Addr::from(FAKE_V6_BASE + u128::from(idx)),
        ))
    }

    /// The index among the first `limit` used the longest ago, if that was
    /// at least `RECYCLE_SECS` before `now`; else when it was used. A
    /// scan: it runs only once the pool is full, over at most its 131k
    /// entries, and not again before something can be recycled.
    fn least_recently_used(&self, limit: u32, now: u32) -> Result<u32, u32> {
        let (i, &t) = self.last_used[..limit as usize]
            .iter()
            .enumerate()
            .min_by_key(|(_, &t)| t)
            .ok_or(now)?;
        if now.saturating_sub(t) >= RECYCLE_SECS {
            Ok(i as u32 + 1)
        } else {
            Err(t)
        }
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
        if self.real.len() >= REAL_NAMES_KEPT && !self.real.contains_key(&ip) {
            // One makes room (any: the map keeps no order), not all.
            if let Some(old) = self.real.keys().next().copied() {
                self.real.remove(&old);
            }
        }
        self.real.insert(ip, name.to_string());
    }

    /// The name behind an address: a fake one's owner, or the last name
    /// the host resolver answered with this address. A fake one counts as
    /// used now (a flow is being opened to it).
    pub fn name_of(&mut self, ip: IpAddr) -> Option<&str> {
        if let Some(i) = Self::index_of(ip) {
            let now = self.now();
            let slot = usize::try_from(i.checked_sub(1)?).ok()?;
            *self.last_used.get_mut(slot)? = now;
            return self.names.get(slot).map(String::as_str);
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
        let (a4, a6) = t.fake_for("a.test", false).unwrap();
        let (b4, _) = t.fake_for("b.test", false).unwrap();
        assert_eq!(a4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(b4, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(t.fake_for("a.test", false).unwrap().0, a4);
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

    /// Moves the table's clock `secs` ahead.
    fn later(t: &mut NameTable, secs: u32) {
        t.skew += secs;
    }

    #[test]
    fn a_full_pool_recycles_the_address_used_longest_ago() {
        let mut t = NameTable::with_pool(4, 1);
        let a = t.fake_for("a.test", false).unwrap().0;
        later(&mut t, 100);
        let b = t.fake_for("b.test", false).unwrap().0;
        let c = t.fake_for("c.test", false).unwrap().0;
        // Three unclaimed names fill the unreserved part; a fourth must wait
        // until one of them has not been used for RECYCLE_SECS.
        assert!(t.fake_for("d.test", false).is_err());
        later(&mut t, RECYCLE_SECS - 50);
        // a.test was used 350 s ago, b and c 250 s ago: not yet for them.
        let d = t.fake_for("d.test", false).unwrap().0;
        assert_eq!(d, a);
        assert_eq!(t.name_of(a.into()), Some("d.test"));
        assert_eq!(t.fake_for("a.test", false).map(|p| p.0).ok(), None);
        // A flow to b.test's address counts as a use: c.test goes next.
        later(&mut t, 100);
        assert_eq!(t.name_of(b.into()), Some("b.test"));
        let e = t.fake_for("e.test", false).unwrap().0;
        assert_eq!(e, c);
        assert_eq!(t.fake_for("b.test", false).unwrap().0, b);
    }

    #[test]
    fn claimed_names_are_answered_from_the_reserve() {
        let mut t = NameTable::with_pool(4, 1);
        for n in ["a", "b", "c"] {
            t.fake_for(&format!("{n}.random.test"), false).unwrap();
        }
        assert!(t.fake_for("d.random.test", false).is_err());
        let api = t.fake_for("api.test", true).unwrap().0;
        assert_eq!(t.name_of(api.into()), Some("api.test"));
        assert_eq!(t.fake_for("api.test", true).unwrap().0, api);
    }
}
