//! What runs in the jail's init, the child meshwrap cloned into new
//! namespaces: TUN, addresses, routes, bind mounts and a private /proc,
//! then the SUT as its child. Every failure is reported to the parent as
//! text and the init exits; nothing here returns.

use std::ffi::{CString, OsString};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::{MSG_EXEC, MSG_EXIT, MSG_FAIL, MSG_READY, MSG_STARTED};
use crate::model::JailNet;

pub(super) struct Plan {
    pub sock: OwnedFd,
    pub net: JailNet,
    pub rootless: bool,
    pub uid: Uid,
    pub gid: Gid,
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub env: Vec<(OsString, OsString)>,
    pub command: Vec<OsString>,
    pub keep_caps: bool,
}

/// Capabilities a root SUT could leave the jail with: joining meshwrap's
/// (the host's) namespaces through /proc (SYS_ADMIN), reading another
/// process's memory (SYS_PTRACE), loading kernel code (SYS_MODULE), and
/// opening host files by handle past mount namespaces (DAC_READ_SEARCH).
/// Dropped from the bounding set before exec, so not even a setuid-root
/// program in the jail gets them back.
/// The numbers are the kernel's (linux/capability.h, a stable ABI).
const ESCAPE_CAPS: &[(libc::c_ulong, &str)] = &[
    (21, "CAP_SYS_ADMIN"),
    (19, "CAP_SYS_PTRACE"),
    (16, "CAP_SYS_MODULE"),
    (2, "CAP_DAC_READ_SEARCH"),
];

/// The name of the TUN device inside the jail.
pub(super) const TUN_NAME: &str = "tun0";

/// Signals the jail's init passes on to the SUT. Blocked in init (an init
/// ignores signals it has no handler for, blocked ones it can read) and
/// unblocked again in the SUT before exec.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs as pid 1 of the jail's pid namespace: sets the jail up, hands the
/// TUN to meshwrap, starts the SUT as its child and stays its init. When
/// this process ends, the kernel kills everything left in the namespace,
/// so nothing the SUT started outlives the jail, even after a SIGKILL of
/// meshwrap (the parent-death signal ends this process then).
pub(super) fn run(plan: Plan) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut waited = SigSet::empty();
    FORWARDED.iter().for_each(|s| waited.add(*s));
    waited.add(Signal::SIGCHLD);
    // Blocked from the start: a signal that comes before the SUT does is
    // kept and passed on once it runs.
    let _ = waited.thread_block();
    match setup(&plan) {
        Ok(tun) => {
            let fds = [tun.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(MSG_READY)];
            if sendmsg::<()>(plan.sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).is_err() {
                unsafe { libc::_exit(1) };
            }
            drop(tun);
        }
        Err(msg) => {
            let mut m = MSG_FAIL.to_vec();
            m.extend_from_slice(msg.as_bytes());
            let _ = nix::unistd::write(&plan.sock, &m);
            unsafe { libc::_exit(1) };
        }
    }
    // Wait for the go signal: the parent serves the TUN from now on.
    let mut go = [0u8; 1];
    match nix::unistd::read(&plan.sock, &mut go) {
        Ok(1) => {}
        _ => unsafe { libc::_exit(1) },
    }
    let sut = match start_sut(&plan) {
        Ok(pid) => pid,
        Err(errno) => {
            let msg = format!("{}{errno}", String::from_utf8_lossy(MSG_EXEC));
            let _ = nix::unistd::write(&plan.sock, msg.as_bytes());
            unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
        }
    };
    let _ = nix::unistd::write(&plan.sock, MSG_STARTED);
    init_loop(&plan.sock, sut, &waited)
}

/// Forks the SUT and execs it; returns its pid once the exec happened,
/// or the exec's errno.
fn start_sut(plan: &Plan) -> Result<Pid, i32> {
    let (exec_r, exec_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e as i32)?;
    let args: Vec<CString> = plan
        .command
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    // SAFETY: this process is single-threaded (a fresh clone of a
    // single-threaded meshwrap).
    match unsafe { nix::unistd::fork() }.map_err(|e| e as i32)? {
        ForkResult::Child => {
            drop(exec_r);
            let _ = SigSet::empty().thread_set_mask();
            for (k, v) in &plan.env {
                // SAFETY: single-threaded child, just before exec.
                unsafe { std::env::set_var(k, v) };
            }
            let errno = match args.first() {
                Some(prog) => match nix::unistd::execvp(prog, &args) {
                    Err(e) => e as i32,
                    Ok(never) => match never {},
                },
                None => libc::ENOENT,
            };
            let _ = nix::unistd::write(&exec_w, &errno.to_ne_bytes());
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            drop(exec_w);
            let mut buf = [0u8; 4];
            match read_full(&exec_r, &mut buf) {
                // EOF: the exec closed the pipe (CLOEXEC).
                0 => Ok(child),
                _ => {
                    let _ = waitpid(child, None);
                    Err(i32::from_ne_bytes(buf))
                }
            }
        }
    }
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
    }
    got
}

