//! Slow turns of the main loop, said on request. Every stage shares one loop: a turn that takes
//! seconds (an analysis, a table sweep on a slow machine) delays exec notices, exits and
//! findings alike. `MAP_TRACE_DEBUG_LOOP=1` names each turn longer than [`SLOW_TURN`], which is
//! how a late "pid N exited" line in an emulated VM is told from a missing one.

use std::time::{Duration, Instant};

/// Turns shorter than this are not worth a line.
const SLOW_TURN: Duration = Duration::from_millis(500);

pub(super) struct Turns {
    on: bool,
    what: &'static str,
    at: Instant,
}

impl Turns {
    pub fn from_env() -> Turns {
        Turns {
            on: std::env::var_os("MAP_TRACE_DEBUG_LOOP").is_some_and(|v| v != "0"),
            what: "",
            at: Instant::now(),
        }
    }

    /// A turn doing `what` starts now (called once its event has arrived, so waiting is not
    /// counted).
    pub fn begin(&mut self, what: &'static str) {
        if self.on {
            self.what = what;
            self.at = Instant::now();
        }
    }

    /// The turn is over: said if it was slow.
    pub fn end(&mut self) {
        if self.on && !self.what.is_empty() {
            let took = self.at.elapsed();
            if took >= SLOW_TURN {
                eprintln!(
                    "map-trace: debug: a {} turn of the main loop took {} ms",
                    self.what,
                    took.as_millis()
                );
            }
            self.what = "";
        }
    }
}
