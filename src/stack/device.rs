//! The smoltcp `Device` the stack hands to the interface for one call: it
//! yields at most the one packet being ingested and collects whatever
//! smoltcp transmits into the stack's output queue. The TUN itself is read
//! and written by the stack task, so smoltcp never blocks on I/O.

use smoltcp::phy::{
    Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken,
};
use smoltcp::time::Instant;

pub(crate) struct PacketIo<'p> {
    pub(crate) rx: Option<&'p [u8]>,
    pub(crate) out: &'p mut Vec<Vec<u8>>,
    pub(crate) mtu: usize,
}

pub(crate) fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    // The jail's kernel checksummed what it sent us and the path is memory,
    // so verifying again on receive only costs time; outgoing checksums stay
    // on because the kernel checks them.
    caps.checksum = ChecksumCapabilities::default();
    caps.checksum.ipv4 = Checksum::Tx;
    caps.checksum.tcp = Checksum::Tx;
    caps.checksum.udp = Checksum::Tx;
    caps
}

pub(crate) struct RxOne<'a>(&'a [u8]);

impl RxToken for RxOne<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub(crate) struct TxOut<'a>(&'a mut Vec<Vec<u8>>);

impl TxToken for TxOut<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for PacketIo<'_> {
    type RxToken<'a>
        = RxOne<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxOut<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxOne<'_>, TxOut<'_>)> {
        let pkt = self.rx.take()?;
        Some((RxOne(pkt), TxOut(self.out)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxOut<'_>> {
        Some(TxOut(self.out))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}
