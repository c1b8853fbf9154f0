//! The jail: new network, mount and pid namespaces (plus a user namespace when
//! not root) holding one TUN device, in which the SUT runs.
//!
//! The namespaces (network, mount, pid, and user when not root) are made by
//! cloning a child while meshwrap is still single-threaded (before the
//! tokio runtime starts), so no lock held by another thread can be
//! inherited half-taken. The child is pid 1 of the new pid namespace: it
//! sets up the network, sends the TUN fd back over a unix socket, waits for
//! the go signal, starts the SUT and stays the jail's init (`child`). The
//! parent keeps the TUN fd and serves it. When the init ends, so does every
//! process in the jail, however meshwrap itself ended.
//!
//! The other front door, for a Kubernetes pod, is [`sidecar`]: the pod's
//! namespace already exists, so it prepares a persistent TUN there and
//! later attaches to it. Either way the stack gets the same thing: a TUN fd
//! and the addresses it owns (`JailNet`).

mod child;
mod netlink;
pub mod sidecar;
mod tun;

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::model::JailNet;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot create the jail's work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the jail: {0}")]
    Sys(#[from] nix::Error),
    #[error("jail setup failed: {0}")]
    Setup(String),
    #[error("the jail process ended before it was ready")]
    ChildGone,
}

/// Why the SUT could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{cmd}: command not found")]
    NotFound { cmd: String },
    #[error("{cmd}: permission denied")]
    Permission { cmd: String },
    #[error("{cmd}: cannot execute: {errno}")]
    Other { cmd: String, errno: nix::Error },
}

impl ExecError {
    /// The exit code a shell would give.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::NotFound { .. } => 127,
            _ => 126,
        }
    }
}

/// What to run and how the jail's network looks.
#[derive(Debug, Clone)]
pub struct JailSpec {
    pub command: Vec<OsString>,
    pub net: JailNet,
    /// Files bind-mounted over paths inside the jail: (source, target).
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Environment variables to set for the SUT.
    pub env: Vec<(OsString, OsString)>,
    /// As root: keep the capabilities that let a root SUT leave the jail
    /// (`--keep-caps`); see `child::ESCAPE_CAPS`.
    pub keep_caps: bool,
}

/// A private directory (mode 0700) for files the jail bind-mounts, removed
/// when dropped.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create() -> Result<WorkDir, JailError> {
        make_workdir().map(|path| WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A jail whose child is set up and waiting for [`Jail::start`].
pub struct Jail {
    pid: Pid,
    sock: OwnedFd,
    tun: Option<OwnedFd>,
    workdir: WorkDir,
    command: String,
    /// Set once the init was waited for: its pid may then be reused, so it
    /// must not be signalled again.
    reaped: std::cell::Cell<bool>,
}

/// Messages from child to parent (one datagram each).
const MSG_READY: &[u8] = b"READY";
const MSG_FAIL: &[u8] = b"FAIL:";
/// The SUT could not be executed: `EXEC:<errno>`.
const MSG_EXEC: &[u8] = b"EXEC:";
/// The SUT runs.
const MSG_STARTED: &[u8] = b"STARTED";
/// The SUT ended: `EXIT:<code>` (128 + signal if a signal killed it).
const MSG_EXIT: &[u8] = b"EXIT:";

/// Clones a child into new namespaces, like fork(2) but with namespace
/// flags (what bubblewrap does: the child is pid 1 of its pid namespace,
/// which unshare(2) cannot make the caller). Returns the child's pid in the
/// parent and 0 in the child.
fn clone_into_namespaces(rootless: bool) -> Result<libc::pid_t, JailError> {
    let mut flags = libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    if rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: a null stack makes the child run on a copy of the caller's,
    // as fork does; meshwrap is single-threaded here (see `spawn`).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid >= 0 {
        return Ok(pid as libc::pid_t);
    }
    let e = nix::Error::last();
    Err(JailError::Setup(if rootless {
        format!(
            "cannot create user, network, mount and pid namespaces ({e}); rootless mode needs \
             unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 or \
             user.max_user_namespaces > 0)"
        )
    } else {
        format!("cannot create network, mount and pid namespaces: {e}")
    }))
}

