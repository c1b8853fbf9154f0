//! What runs in the forked jail child: namespaces, TUN, addresses, routes,
//! bind mounts, then exec of the SUT. Every failure is reported to the
//! parent as text and the child exits; nothing here returns.

use std::ffi::{CString, OsString};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{Gid, Uid};

use super::{MSG_EXEC, MSG_FAIL, MSG_READY};
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

pub(super) fn run(plan: Plan) -> ! {
    // If meshwrap dies, the SUT must not live on without a network.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
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
    for (k, v) in &plan.env {
        // SAFETY: single-threaded child, just before exec.
        unsafe { std::env::set_var(k, v) };
    }
    let args: Vec<CString> = plan
        .command
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let errno = match args.first() {
        Some(prog) => match nix::unistd::execvp(prog, &args) {
            Err(e) => e as i32,
            Ok(never) => match never {},
        },
        None => libc::ENOENT,
    };
    let msg = format!("{}{errno}", String::from_utf8_lossy(MSG_EXEC));
    let _ = nix::unistd::write(&plan.sock, msg.as_bytes());
    unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
}

fn setup(plan: &Plan) -> Result<OwnedFd, String> {
    let mut flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
    if plan.rootless {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(|e| {
        if plan.rootless {
            format!(
                "cannot create user, network and mount namespaces ({e}); rootless mode needs \
                 unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 or \
                 user.max_user_namespaces > 0)"
            )
        } else {
            format!("cannot create network and mount namespaces: {e}")
        }
    })?;
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
