//! Parsing the IP packets the SUT sends just far enough to route them, and
//! building the few packets meshwrap writes itself (UDP replies, ICMP).

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr,
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

/// What a packet from the SUT is, as far as routing needs to know.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        syn: bool,
        ack: bool,
        rst: bool,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// An ICMP or ICMPv6 echo request.
    Echo {
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// Anything else (router solicitations, MLD, fragments, junk): dropped.
    Other,
}

fn transport<'a>(src: IpAddr, dst: IpAddr, proto: IpProtocol, payload: &'a [u8]) -> Parsed<'a> {
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(t) => Parsed::Tcp {
                src: SocketAddr::new(src, t.src_port()),
                dst: SocketAddr::new(dst, t.dst_port()),
                syn: t.syn(),
                ack: t.ack(),
                rst: t.rst(),
            },
            Err(_) => Parsed::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(u) => Parsed::Udp {
                src: SocketAddr::new(src, u.src_port()),
                dst: SocketAddr::new(dst, u.dst_port()),
                payload: u.payload(),
            },
            Err(_) => Parsed::Other,
        },
        IpProtocol::Icmp => {
            let Ok(p) = Icmpv4Packet::new_checked(payload) else {
                return Parsed::Other;
            };
            match Icmpv4Repr::parse(&p, &ChecksumCapabilities::ignored()) {
                Ok(Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => Parsed::Echo {
                    src,
                    dst,
                    ident,
                    seq_no,
                    data,
                },
                _ => Parsed::Other,
            }
        }
        IpProtocol::Icmpv6 => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
                return Parsed::Other;
            };
            let Ok(p) = Icmpv6Packet::new_checked(payload) else {
                return Parsed::Other;
            };
            match Icmpv6Repr::parse(&s, &d, &p, &ChecksumCapabilities::ignored()) {
                Ok(Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => Parsed::Echo {
                    src,
                    dst,
                    ident,
                    seq_no,
                    data,
                },
                _ => Parsed::Other,
            }
        }
        _ => Parsed::Other,
    }
}

/// Parses an IPv4 or IPv6 packet. Never panics, whatever the bytes.
pub(crate) fn parse(buf: &[u8]) -> Parsed<'_> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(p) = Ipv4Packet::new_checked(buf) else {
                return Parsed::Other;
            };
            // Fragments other than the first carry no transport header.
            if p.more_frags() || p.frag_offset() != 0 {
                return Parsed::Other;
            }
            let hl = usize::from(p.header_len());
            let total = usize::from(p.total_len()).min(buf.len());
            let Some(payload) = buf.get(hl..total) else {
                return Parsed::Other;
            };
            transport(
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.next_header(),
                payload,
            )
        }
        Some(6) => {
            let Ok(p) = Ipv6Packet::new_checked(buf) else {
                return Parsed::Other;
            };
            let payload = p.payload();
            transport(
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.next_header(),
                payload,
            )
        }
        _ => Parsed::Other,
    }
}

fn checksums() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

/// Wraps a transport payload of `len` bytes (written by `fill`, which gets
/// the transport buffer and the two addresses) in an IP header.
fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: IpProtocol,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; repr.buffer_len() + len];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p, &checksums());
            fill(p.payload_mut());
            Some(buf)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let repr = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; repr.buffer_len() + len];
            let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            fill(p.payload_mut());
            Some(buf)
        }
        _ => None,
    }
}

/// A UDP datagram from `src` to `dst` (families must agree).
pub(crate) fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let len = repr.header_len() + payload.len();
    if len > usize::from(u16::MAX) {
        return None;
    }
    let (s, d) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    ip_packet(src.ip(), dst.ip(), IpProtocol::Udp, len, |buf| {
        let mut p = UdpPacket::new_unchecked(buf);
        repr.emit(
            &mut p,
            &s,
            &d,
            payload.len(),
            |b| b.copy_from_slice(payload),
            &checksums(),
        );
    })
}