impl Jail {
    /// Forks the jail child and waits until it has built the namespaces and
    /// the TUN. Must be called before any thread is started.
    pub fn spawn(spec: &JailSpec, workdir: WorkDir, resolv_conf: &str) -> Result<Jail, JailError> {
        let resolv_path = workdir.path().join("resolv.conf");
        std::fs::write(&resolv_path, resolv_conf).map_err(|source| JailError::WorkDir {
            path: resolv_path.clone(),
            source,
        })?;
        let mut binds = vec![(resolv_path, PathBuf::from("/etc/resolv.conf"))];
        binds.extend(spec.binds.iter().cloned());
        let (parent_sock, child_sock) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        // meshwrap has started no threads yet (the runtime is built after
        // this), so the child is a faithful single-threaded copy.
        match clone_into_namespaces(!uid.is_root())? {
            0 => {
                drop(parent_sock);
                let plan = child::Plan {
                    sock: child_sock,
                    net: spec.net,
                    rootless: !uid.is_root(),
                    uid,
                    gid,
                    binds,
                    env: spec.env.clone(),
                    command: spec.command.clone(),
                    keep_caps: spec.keep_caps,
                };
                child::run(plan)
            }
            child => {
                let child = Pid::from_raw(child);
                drop(child_sock);
                let mut jail = Jail {
                    pid: child,
                    sock: parent_sock,
                    tun: None,
                    workdir,
                    command: spec
                        .command
                        .first()
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    reaped: std::cell::Cell::new(false),
                };
                let (msg, fd) = recv_msg(jail.sock.as_raw_fd())?;
                if let Some(fd) = fd {
                    jail.tun = Some(fd);
                }
                if msg.starts_with(MSG_READY) && jail.tun.is_some() {
                    Ok(jail)
                } else if let Some(err) = msg.strip_prefix(MSG_FAIL) {
                    jail.reap();
                    Err(JailError::Setup(String::from_utf8_lossy(err).into_owned()))
                } else {
                    jail.reap();
                    Err(JailError::ChildGone)
                }
            }
        }
    }

    /// The work folder the jail's bind mounts come from.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// The TUN device's fd, to be served by the stack.
    pub fn take_tun(&mut self) -> Option<OwnedFd> {
        self.tun.take()
    }

    /// Lets the child exec the SUT and reports whether the exec worked.
    /// Blocks until the exec happened (or failed).
    pub fn start(&self) -> Result<(), ExecError> {
        let _ = nix::unistd::write(&self.sock, b"G");
        match recv_msg(self.sock.as_raw_fd()) {
            Ok((msg, _)) if msg.starts_with(MSG_EXEC) => {
                let errno = std::str::from_utf8(&msg[MSG_EXEC.len()..])
                    .ok()
                    .and_then(|s| s.parse::<i32>().ok())
                    .map(nix::Error::from_raw)
                    .unwrap_or(nix::Error::UnknownErrno);
                self.reap();
                let cmd = self.command.clone();
                Err(match errno {
                    nix::Error::ENOENT => ExecError::NotFound { cmd },
                    nix::Error::EACCES => ExecError::Permission { cmd },
                    errno => ExecError::Other { cmd, errno },
                })
            }
            Ok((msg, _)) if msg.starts_with(MSG_STARTED) => Ok(()),
            // The init died before it could tell (killed from outside).
            _ => Err(ExecError::Other {
                cmd: self.command.clone(),
                errno: nix::Error::ECHILD,
            }),
        }
    }