/// The init's life after the SUT started: pass signals on to the SUT, reap
/// every process that ends in the jail, tell meshwrap the SUT's exit code,
/// and end (taking the namespace with it) when meshwrap closes the socket.
fn init_loop(sock: &OwnedFd, sut: Pid, waited: &SigSet) -> ! {
    let Ok(sigfd) = SignalFd::with_flags(waited, SfdFlags::SFD_CLOEXEC) else {
        unsafe { libc::_exit(1) }
    };
    let mut sut_alive = true;
    loop {
        let mut fds = [
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => unsafe { libc::_exit(1) },
        }
        if fds[1].any().unwrap_or(true) {
            // meshwrap is done with the jail (or gone).
            unsafe { libc::_exit(0) }
        }
        while let Ok(Some(info)) = sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig != Signal::SIGCHLD {
                if sut_alive {
                    let _ = kill(sut, sig);
                }
                continue;
            }
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(status) if status.pid() == Some(sut) => {
                        let Some(code) = super::exit_code(status) else {
                            continue;
                        };
                        sut_alive = false;
                        let msg = format!("{}{code}", String::from_utf8_lossy(MSG_EXIT));
                        let _ = nix::unistd::write(sock, msg.as_bytes());
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}

fn setup(plan: &Plan) -> Result<OwnedFd, String> {
    if plan.rootless {
        // Map the caller to root inside, like `unshare -Urn`.
        write_file("/proc/self/setgroups", "deny")?;
        write_file("/proc/self/uid_map", &format!("0 {} 1", plan.uid))?;
        write_file("/proc/self/gid_map", &format!("0 {} 1", plan.gid))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the jail's mounts private: {e}"))?;
    // Addresses must be usable at once: no duplicate address detection on
    // a link that has only us on it, and no router solicitations.
    for key in ["default", "all"] {
        let _ = write_file(&format!("/proc/sys/net/ipv6/conf/{key}/accept_dad"), "0");
        let _ = write_file(
            &format!("/proc/sys/net/ipv6/conf/{key}/router_solicitations"),
            "0",
        );
    }
    let tun = open_tun(plan.net.mtu)?;
    super::netlink::configure(TUN_NAME, &plan.net).map_err(|e| format!("network setup: {e}"))?;
    for (src, dst) in &plan.binds {
        bind_file(src, dst)?;
    }
    mount_private_proc();
    // Only the bounding set: the setup above keeps its capabilities, the
    // SUT never gets these at exec.
    if !plan.rootless && !plan.keep_caps {
        for (cap, name) in ESCAPE_CAPS {
            // SAFETY: a plain prctl on this (single-threaded) process.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0) } != 0 {
                return Err(format!(
                    "cannot drop {name} from the SUT's bounding set: {} (--keep-caps runs it with them)",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(tun)
}

fn open_tun(mtu: u16) -> Result<OwnedFd, String> {
    let dev = tun_rs::DeviceBuilder::new()
        .name(TUN_NAME)
        .mtu(mtu)
        .packet_information(false)
        .build_sync()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                "cannot open /dev/net/tun: permission denied. Rootless mode needs it to be \
                 world-accessible: run `chmod 666 /dev/net/tun` as root (Debian, Ubuntu and \
                 Fedora ship it that way)"
                    .to_string()
            } else if e.kind() == std::io::ErrorKind::NotFound {
                "cannot open /dev/net/tun: no such device (load the tun module: `modprobe tun`)"
                    .to_string()
            } else {
                format!("cannot create the TUN device: {e}")
            }
        })?;
    let fd = dev.into_raw_fd();
    // SAFETY: into_raw_fd hands over ownership of a valid fd.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn write_file(path: &str, content: &str) -> Result<(), String> {
    std::fs::write(path, content).map_err(|e| format!("cannot write {path}: {e}"))
}

/// Bind-mounts `src` over `dst`, following a symlinked `dst` (Debian's
/// resolv.conf is often a link into /run). A missing `dst` is skipped.
fn bind_file(src: &std::path::Path, dst: &std::path::Path) -> Result<(), String> {
    let target = match std::fs::canonicalize(dst) {
        Ok(t) => t,
        Err(_) => {
            eprintln!(
                "meshwrap: warning: {} does not exist; not replaced inside the jail",
                dst.display()
            );
            return Ok(());
        }
    };
    mount(
        Some(src),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot bind-mount {} over {}: {e}",
            src.display(),
            target.display()
        )
    })
}

/// A /proc of the jail's own pid namespace: the SUT sees only the jail's
/// processes, and no /proc/PID/ns of meshwrap or the host to join. Where
/// the kernel refuses (a container whose /proc is partly masked), the
/// host's /proc stays, with a warning.
fn mount_private_proc() {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>) {
        eprintln!(
            "meshwrap: warning: cannot mount a private /proc in the jail ({e}); \
             the SUT sees the host's processes"
        );
    }
}
