//! `fatal_map_error`: a Go map fatal error as the fatal-error probe saw it — the runtime's
//! message, the goroutine Go names, and every write in progress it does not.

use std::fmt::Write as _;

use map_trace_common::event::{FindingKind, Op};
use map_trace_common::fatal::Fatal;
use serde::Serialize;

use super::{Clock, Report, write_frames};
use crate::resolve::symbolize::Frame;

/// A Go map fatal error: the runtime's message and every write in progress then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub message: String,
    /// What the goroutine Go names was doing: `read`, `range`, `write` or `clone`.
    pub noticed: &'static str,
    /// Writes in progress named, the first also being the report's writer side.
    pub writes: Vec<InProgress>,
    /// Writes in progress seen but not named (ended before they could be, or past the bound).
    pub unnamed: u32,
}

/// One write in progress when a process died.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InProgress {
    #[serde(serialize_with = "op_name")]
    pub op: Op,
    pub goid: u64,
    #[serde(serialize_with = "hex")]
    pub map: u64,
    pub growing: bool,
    /// The map's writing flag was still set when it was found (see `FatalWriter::in_progress`
    /// for which such writes get a whole stack); false: it began just before the crash and had
    /// ended by then (its call site only).
    pub in_progress: bool,
    pub map_type: String,
    pub stack: Vec<Frame>,
    #[serde(skip)]
    pub stack_key: u64,
    #[serde(skip)]
    pub map_type_addr: u64,
}

fn op_name<S: serde::Serializer>(op: &Op, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

impl Crash {
    /// Refines `noticed` from that goroutine's stack, runtime frames included: Swiss ranges
    /// die of "concurrent map read and map write" too, when a step re-reads a key of a grown
    /// table (`(*Iter).Next` → `getWithKey`).
    pub fn noticed_in(&mut self, frames: &[Frame]) {
        let stepping = frames.iter().any(|f| {
            f.function == "runtime.mapiternext" || f.function.ends_with("maps.(*Iter).Next")
        });
        if stepping {
            self.noticed = "range";
        }
    }

    /// The body of a `fatal_map_error` block: the runtime's message, the side Go printed
    /// (`goid`, `stack`) and the side map-trace adds.
    pub(super) fn write_human(&self, s: &mut String, goid: u64, stack: &[Frame]) {
        let _ = writeln!(s, "  Go died: \"fatal error: {}\"", self.message);
        let _ = writeln!(
            s,
            "  Go names goroutine {goid}, which noticed it in a map {}:",
            self.noticed
        );
        write_frames(s, stack);
        if self.writes.is_empty() {
            let _ = writeln!(
                s,
                "  map-trace found no write in progress to name: it had ended, or began before its map was traced"
            );
        }
        for w in &self.writes {
            let what = match w.in_progress {
                true => "the write in progress",
                false => "a write that began just before and had ended (call site only)",
            };
            let mut who = format!(
                "  map-trace adds {what}: {} by goroutine {} to {}",
                w.op.name(),
                w.goid,
                w.map_type
            );
            if w.growing {
                who.push_str("; the map was growing");
            }
            let _ = writeln!(s, "{who}");
            write_frames(s, &w.stack);
        }
        if self.unnamed > 0 {
            let _ = writeln!(
                s,
                "  and {} more write(s) in progress not named (ended before their stacks could be read, or past the bound of {})",
                self.unnamed,
                map_trace_common::fatal::FATAL_WRITERS
            );
        }
    }
}

/// What the goroutine that noticed was doing, by the runtime's message.
fn noticed_from(message: &str) -> &'static str {
    if message.contains("iteration") {
        "range"
    } else if message.contains("read") {
        "read"
    } else if message.contains("clone") {
        "clone"
    } else {
        "write"
    }
}

