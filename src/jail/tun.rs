//! Named TUN devices by ioctl: the persistent one `sidecar-init` leaves
//! behind, and attaching to it later without any capability.
//!
//! tun-rs would also set addresses and bring the link up, which needs
//! CAP_NET_ADMIN; the sidecar has none, so it only opens the device here
//! and hands the fd to the stack like the jail's.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

const TUN_PATH: &str = "/dev/net/tun";

/// Why a TUN could not be opened or attached.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error(
        "cannot open {TUN_PATH}: permission denied. A non-root sidecar needs it world-accessible \
         (mode 0666, as Debian, Ubuntu and Fedora ship it): run `chmod 666 /dev/net/tun` on the node"
    )]
    DeviceAccess,
    #[error(
        "cannot open {TUN_PATH}: operation not permitted. The container runtime's device list \
         denies it (runc 1.2.0-1.2.3, crun 1.5-1.19): use deploy/privileged, or a runtime or \
         device plugin that allows c 10:200"
    )]
    DeviceDenied,
    #[error("cannot open {TUN_PATH}: {0}")]
    Open(nix::Error),
    #[error(
        "cannot open {TUN_PATH}: no such device. Mount it into the container (hostPath \
         /dev/net/tun, type CharDevice) or load the tun module (`modprobe tun`)"
    )]
    NoDevice,
    #[error(
        "TUN device {name} does not exist: run `meshwrap sidecar-init --tun {name}` first \
         (the init container), or `meshwrap sidecar --init` as root"
    )]
    Missing { name: String },
    #[error(
        "not allowed to attach to TUN device {name}: it belongs to another user (or group). Run \
         the sidecar as the uid given to `sidecar-init --owner`, and with the gid of its \
         `--group` if one was given (now uid {uid}, gid {gid})"
    )]
    NotOwner { name: String, uid: u32, gid: u32 },
    #[error("the TUN device name {0:?} is empty or longer than 15 bytes")]
    BadName(String),
    #[error("TUN device {name}: {op}: {source}")]
    Ioctl {
        name: String,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

fn open_dev() -> Result<OwnedFd, TunError> {
    // EACCES is the file's mode; EPERM is the device cgroup (or seccomp)
    // of the container refusing the device itself.
    open(TUN_PATH, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| match e {
        nix::Error::EACCES => TunError::DeviceAccess,
        nix::Error::EPERM => TunError::DeviceDenied,
        nix::Error::ENOENT | nix::Error::ENXIO | nix::Error::ENODEV => TunError::NoDevice,
        e => TunError::Open(e),
    })
}

/// TUNSETIFF on a fresh `/dev/net/tun` fd: creates the device (with
/// CAP_NET_ADMIN) or attaches to an existing one (as its owner).
fn set_iff(fd: &OwnedFd, name: &str) -> Result<(), nix::Error> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    nix::errno::Errno::result(rc).map(drop)
}

fn set_int(
    fd: &OwnedFd,
    name: &str,
    (request, op): (libc::Ioctl, &'static str),
    value: libc::c_ulong,
) -> Result<(), TunError> {
    // SAFETY: these three ioctls take their argument by value.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, value) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(|source| TunError::Ioctl {
            name: name.to_string(),
            op,
            source,
        })
}

fn check_name(name: &str) -> Result<(), TunError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(TunError::BadName(name.to_string()));
    }
    Ok(())
}

/// Makes (or keeps) a persistent TUN `name` that `owner` may attach to
/// without any capability. With a `group`, the kernel also requires the
/// attaching process to be in it (both checks apply, not either). Needs
/// CAP_NET_ADMIN. Running it again on an existing device only re-applies
/// owner and group.
pub fn create_persistent(name: &str, owner: u32, group: Option<u32>) -> Result<(), TunError> {
    check_name(name)?;
    let fd = open_dev()?;
    set_iff(&fd, name).map_err(|source| TunError::Ioctl {
        name: name.to_string(),
        op: "TUNSETIFF (needs CAP_NET_ADMIN)",
        source,
    })?;
    set_int(
        &fd,
        name,
        (libc::TUNSETOWNER, "TUNSETOWNER"),
        libc::c_ulong::from(owner),
    )?;
    if let Some(group) = group {
        set_int(
            &fd,
            name,
            (libc::TUNSETGROUP, "TUNSETGROUP"),
            libc::c_ulong::from(group),
        )?;
    }
    set_int(&fd, name, (libc::TUNSETPERSIST, "TUNSETPERSIST"), 1)?;
    Ok(())
}

/// Attaches to the existing TUN `name` (made by [`create_persistent`]);
/// the returned fd carries the device's packets, IFF_NO_PI framing.
pub fn attach(name: &str) -> Result<OwnedFd, TunError> {
    check_name(name)?;
    let fd = open_dev()?;
    match set_iff(&fd, name) {
        Ok(()) => Ok(fd),
        Err(nix::Error::EPERM) => {
            if std::path::Path::new("/sys/class/net").join(name).exists() {
                Err(TunError::NotOwner {
                    name: name.to_string(),
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: nix::unistd::getegid().as_raw(),
                })
            } else {
                Err(TunError::Missing {
                    name: name.to_string(),
                })
            }
        }
        Err(source) => Err(TunError::Ioctl {
            name: name.to_string(),
            op: "TUNSETIFF",
            source,
        }),
    }
}
