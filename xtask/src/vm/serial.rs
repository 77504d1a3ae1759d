//! Reads what a guest reported on its serial console. Every line of ours starts with `@@MT:`;
//! files come as `FILE name size`, base64 lines `B ...`, `END name`. Anything else on the
//! console (kernel messages, qemu) is ignored, and a file whose decoded size differs from the
//! size announced (a line torn by a message) is reported as garbled rather than trusted.

use std::collections::BTreeMap;

const PREFIX: &str = "@@MT:";

#[derive(Default, Debug)]
pub struct Console {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Progress marks in order, without the prefix: `BOOTED 3.10 6.1.0-56-arm64`, `RUN 1 ...`.
    pub marks: Vec<String>,
    /// The guest got to the end of its script.
    pub done: bool,
    pub problems: Vec<String>,
}

impl Console {
    /// The words after the first mark named `name`, e.g. `mark_args("BOOTED")`.
    pub fn mark_args(&self, name: &str) -> Option<Vec<&str>> {
        self.marks.iter().find_map(|m| {
            let mut words = m.split_whitespace();
            (words.next() == Some(name)).then(|| words.collect())
        })
    }

    /// The first number after mark `name` (guest uptime, seconds).
    pub fn mark_time(&self, name: &str) -> Option<f64> {
        self.mark_args(name)?.first()?.parse().ok()
    }

    pub fn text(&self, file: &str) -> String {
        self.files
            .get(file)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
}

pub fn parse(serial: &str) -> Console {
    let mut c = Console::default();
    let mut open: Option<(String, usize, String)> = None;
    for line in serial.lines() {
        let Some(at) = line.find(PREFIX) else {
            continue;
        };
        let rest = line[at + PREFIX.len()..].trim_end();
        let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "FILE" => {
                let mut a = args.split_whitespace();
                let name = a.next().unwrap_or_default().to_string();
                let size = a.next().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
                open = Some((name, size, String::new()));
            }
            "B" => {
                if let Some((_, _, b64)) = open.as_mut() {
                    b64.push_str(args.trim());
                }
            }
            "END" => match open.take() {
                Some((name, size, b64)) if name == args.trim() => match decode_base64(&b64) {
                    Some(data) if data.len() == size => {
                        c.files.insert(name, data);
                    }
                    Some(data) => c.problems.push(format!(
                        "{name} arrived garbled on the console ({} bytes, {size} announced)",
                        data.len()
                    )),
                    None => c.problems.push(format!(
                        "{name} arrived garbled on the console (bad base64)"
                    )),
                },
                _ => c
                    .problems
                    .push(format!("unmatched END {args} on the console")),
            },
            "DONE" => {
                c.done = true;
                c.marks.push(rest.to_string());
            }
            _ => c.marks.push(rest.to_string()),
        }
    }
    c
}

/// Standard base64 with padding, as busybox `base64` writes it; `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_what_busybox_writes() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("/+8=").unwrap(), [0xff, 0xef]);
        assert!(decode_base64("Zm9").is_none());
        assert!(decode_base64("Zg==Zg==").is_none());
        assert!(decode_base64("Zm9v[1.2").is_none());
    }

    #[test]
    fn files_and_marks_survive_console_noise() {
        let serial = "\
[    0.000000] Booting Linux\n\
@@MT:BOOTED 3.10 6.1.0-56-arm64\n\
some kernel line\n\
@@MT:RUN 1 go1.27.3-arm64-default self_insert exit=0\n\
@@MT:FILE runs 6\n\
@@MT:B aGVsbG8K\n\
@@MT:END runs\n\
@@MT:FILE empty 0\n\
@@MT:END empty\n\
@@MT:FILE torn 12\n\
@@MT:B aGVsbG8K\n\
@@MT:END torn\n\
x@@MT:DONE 9.5\n";
        let c = parse(serial);
        assert_eq!(c.files["runs"], b"hello\n");
        assert_eq!(c.files["empty"], b"");
        assert!(!c.files.contains_key("torn"));
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(c.problems[0].contains("torn arrived garbled"));
        assert!(c.done);
        assert_eq!(c.mark_time("BOOTED"), Some(3.10));
        assert_eq!(c.mark_args("BOOTED").unwrap()[1], "6.1.0-56-arm64");
        assert_eq!(c.mark_time("DONE"), Some(9.5));
        assert_eq!(c.text("runs"), "hello\n");
    }
}