impl Report {
    /// A `fatal_map_error` from the fatal-error probe's record; None for an unknown op.
    pub fn decode_fatal(f: &Fatal, clock: &Clock) -> Option<Self> {
        let writes = f
            .writers()
            .iter()
            .map(|w| {
                Some(InProgress {
                    op: Op::from_u32(w.op)?,
                    goid: w.goid,
                    map: w.map,
                    growing: w.growing != 0,
                    in_progress: w.in_progress != 0,
                    map_type: String::new(),
                    stack: Vec::new(),
                    stack_key: w.stack,
                    map_type_addr: w.map_type,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let mut message = String::from_utf8_lossy(f.message()).into_owned();
        if f.message_full_len > f.message_len {
            message.push('…');
        }
        let first = writes.first();
        Some(Report {
            kind: FindingKind::FatalMapError,
            op: first.map_or(Op::Assign, |w| w.op),
            other_op: None,
            map: first.map_or(0, |w| w.map),
            writer_goid: first.map_or(0, |w| w.goid),
            iterator_goid: f.goid,
            growing: first.is_some_and(|w| w.growing),
            pid: f.tgid,
            binary: f.binary,
            writes: writes.len() as u32,
            time: clock.wall(f.ns),
            repeat_key: 0,
            writer_stack_key: first.map_or(0, |w| w.stack_key),
            iterator_stack_key: f.stack,
            map_type_addr: first.map_or(0, |w| w.map_type_addr),
            map_type: String::new(),
            writer_stack: Vec::new(),
            iterator_stack: Vec::new(),
            finding_id: String::new(),
            count: 0,
            crash: Some(Box::new(Crash {
                noticed: noticed_from(&message),
                message,
                writes,
                unnamed: f.writers_more + f.writers_unnamed,
            })),
            location: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use map_trace_common::fatal::{FATAL_MESSAGE_LEN, FatalWriter};
    use std::time::SystemTime;

    fn fatal(message: &str, writers: &[FatalWriter]) -> Fatal {
        let mut f = Fatal {
            ns: 5_000_000_000,
            goid: 7,
            stack: 2,
            tgid: 4242,
            ..Fatal::default()
        };
        let n = message.len().min(FATAL_MESSAGE_LEN);
        f.message[..n].copy_from_slice(&message.as_bytes()[..n]);
        f.message_len = n as u32;
        f.message_full_len = message.len() as u32;
        for (slot, w) in f.writer.iter_mut().zip(writers) {
            *slot = *w;
        }
        f.writers = writers.len() as u32;
        f
    }

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: "/src/main.go".into(),
            line,
        }
    }

    #[test]
    fn a_crash_names_the_side_go_printed_and_the_write_it_did_not() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let w = FatalWriter {
            map: 0xc000010000,
            map_type: 0x4a0000,
            goid: 18,
            stack: 1,
            op: Op::Delete as u32,
            growing: 1,
            in_progress: 1,
            _pad: 0,
        };
        let f = fatal("concurrent map read and map write", &[w]);
        let mut r = Report::decode_fatal(&f, &clock).unwrap();
        r.map_type = "map[int]string".into();
        r.iterator_stack = vec![frame("main.reader", 20)];
        r.writer_stack = vec![frame("main.writer", 30)];
        let c = r.crash.as_mut().unwrap();
        c.writes[0].map_type = "map[int]string".into();
        c.writes[0].stack = vec![frame("main.writer", 30)];
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["kind"], "fatal_map_error");
        assert_eq!(v["severity"], "error");
        assert_eq!(v["message"], "concurrent map read and map write");
        assert_eq!(
            (v["op"].clone(), v["writer_goid"].clone()),
            ("delete".into(), 18.into())
        );
        assert_eq!(v["writer_stack"][0]["function"], "main.writer");
        assert_eq!(
            (v["other_op"].clone(), v["other_goid"].clone()),
            ("read".into(), 7.into())
        );
        assert_eq!(v["other_stack"][0]["line"], 20);
        assert_eq!(v["writes_in_progress"][0]["op"], "delete");
        assert_eq!(v["writes_in_progress"][0]["map"], "0xc000010000");
        assert_eq!(v["writes_in_progress"][0]["in_progress"], true);
        assert_eq!(v["writes_in_progress"][0]["stack"][0]["line"], 30);
        assert_eq!(v["writes_in_progress_unnamed"], 0);
        assert!(v.get("iterator_goid").is_none() && v.get("iterator_stack").is_none());
        let h = r.to_human();
        assert!(
            h.starts_with("ERROR   fatal_map_error  map[int]string"),
            "{h}"
        );
        assert!(
            h.contains("Go died: \"fatal error: concurrent map read and map write\""),
            "{h}"
        );
        assert!(
            h.contains("Go names goroutine 7, which noticed it in a map read:\n    main.reader"),
            "{h}"
        );
        assert!(
            h.contains("map-trace adds the write in progress: delete by goroutine 18 to map[int]string; the map was growing\n    main.writer"),
            "{h}"
        );
        assert_eq!(r.op_label(), "delete");
    }

    #[test]
    fn a_crash_without_a_write_in_progress_says_so_and_has_no_writer_side() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let mut f = fatal("concurrent map iteration and map write", &[]);
        f.writers_unnamed = 1;
        let r = Report::decode_fatal(&f, &clock).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for absent in ["op", "writer_goid", "writer_stack", "map"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        assert_eq!(v["other_op"], "range");
        assert_eq!(v["writes_in_progress"], serde_json::json!([]));
        assert_eq!(v["writes_in_progress_unnamed"], 1);
        assert_eq!(r.op_label(), "none");
        let h = r.to_human();
        assert!(h.contains("found no write in progress"), "{h}");
        assert!(h.contains("1 more write(s) in progress not named"), "{h}");
    }

    #[test]
    fn messages_say_what_the_noticing_side_did_and_long_ones_are_marked_cut() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let side = |m: &str| {
            let r = Report::decode_fatal(&fatal(m, &[]), &clock).unwrap();
            r.crash.unwrap().noticed
        };
        assert_eq!(side("concurrent map writes"), "write");
        assert_eq!(side("concurrent map clone and map write"), "clone");
        assert_eq!(
            side("small map with no empty slot (concurrent map writes?)"),
            "write"
        );
        // A Swiss range that re-reads a key of a grown table dies of a "read".
        let f = fatal("concurrent map read and map write", &[]);
        let mut r = Report::decode_fatal(&f, &clock).unwrap();
        let c = r.crash.as_mut().unwrap();
        c.noticed_in(&[
            frame("internal/runtime/maps.(*Map).getWithKey", 1),
            frame("internal/runtime/maps.(*Iter).Next", 2),
            frame("main.stats", 18),
        ]);
        assert_eq!(c.noticed, "range");
        let long = "concurrent map writes ".repeat(4);
        let r = Report::decode_fatal(&fatal(&long, &[]), &clock).unwrap();
        assert!(r.crash.unwrap().message.ends_with('…'));
    }
}
