//! The main loop's heartbeat: the loop beats on every poll, `/healthz` checks the age of the
//! last beat (a stuck loop reads as unhealthy even while the HTTP server still answers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The main loop's heartbeat, which /healthz reports on.
pub struct Health {
    /// Monotonic, so a wall-clock step cannot make the daemon look stale or fresh.
    start: Instant,
    /// Milliseconds since `start` of the last beat, plus one; 0 until the first beat.
    last: AtomicU64,
}

impl Health {
    /// Not healthy until the first [`Health::beat`]: the main loop has not run yet.
    pub fn new() -> Self {
        Health {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms + 1, Ordering::Relaxed);
    }

    /// Ok while the last beat is at most `stale_after` old; otherwise why not, in one line.
    pub fn check(&self, stale_after: Duration) -> Result<(), String> {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 {
            return Err("main loop has not run yet".into());
        }
        let beat = self.start + Duration::from_millis(last - 1);
        let age = Instant::now().saturating_duration_since(beat);
        if age <= stale_after {
            Ok(())
        } else {
            Err(format!(
                "main loop last ran {:.1}s ago (limit {:.1}s)",
                age.as_secs_f64(),
                stale_after.as_secs_f64()
            ))
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}
