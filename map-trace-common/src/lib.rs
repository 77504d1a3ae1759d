//! Types shared by the eBPF programs and the daemon. Everything here is `#[repr(C)]`, `Copy`, and
//! has no padding the verifier could complain about, because it crosses the kernel boundary.
#![no_std]

pub mod probe;

#[cfg(feature = "user")]
mod user;
