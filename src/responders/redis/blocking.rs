//! Blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN,
//! BZPOPMAX, XREAD and XREADGROUP with BLOCK): the first
//! try when the command arrives, the wait in the connection's loop (woken
//! by the `written` notify after every successful write, then re-checking)
//! until data, the deadline or the client going away, and the immediate
//! answer inside EXEC, where nothing may block.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::commands::{self, lists::BlockOp, CmdDef, Ctx, R};
use super::resp::Reply;
use super::state::Store;
use super::{ConnState, Outcome, RedisService};

/// What a blocking command answers when its timeout passes.
fn timed_out(op: &BlockOp) -> Reply {
    match op {
        BlockOp::Pop { .. } | BlockOp::ZPop { .. } | BlockOp::Read(_) => Reply::NilArray,
        BlockOp::Move { .. } => Reply::Nil,
    }
}

impl RedisService {
    /// The operation and its timeout in seconds (`None`: XREAD or
    /// XREADGROUP without BLOCK, which never wait). Stream reads resolve
    /// `$` here, against the keyspace as the command arrives.
    fn parse_block(
        &self,
        store: &mut Store,
        conn: &mut ConnState,
        def: &CmdDef,
        a: &[Bytes],
    ) -> Result<(BlockOp, Option<f64>), Reply> {
        if def.name == "xread" || def.name == "xreadgroup" {
            let read = commands::streams::parse_read(
                &mut Ctx {
                    store,
                    conn,
                    svc: self,
                },
                def.name,
                a,
            )?;
            let block = read.block;
            return Ok((BlockOp::Read(read), block));
        }
        commands::lists::parse_block(def.name, a).map(|(op, t)| (op, Some(t)))
    }

    /// The command as it arrives: answered at once when data is there,
    /// otherwise `Outcome::Block` for the connection loop to wait.
    pub(super) fn start_block(&self, conn: &mut ConnState, def: &CmdDef, a: &[Bytes]) -> Outcome {
        let r = |x: R| Outcome::Reply(x.unwrap_or_else(|e| e));
        let mut store = self.lock();
        let (op, timeout) = match self.parse_block(&mut store, conn, def, a) {
            Ok(x) => x,
            Err(e) => return r(Err(e)),
        };
        match commands::lists::try_block(
            &mut Ctx {
                store: &mut store,
                conn,
                svc: self,
            },
            &op,
        ) {
            Ok(Some(reply)) => {
                let db = conn.db;
                for k in def.keys(a) {
                    store.touch(db, k);
                }
                r(Ok(reply))
            }
            // XREAD and XREADGROUP without BLOCK answer at once.
            Ok(None) if timeout.is_none() => r(Ok(timed_out(&op))),
            Ok(None) => {
                let timeout = timeout.unwrap_or(0.0);
                // A deadline past what the clock can hold is no deadline.
                let deadline = (timeout > 0.0)
                    .then(|| Duration::try_from_secs_f64(timeout).ok())
                    .flatten()
                    .and_then(|d| tokio::time::Instant::now().checked_add(d));
                Outcome::Block(op, deadline)
            }
            Err(e) => r(Err(e)),
        }
    }

    /// Inside EXEC a blocking command never blocks: it answers as if timed
    /// out when there is nothing to take.
    pub(super) fn block_in_exec(
        &self,
        store: &mut Store,
        conn: &mut ConnState,
        def: &CmdDef,
        args: &[Bytes],
    ) -> R {
        let (op, _) = self.parse_block(store, conn, def, args)?;
        let got = commands::lists::try_block(
            &mut Ctx {
                store,
                conn,
                svc: self,
            },
            &op,
        )?;
        Ok(got.unwrap_or_else(|| timed_out(&op)))
    }

    /// Waits for a blocked pop to succeed or time out; `None` when the
    /// client went away. Bytes the client sends meanwhile are kept for
    /// after the reply, as Redis does.
    pub(super) async fn wait_block<IO: AsyncRead + Unpin>(
        &self,
        conn: &mut ConnState,
        io: &mut IO,
        buf: &mut BytesMut,
        op: &BlockOp,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Reply> {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        let timed_out = timed_out(op);
        let result = loop {
            let notified = self.written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A script holds the keyspace while it runs: wait for it here,
            // not on the lock.
            self.scripts.wait_idle().await;
            {
                let mut store = self.lock();
                match commands::lists::try_block(
                    &mut Ctx {
                        store: &mut store,
                        conn,
                        svc: self,
                    },
                    op,
                ) {
                    Ok(Some(r)) => {
                        let db = conn.db;
                        let keys: Vec<Bytes> = match op {
                            BlockOp::Pop { keys, .. } | BlockOp::ZPop { keys, .. } => keys.clone(),
                            BlockOp::Move { src, dst, .. } => vec![src.clone(), dst.clone()],
                            BlockOp::Read(r) => r.keys.clone(),
                        };
                        for k in &keys {
                            store.touch(db, k);
                        }
                        break Some(r);
                    }
                    Ok(None) => {}
                    Err(e) => break Some(e),
                }
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            buf.reserve(crate::io::buffers::READ_ROOM);
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep => break Some(timed_out),
                n = io.read_buf(buf) => match n {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {}
                },
            }
        };
        self.blocked.fetch_sub(1, Ordering::Relaxed);
        result
    }
}
