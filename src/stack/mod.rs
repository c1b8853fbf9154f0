//! The userspace TCP/IP stack: one task owns the TUN fd and a smoltcp
//! `Interface`, accepts TCP connections to any address and port, and hands
//! each one out as a [`Flow`].
//!
//! Shape (see STACK-NOTES.md): flows are demultiplexed by 4-tuple in our
//! own map and each flow owns a one-socket `SocketSet`, so a packet costs
//! O(1) instead of smoltcp's scan over every socket. Only flows that
//! changed (dirty) or whose timer expired are polled for egress.

mod bridge;
mod device;
mod flow;
mod memory;
pub(crate) mod packet;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint};
use tokio::sync::mpsc;
use tun_rs::AsyncDevice;

use crate::model::{FlowId, FlowMeta, JailNet, Transport};
use bridge::move_bytes;
use device::PacketIo;
use flow::{DirtyQueue, FlowShared, Pipe};
use packet::Parsed;

pub use flow::{Flow, FlowHandle};
pub use memory::{map_flow_buffers_lazily, trim_heap};

/// smoltcp socket buffers. The receive size fixes the window scale at
/// socket creation; 1 MiB lets a 64 KiB segment stream without stalls.
/// They cost what a flow writes into them, not 2 MiB each: see
/// `memory::map_flow_buffers_lazily`.
const SOCKET_RX: usize = 1024 * 1024;
const SOCKET_TX: usize = 1024 * 1024;

/// Packets read from the TUN per wake-up before servicing flows.
const RX_BATCH: usize = 64;

/// What the handler decided about a flow at its SYN, carried by the stack
/// (which never looks inside) to `on_flow` with the accepted connection,
/// so the decision travels with the flow instead of waiting in a map.
pub type Ticket = Box<dyn std::any::Any + Send>;

/// What the stack should do with a SYN for a new 4-tuple.
pub enum SynVerdict {
    /// Complete the handshake now and hand out a `Flow` with the ticket.
    Accept(Option<Ticket>),
    /// Answer with RST (the SUT sees ECONNREFUSED).
    Refuse,
    /// Keep the SYN unanswered until [`StackHandle::resolve`] says what to
    /// do (connect-first pass-out).
    Hold,
}

/// The end of a held SYN.
pub enum HeldOutcome {
    /// Complete the handshake and hand out the `Flow` with the ticket.
    Accept(Ticket),
    Refuse,
    /// ICMP host unreachable (the SUT sees EHOSTUNREACH).
    Unreachable,
    /// Say nothing; the SUT's own connect timeout applies.
    Drop,
}

/// A UDP datagram the SUT sent.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// The stack's view of whoever decides about flows.
pub trait FlowHandler: Send + Sync + 'static {
    /// A SYN for a new 4-tuple. May fill in `meta.host`.
    fn on_syn(&self, meta: &mut FlowMeta) -> SynVerdict;
    /// An accepted connection with the ticket its SYN's verdict (or the
    /// held SYN's outcome) gave; the handler owns it from here.
    fn on_flow(&self, meta: FlowMeta, flow: Flow, ticket: Option<Ticket>);
    /// A UDP datagram; replies go through `stack.send_udp`.
    fn on_udp(&self, datagram: Datagram, stack: &StackHandle);
}

enum Ctl {
    Resolve(FlowId, HeldOutcome),
    Inject(Vec<u8>),
}

/// Counters for the control plane.
#[derive(Debug, Default)]
pub struct StackStats {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub flows_active: AtomicU64,
    /// TCP flows ended since the start (the trimmer's cue).
    pub flows_ended: AtomicU64,
}

/// Cheap handle for other tasks: resolve held SYNs, send UDP, read stats.
#[derive(Clone)]
pub struct StackHandle {
    ctl: mpsc::UnboundedSender<Ctl>,
    next_id: Arc<AtomicU64>,
    stats: Arc<StackStats>,
    stopped: Arc<AtomicBool>,
}

