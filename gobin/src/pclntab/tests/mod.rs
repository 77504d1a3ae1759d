//! The table reader on synthetic input: tables made by `builder`, files made by `elf`.
//! `table` parses tables and damages them, `read` finds the table and `runtime.text` in whole
//! files (plain, stripped, PIE, Go 1.26's `.go.module`), `inline` expands inlined frames.

mod builder;
mod elf;
mod inline;
mod read;
mod table;
