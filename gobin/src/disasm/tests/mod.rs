//! The disassembly on machine code copied from real Go binaries (`samples`), damaged in every
//! way a file can be: the prologue matcher (`prologue`) and the iteration-end sites
//! (`iter_end`).

mod iter_end;
mod prologue;
mod samples;