/// The reply to an echo request: from the pinged address back to the SUT.
pub(crate) fn echo_reply(
    src: IpAddr,
    dst: IpAddr,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let repr = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            ip_packet(src, dst, IpProtocol::Icmp, repr.buffer_len(), |buf| {
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &checksums());
            })
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let repr = Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            ip_packet(src, dst, IpProtocol::Icmpv6, repr.buffer_len(), |buf| {
                repr.emit(&s, &d, &mut Icmpv6Packet::new_unchecked(buf), &checksums());
            })
        }
        _ => None,
    }
}

/// "Host unreachable" about `original` (a packet the SUT sent), sent from
/// the address it tried to reach. Linux turns this into EHOSTUNREACH for a
/// connect in progress.
pub(crate) fn host_unreachable(original: &[u8]) -> Option<Vec<u8>> {
    match original.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(original).ok()?;
            let header = Ipv4Repr::parse(&p, &ChecksumCapabilities::ignored()).ok()?;
            let payload = p.payload();
            let data = &payload[..payload.len().min(8)];
            let repr = Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::HostUnreachable,
                header,
                data,
            };
            ip_packet(
                IpAddr::V4(header.dst_addr),
                IpAddr::V4(header.src_addr),
                IpProtocol::Icmp,
                repr.buffer_len(),
                |buf| repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &checksums()),
            )
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(original).ok()?;
            let header = Ipv6Repr::parse(&p).ok()?;
            let payload = p.payload();
            // Quote as much as fits the IPv6 minimum MTU, as RFC 4443 asks.
            let data = &payload[..payload.len().min(1280 - 48 - 40)];
            let repr = Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::AddrUnreachable,
                header,
                data,
            };
            let (s, d) = (header.dst_addr, header.src_addr);
            ip_packet(
                IpAddr::V6(s),
                IpAddr::V6(d),
                IpProtocol::Icmpv6,
                repr.buffer_len(),
                |buf| repr.emit(&s, &d, &mut Icmpv6Packet::new_unchecked(buf), &checksums()),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn udp_roundtrip() {
        let src: SocketAddr = "10.0.2.3:53".parse().unwrap();
        let dst: SocketAddr = "10.0.2.100:4000".parse().unwrap();
        let pkt = udp(src, dst, b"hello").unwrap();
        assert_eq!(
            parse(&pkt),
            Parsed::Udp {
                src,
                dst,
                payload: b"hello"
            }
        );
        let src6: SocketAddr = "[fd00:6d77::3]:53".parse().unwrap();
        let dst6: SocketAddr = "[fd00:6d77::100]:4000".parse().unwrap();
        let pkt = udp(src6, dst6, b"x").unwrap();
        assert_eq!(
            parse(&pkt),
            Parsed::Udp {
                src: src6,
                dst: dst6,
                payload: b"x"
            }
        );
    }

    #[test]
    fn echo_reply_parses() {
        let a: IpAddr = "10.0.2.2".parse().unwrap();
        let b: IpAddr = "10.0.2.100".parse().unwrap();
        let pkt = echo_reply(a, b, 7, 1, b"ping").unwrap();
        assert!(matches!(parse(&pkt), Parsed::Other)); // a reply is not a request
        let unreachable = host_unreachable(
            &udp(
                "10.0.2.100:1".parse().unwrap(),
                "10.0.2.9:2".parse().unwrap(),
                b"abc",
            )
            .unwrap(),
        );
        assert!(unreachable.is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&buf);
            let _ = host_unreachable(&buf);
        }

        #[test]
        fn parse_ipv4_shaped_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..120), proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8)]) {
            let mut buf = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2];
            let total = (buf.len() + tail.len()) as u16;
            buf[2..4].copy_from_slice(&total.to_be_bytes());
            buf.extend(tail);
            let _ = parse(&buf);
            let _ = host_unreachable(&buf);
        }
    }
}