impl StackHandle {
    pub fn resolve(&self, id: FlowId, outcome: HeldOutcome) {
        let _ = self.ctl.send(Ctl::Resolve(id, outcome));
    }

    /// Sends a UDP datagram into the jail, from `from` to `to`.
    pub fn send_udp(&self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        if let Some(pkt) = packet::udp(from, to, payload) {
            let _ = self.ctl.send(Ctl::Inject(pkt));
        }
    }

    pub fn next_flow_id(&self) -> FlowId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn stats(&self) -> &StackStats {
        &self.stats
    }

    /// True once the TUN is gone (the jail's network namespace ended).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FourTuple {
    /// The SUT's side.
    src: SocketAddr,
    /// The address the SUT dialled.
    dst: SocketAddr,
}

struct FlowEntry {
    set: SocketSet<'static>,
    handle: SocketHandle,
    shared: Arc<FlowShared>,
    tuple: FourTuple,
    timer: Option<smoltcp::time::Instant>,
}

struct Held {
    syn: Vec<u8>,
    meta: FlowMeta,
}

pub struct Stack {
    dev: AsyncDevice,
    iface: Interface,
    net: JailNet,
    handler: Arc<dyn FlowHandler>,
    flows: HashMap<FlowId, FlowEntry>,
    by_tuple: HashMap<FourTuple, FlowId>,
    held: HashMap<FourTuple, Held>,
    held_by_id: HashMap<FlowId, FourTuple>,
    timers: BTreeSet<(smoltcp::time::Instant, FlowId)>,
    dirty: Arc<DirtyQueue>,
    out: Vec<Vec<u8>>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    handle: StackHandle,
    /// Used to answer packets no socket wants (RST to a stray segment).
    empty: SocketSet<'static>,
}

fn smol_now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}

