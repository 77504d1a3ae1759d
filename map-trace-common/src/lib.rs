//! Types shared by the eBPF programs and the daemon. Everything here is `#[repr(C)]`, `Copy`, and
//! padded explicitly, because it crosses the kernel boundary.
#![no_std]

pub mod config;
pub mod event;
pub mod fatal;
pub mod probe;
pub mod program;
pub mod stack;
pub mod state;

#[cfg(feature = "user")]
mod user;
