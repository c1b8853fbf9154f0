//! The jail: new network and mount namespaces (plus a user namespace when
//! not root) holding one TUN device, in which the SUT runs.
//!
//! The namespaces are made by a child forked while meshwrap is still
//! single-threaded (before the tokio runtime starts), so no lock held by
//! another thread can be inherited half-taken. The child sets up the
//! network, sends the TUN fd back over a unix socket, waits for the go
//! signal and execs the SUT. The parent keeps the TUN fd and serves it.
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
use nix::unistd::{fork, ForkResult, Pid};

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
    _workdir: WorkDir,
    command: String,
}

/// Messages from child to parent (one datagram each).
const MSG_READY: &[u8] = b"READY";
const MSG_FAIL: &[u8] = b"FAIL:";
const MSG_EXEC: &[u8] = b"EXEC:";

impl Jail {
    /// Forks the jail child and waits until it has built the namespaces and
    /// the TUN. Must be called before any thread is started.
    pub fn spawn(spec: &JailSpec, workdir: WorkDir, resolv_conf: &str) -> Result<Jail, JailError> {
        // What the SUT leaves behind when it exits comes to meshwrap, which
        // kills it (`kill_leftovers`) instead of leaving it in a dead jail.
        let _ = nix::sys::prctl::set_child_subreaper(true);
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
        // SAFETY: meshwrap has started no threads yet (the runtime is built
        // after this), so the child is a faithful single-threaded copy.
        match unsafe { fork() }? {
            ForkResult::Child => {
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
            ForkResult::Parent { child } => {
                drop(child_sock);
                let mut jail = Jail {
                    pid: child,
                    sock: parent_sock,
                    tun: None,
                    _workdir: workdir,
                    command: spec
                        .command
                        .first()
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                let (msg, fd) = recv_msg(jail.sock.as_raw_fd())?;
                if let Some(fd) = fd {
                    jail.tun = Some(fd);
                }
                if msg.starts_with(MSG_READY) && jail.tun.is_some() {
                    Ok(jail)
                } else if let Some(err) = msg.strip_prefix(MSG_FAIL) {
                    let _ = waitpid(child, None);
                    Err(JailError::Setup(String::from_utf8_lossy(err).into_owned()))
                } else {
                    let _ = waitpid(child, None);
                    Err(JailError::ChildGone)
                }
            }
        }
    }

    /// The TUN device's fd, to be served by the stack.
    pub fn take_tun(&mut self) -> Option<OwnedFd> {
        self.tun.take()
    }

    pub fn pid(&self) -> Pid {
        self.pid
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
                let _ = waitpid(self.pid, None);
                let cmd = self.command.clone();
                Err(match errno {
                    nix::Error::ENOENT => ExecError::NotFound { cmd },
                    nix::Error::EACCES => ExecError::Permission { cmd },
                    errno => ExecError::Other { cmd, errno },
                })
            }
            // EOF: the socket was closed by a successful exec (CLOEXEC).
            _ => Ok(()),
        }
    }

    /// Forwards a signal to the SUT.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(self.pid, sig);
    }

    /// Waits for the SUT to exit: its exit code, or 128 + signal number.
    /// Blocking; run it off the async runtime.
    /// Kills whatever the SUT left running (daemons, background jobs):
    /// meshwrap is their subreaper (`spawn` made it one), so orphans of the
    /// jail become its children. Killed in rounds, since a killed process's
    /// own children come to meshwrap next. Bounded: 64 rounds.
    pub fn kill_leftovers() -> usize {
        let me = nix::unistd::getpid().as_raw();
        let mut killed = 0;
        for _ in 0..64 {
            let children = children_of(me);
            if children.is_empty() {
                break;
            }
            for pid in children {
                if nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                    .is_ok()
                {
                    killed += 1;
                }
            }
            // Reap them (and any zombie reparented to us).
            while let Ok(status) = waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        killed
    }

    pub fn wait(pid: Pid) -> i32 {
        loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return 1,
            }
        }
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid …`; comm may hold spaces and parens.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    let rest = &st[st.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
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
