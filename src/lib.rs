//! meshwrap: run any program in a network namespace whose only network is a
//! TUN device served by meshwrap's userspace TCP/IP stack, and decide for every
//! connection whether it is mocked, passed out or refused.
//!
//! One module per stage of a connection's path (see `DESIGN.md`):
//! `jail` → `stack` → `dns` / `sniff` → `rules` → `egress` (and later the
//! responders), with `events` recording every decision. `appliance` wires
//! the stages together; `cli` is the command-line edge.

pub mod appliance;
pub mod budget;
pub mod cli;
pub mod control;
pub mod dns;
pub mod egress;
pub mod events;
pub mod io;
pub mod jail;
pub mod model;
pub mod protocols;
pub mod responders;
pub mod rules;
pub mod sniff;
pub mod stack;
pub mod tls;
