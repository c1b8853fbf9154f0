//! Moving bytes between a flow's pipe (its task's side) and its smoltcp
//! socket (the stack's side), and the connection's end states, in one
//! pass per wake-up of the flow.

use smoltcp::socket::tcp;

use super::flow::Pipe;

/// One service pass over a flow's socket and pipe. Returns true when the
/// flow can be forgotten: the connection is over and the `Flow` dropped.
pub(super) fn move_bytes(sock: &mut tcp::Socket<'_>, p: &mut Pipe) -> bool {
    use tcp::State;
    if p.app_abort && sock.state() != State::Closed {
        sock.abort();
    }
    // SUT → flow task.
    let mut received = false;
    p.inbound_blocked = false;
    loop {
        if !sock.can_recv() {
            break;
        }
        let room = if p.app_dropped {
            usize::MAX
        } else {
            super::flow::PIPE_CAP.saturating_sub(p.inbound.len())
        };
        if room == 0 {
            p.inbound_blocked = true;
            break;
        }
        let dropped = p.app_dropped;
        let inbound = &mut p.inbound;
        let res = sock.recv(|data| {
            let n = data.len().min(room);
            if !dropped {
                inbound.extend(&data[..n]);
            }
            (n, n)
        });
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                p.bytes_in += n as u64;
                received = true;
            }
        }
    }
    if received {
        p.wake_reader();
    }
    // FIN from the SUT: these states are only reached after it.
    let fin_seen = matches!(
        sock.state(),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    );
    if !p.sut_eof && fin_seen && !sock.can_recv() {
        p.sut_eof = true;
        p.wake_reader();
    }
    // Flow task → SUT.
    let mut sent = false;
    while !p.outbound.is_empty() && sock.can_send() {
        let outbound = &mut p.outbound;
        let res = sock.send(|buf| {
            let n = buf.len().min(outbound.len());
            let (a, b) = outbound.as_slices();
            let from_a = n.min(a.len());
            buf[..from_a].copy_from_slice(&a[..from_a]);
            buf[from_a..n].copy_from_slice(&b[..n - from_a]);
            outbound.drain(..n);
            (n, n)
        });
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                p.bytes_out += n as u64;
                sent = true;
            }
        }
    }
    if sent {
        p.wake_writer();
    }
    if p.abort_when_flushed && p.outbound.is_empty() && sock.send_queue() == 0 {
        p.abort_when_flushed = false;
        sock.abort();
    }
    let state = sock.state();
    // FIN once the flow task is done writing and everything was handed
    // to smoltcp (a handshake still in progress closes on a later pass).
    if (p.app_shutdown || p.app_dropped)
        && p.outbound.is_empty()
        && matches!(state, State::Established | State::CloseWait)
    {
        sock.close();
    }
    if matches!(state, State::Closed | State::TimeWait) {
        if state == State::Closed && !p.sut_eof && !p.reset {
            // Closed without a FIN from the SUT: a reset, or our abort.
            p.reset = true;
        }
        if state == State::TimeWait {
            p.sut_eof = true;
        }
        p.wake_reader();
        p.wake_writer();
        return p.app_dropped;
    }
    false
}