impl Stack {
    /// Builds the stack around a TUN fd received from the jail.
    pub fn new(dev: AsyncDevice, net: JailNet, handler: Arc<dyn FlowHandler>) -> Stack {
        let mtu = usize::from(net.mtu);
        let mut out = Vec::new();
        let mut io = PacketIo {
            rx: None,
            out: &mut out,
            mtu,
        };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut io, smol_now());
        // The interface owns the gateway addresses (so replies to the SUT are
        // on-link) and, with any_ip, accepts packets for every destination.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(net.gateway_v4.into(), net.prefix_v4));
            let _ = addrs.push(IpCidr::new(net.gateway_v6.into(), net.prefix_v6));
        });
        iface.set_any_ip(true);
        let _ = iface.routes_mut().add_default_ipv4_route(net.gateway_v4);
        let _ = iface.routes_mut().add_default_ipv6_route(net.gateway_v6);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let handle = StackHandle {
            ctl: ctl_tx,
            next_id: Arc::new(AtomicU64::new(1)),
            stats: Arc::new(StackStats::default()),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        memory::spawn_trimmer(Arc::downgrade(&handle.stats));
        Stack {
            dev,
            iface,
            net,
            handler,
            flows: HashMap::new(),
            by_tuple: HashMap::new(),
            held: HashMap::new(),
            held_by_id: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Arc::new(DirtyQueue::default()),
            out,
            ctl_rx,
            handle,
            empty: SocketSet::new(Vec::new()),
        }
    }

    pub fn handle(&self) -> StackHandle {
        self.handle.clone()
    }

    /// Runs until the TUN fails (the jail's namespace is gone).
    pub async fn run(mut self) {
        let mut buf = vec![0u8; usize::from(self.net.mtu) + 256];
        let mut dirty = Vec::new();
        loop {
            if let Err(e) = self.flush().await {
                tracing::debug!("TUN write failed, stack stops: {e}");
                break;
            }
            let deadline = self.timers.first().map(|(t, _)| {
                let now = smol_now();
                let wait = if *t > now {
                    (*t - now).into()
                } else {
                    Duration::ZERO
                };
                tokio::time::Instant::now() + wait
            });
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                res = self.dev.recv(&mut buf) => match res {
                    Ok(n) => {
                        self.ingest_packet(&buf[..n]);
                        for _ in 1..RX_BATCH {
                            match self.dev.try_recv(&mut buf) {
                                Ok(n) => self.ingest_packet(&buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("TUN read failed, stack stops: {e}");
                        break;
                    }
                },
                Some(ctl) = self.ctl_rx.recv() => {
                    self.control(ctl);
                    while let Ok(ctl) = self.ctl_rx.try_recv() {
                        self.control(ctl);
                    }
                }
                _ = self.dirty.notify.notified() => {}
                _ = sleep => {}
            }
            self.dirty.take(&mut dirty);
            for id in dirty.drain(..) {
                self.service(id);
            }
            let now = smol_now();
            while let Some(&(t, id)) = self.timers.first() {
                if t > now {
                    break;
                }
                self.timers.remove(&(t, id));
                if let Some(e) = self.flows.get_mut(&id) {
                    e.timer = None;
                }
                self.service(id);
            }
        }
        self.handle.stopped.store(true, Ordering::Relaxed);
        // Wake every flow's task so it sees the end.
        for (_, entry) in self.flows.drain() {
            let mut p = entry.shared.lock();
            p.reset = true;
            p.wake_reader();
            p.wake_writer();
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stats = self.handle.stats.clone();
        for pkt in self.out.drain(..) {
            stats.packets_out.fetch_add(1, Ordering::Relaxed);
            match self.dev.try_send(&pkt) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.dev.send(&pkt).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn control(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Inject(pkt) => self.out.push(pkt),
            Ctl::Resolve(id, outcome) => {
                let Some(tuple) = self.held_by_id.remove(&id) else {
                    return;
                };
                let Some(held) = self.held.remove(&tuple) else {
                    return;
                };
                match outcome {
                    HeldOutcome::Accept(ticket) => {
                        self.accept(tuple, held.meta, &held.syn, Some(ticket))
                    }
                    HeldOutcome::Refuse => self.reset_stray(&held.syn),
                    HeldOutcome::Unreachable => {
                        if let Some(p) = packet::host_unreachable(&held.syn) {
                            self.out.push(p);
                        }
                    }
                    HeldOutcome::Drop => {}
                }
            }
        }
    }

    fn ingest_packet(&mut self, pkt: &[u8]) {
        self.handle.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        match packet::parse(pkt) {
            Parsed::Tcp {
                src,
                dst,
                syn,
                ack,
                rst,
            } => {
                let tuple = FourTuple { src, dst };
                if let Some(&id) = self.by_tuple.get(&tuple) {
                    self.feed(id, pkt);
                    self.service(id);
                } else if self.held.contains_key(&tuple) {
                    // A retransmitted SYN while the upstream connect runs.
                } else if syn && !ack {
                    self.new_syn(tuple, pkt);
                } else if !rst {
                    self.reset_stray(pkt);
                }
            }
            Parsed::Udp { src, dst, payload } => {
                let d = Datagram {
                    src,
                    dst,
                    payload: payload.to_vec(),
                };
                self.handler.on_udp(d, &self.handle);
            }
            Parsed::Echo {
                src,
                dst,
                ident,
                seq_no,
                data,
            } => {
                if self.net.is_gateway(dst) || self.net.is_resolver(dst) {
                    if let Some(p) = packet::echo_reply(dst, src, ident, seq_no, data) {
                        self.out.push(p);
                    }
                } else {
                    self.handle
                        .stats
                        .packets_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Parsed::Other => {
                self.handle
                    .stats
                    .packets_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lets smoltcp answer a segment that belongs to no socket (it sends
    /// RST, or RST+ACK to a SYN).
    fn reset_stray(&mut self, pkt: &[u8]) {
        let mut io = PacketIo {
            rx: Some(pkt),
            out: &mut self.out,
            mtu: usize::from(self.net.mtu),
        };
        self.iface
            .poll_ingress_single(smol_now(), &mut io, &mut self.empty);
    }

    fn new_syn(&mut self, tuple: FourTuple, pkt: &[u8]) {
        let id = self.handle.next_flow_id();
        let mut meta = FlowMeta {
            id,
            transport: Transport::Tcp,
            src: tuple.src,
            dst: tuple.dst,
            host: None,
        };
        if tuple.dst.port() == 0 {
            self.reset_stray(pkt);
            return;
        }
        match self.handler.on_syn(&mut meta) {
            SynVerdict::Accept(ticket) => self.accept(tuple, meta, pkt, ticket),
            SynVerdict::Refuse => self.reset_stray(pkt),
            SynVerdict::Hold => {
                self.held_by_id.insert(id, tuple);
                self.held.insert(
                    tuple,
                    Held {
                        syn: pkt.to_vec(),
                        meta,
                    },
                );
            }
        }
    }

    fn accept(&mut self, tuple: FourTuple, meta: FlowMeta, syn: &[u8], ticket: Option<Ticket>) {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_RX]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_TX]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        let endpoint = IpListenEndpoint {
            addr: Some(tuple.dst.ip().into()),
            port: tuple.dst.port(),
        };
        if sock.listen(endpoint).is_err() {
            self.reset_stray(syn);
            return;
        }
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(sock);
        let shared = Arc::new(FlowShared {
            id: meta.id,
            pipe: Mutex::new(Pipe::default()),
            queued: AtomicBool::new(false),
            dirty: self.dirty.clone(),
        });
        let id = meta.id;
        self.flows.insert(
            id,
            FlowEntry {
                set,
                handle,
                shared: shared.clone(),
                tuple,
                timer: None,
            },
        );
        self.by_tuple.insert(tuple, id);
        self.handle
            .stats
            .flows_active
            .fetch_add(1, Ordering::Relaxed);
        self.feed(id, syn);
        self.service(id);
        self.handler.on_flow(meta, Flow::new(shared), ticket);
    }

    fn feed(&mut self, id: FlowId, pkt: &[u8]) {
        let Some(entry) = self.flows.get_mut(&id) else {
            return;
        };
        let mut io = PacketIo {
            rx: Some(pkt),
            out: &mut self.out,
            mtu: usize::from(self.net.mtu),
        };
        self.iface
            .poll_ingress_single(smol_now(), &mut io, &mut entry.set);
    }

    /// Moves bytes between the flow's pipe and its socket, lets smoltcp
    /// transmit, re-arms the flow's timer, and drops the flow when both
    /// sides are done.
    fn service(&mut self, id: FlowId) {
        let Some(entry) = self.flows.get_mut(&id) else {
            return;
        };
        entry.shared.queued.store(false, Ordering::Release);
        let now = smol_now();
        let done = {
            let sock = entry.set.get_mut::<tcp::Socket>(entry.handle);
            let mut p = entry.shared.lock();
            move_bytes(sock, &mut p)
        };
        let mut io = PacketIo {
            rx: None,
            out: &mut self.out,
            mtu: usize::from(self.net.mtu),
        };
        for _ in 0..1024 {
            if self.iface.poll_egress(now, &mut io, &mut entry.set) == PollResult::None {
                break;
            }
        }
        if done {
            if let Some(t) = entry.timer.take() {
                self.timers.remove(&(t, id));
            }
            let tuple = entry.tuple;
            self.flows.remove(&id);
            self.by_tuple.remove(&tuple);
            let stats = &self.handle.stats;
            stats.flows_active.fetch_sub(1, Ordering::Relaxed);
            stats.flows_ended.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let next = self.iface.poll_at(now, &entry.set).map(|t| {
            // Never schedule in the past: that would spin.
            t.max(now + smoltcp::time::Duration::from_millis(1))
        });
        if next != entry.timer {
            if let Some(t) = entry.timer.take() {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
            }
            entry.timer = next;
        }
    }
}
