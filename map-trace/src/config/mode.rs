//! How much a session probes: the mode a user chooses (`--mode`, config `mode`) and, for the
//! sentinel, how its escalations are bounded.

use std::time::Duration;

use crate::plan::IterationMode;

/// The modes by the names users give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every range step and every write probed: both sides of every overlap named.
    Full,
    /// Range starts and ends, and every write: no trap per step; ranges left early unseen.
    LowOverhead,
    /// Range starts and ends only, compared by the map's header; any change attaches the full
    /// probes to that binary for a while, to name the writer of the next occurrence.
    Sentinel,
}

impl Mode {
    pub fn iteration_mode(self) -> IterationMode {
        match self {
            Mode::Full => IterationMode::Steps,
            Mode::LowOverhead => IterationMode::Ends,
            Mode::Sentinel => IterationMode::Sentinel,
        }
    }
}

/// How long a sentinel binary keeps the full probes after a change, and how often it may get
/// them: a map that changes under every range must not keep the full cost on for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalation {
    /// The full probes stay attached this long.
    pub window: Duration,
    /// Least time from the start of one escalation of a binary to the start of its next.
    pub every: Duration,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            window: Duration::from_secs(10),
            every: Duration::from_secs(60),
        }
    }
}

impl Escalation {
    /// Checks the pair: each at least a second (attaching takes a good part of one), and a
    /// window no longer than the period.
    pub fn new(window: Duration, every: Duration) -> Result<Escalation, String> {
        if window < Duration::from_secs(1) {
            return Err("escalate_for must be at least 1s: attaching takes about that".into());
        }
        if every < window {
            return Err(format!(
                "escalate_every ({}) must be at least escalate_for ({})",
                humantime::format_duration(every),
                humantime::format_duration(window)
            ));
        }
        Ok(Escalation { window, every })
    }

    /// The share of the time a binary whose maps keep changing has the full probes at most.
    pub fn fraction(&self) -> f64 {
        self.window.as_secs_f64() / self.every.as_secs_f64()
    }
}

/// What `--check-config` says of a mode.
pub fn describe(mode: IterationMode, escalation: Escalation) -> String {
    match mode {
        IterationMode::Steps | IterationMode::Escalation => "every step probed (full)".into(),
        IterationMode::Ends => {
            "start and end probed only (low overhead; ranges left early are not seen)".into()
        }
        IterationMode::Sentinel => format!(
            "sentinel: range start and end compared by the map's header; after a change the full probes for {} at most once every {} ({:.0}% of the time at most)",
            humantime::format_duration(escalation.window),
            humantime::format_duration(escalation.every),
            escalation.fraction() * 100.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escalation_is_at_least_a_second_and_fits_its_period() {
        let s = Duration::from_secs;
        assert!(Escalation::new(s(10), s(60)).is_ok());
        assert!(Escalation::new(s(10), s(10)).is_ok());
        assert!(Escalation::new(Duration::from_millis(500), s(60)).is_err());
        let e = Escalation::new(s(20), s(10)).unwrap_err();
        assert!(e.contains("at least escalate_for"), "{e}");
        assert_eq!(Escalation::default().fraction(), 10.0 / 60.0);
    }

    #[test]
    fn each_mode_name_is_the_iteration_mode_it_runs() {
        assert_eq!(Mode::Full.iteration_mode(), IterationMode::Steps);
        assert_eq!(Mode::LowOverhead.iteration_mode(), IterationMode::Ends);
        assert_eq!(Mode::Sentinel.iteration_mode(), IterationMode::Sentinel);
        for m in [Mode::Full, Mode::LowOverhead, Mode::Sentinel] {
            let v = clap::ValueEnum::to_possible_value(&m).unwrap();
            assert_eq!(v.get_name(), m.iteration_mode().name());
        }
    }
}