    /// The jail's init: signals sent to it are passed on to the SUT.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// What [`SutExit::wait`] needs, to be moved to a blocking thread.
    pub fn exit_watch(&self) -> Result<SutExit, JailError> {
        let sock = self.sock.try_clone().map_err(|e| {
            JailError::Sys(nix::Error::from_raw(
                e.raw_os_error().unwrap_or(libc::EBADF),
            ))
        })?;
        Ok(SutExit {
            init: self.pid,
            sock,
        })
    }

    /// Ends the jail: the init is killed, and with it every process left
    /// in the jail's pid namespace (daemons, background jobs of the SUT).
    /// Returns how many there were besides the init.
    pub fn end(mut self) -> usize {
        let left = processes_in_pid_namespace_of(self.pid).saturating_sub(1);
        self.kill_init();
        left
    }

    fn kill_init(&mut self) {
        if !self.reaped.get() {
            let _ = kill(self.pid, Signal::SIGKILL);
            self.reap();
        }
    }

    fn reap(&self) {
        loop {
            match waitpid(self.pid, None) {
                Err(nix::Error::EINTR) => continue,
                Ok(WaitStatus::Stopped(..)) | Ok(WaitStatus::Continued(_)) => continue,
                _ => break,
            }
        }
        self.reaped.set(true);
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        self.kill_init();
    }
}

/// Waits for the SUT's exit, told by the jail's init.
pub struct SutExit {
    init: Pid,
    sock: OwnedFd,
}

impl SutExit {
    /// The SUT's exit code, or 128 + signal number. Blocking; run it off
    /// the async runtime. The init stays, holding what the SUT left
    /// running, until [`Jail::end`].
    pub fn wait(self) -> i32 {
        loop {
            match recv_msg(self.sock.as_raw_fd()) {
                Ok((msg, _)) if msg.starts_with(MSG_EXIT) => {
                    return std::str::from_utf8(&msg[MSG_EXIT.len()..])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(1);
                }
                Ok((msg, _)) if !msg.is_empty() => continue,
                // The init itself ended (SIGKILL from outside): its status,
                // left to be reaped by `Jail` (WNOWAIT), so its pid is not
                // reused while the jail may still signal it.
                _ => {
                    let flags =
                        nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
                    return nix::sys::wait::waitid(nix::sys::wait::Id::Pid(self.init), flags)
                        .ok()
                        .and_then(exit_code)
                        .unwrap_or(1);
                }
            }
        }
    }
}

/// A shell's exit code for an ended process: its own, or 128 + the signal
/// that killed it; `None` for a status that is no end (stopped, continued).
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// How many processes share the pid namespace of `pid` (itself included),
/// from /proc: each one's `ns/pid` link names the namespace.
fn processes_in_pid_namespace_of(pid: Pid) -> usize {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return 0;
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        })
        .count()
}

/// Removes work folders of earlier runs that were killed before they
/// could clean up (SIGKILL): `meshwrap-<pid>-<n>` of a pid that is gone,
/// owned by us.
fn clean_stale_workdirs(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("meshwrap-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(nix::Error::ESRCH)
        );
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if gone && ours {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn make_workdir() -> Result<PathBuf, JailError> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    clean_stale_workdirs(&base);
    let mut last_err = None;
    for attempt in 0..100u32 {
        let path = base.join(format!("meshwrap-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(source) => return Err(JailError::WorkDir { path, source }),
        }
    }
    Err(JailError::WorkDir {
        path: base,
        source: last_err.unwrap_or_else(|| std::io::Error::other("no free name")),
    })
}

/// Receives one datagram and, if attached, one fd.
fn recv_msg(sock: RawFd) -> Result<(Vec<u8>, Option<OwnedFd>), JailError> {
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fd = None;
                for c in msg.cmsgs().map_err(JailError::Sys)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for f in fds {
                            // SAFETY: the kernel just gave us this fd.
                            let owned = unsafe { OwnedFd::from_raw_fd(f) };
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                break (msg.bytes, fd);
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(JailError::Sys(e)),
        }
    };
    buf.truncate(n);
    Ok((buf, fd))
}
