//! One group of tests at a time: a test passes the gate while no test of another group holds
//! it, and tests of its own group pass alongside it.
//!
//! The kernel tests of map-trace's integration binary use it (through
//! [`crate::kernel_test`]) with one group per former test file. They once were one binary per
//! file, which cargo ran one after another, and some of them are timing-sensitive (a redeploy
//! test once failed under extra load): the gate keeps tests of different files from
//! overlapping, while the tests of one file still run in parallel as libtest schedules them.
//!
//! Waiting cannot deadlock: a test waits only for tests that are already running, and the gate
//! is released when a pass drops, also when its test panics.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

pub struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// The group whose tests hold the gate, while any does.
    group: Option<&'static str>,
    /// How many passes of that group are out.
    holders: usize,
}

impl Gate {
    pub const fn new() -> Gate {
        Gate {
            state: Mutex::new(State {
                group: None,
                holders: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Waits until the gate is free or held by `group`, then holds it until the pass drops.
    pub fn enter(&self, group: &'static str) -> Pass<'_> {
        let mut s = self.lock();
        while s.group.is_some_and(|g| g != group) {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.group = Some(group);
        s.holders += 1;
        Pass { gate: self, group }
    }

    /// The group holding the gate now, if any.
    pub fn holder(&self) -> Option<&'static str> {
        self.lock().group
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held, but a poisoned lock must not fail every test
        // that follows.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

/// A test's hold on a [`Gate`], released when dropped.
#[must_use = "the gate is released when the pass drops: bind it, `let _gate = ...`"]
pub struct Pass<'a> {
    gate: &'a Gate,
    group: &'static str,
}

impl Pass<'_> {
    pub fn group(&self) -> &'static str {
        self.group
    }
}

impl std::fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass").field("group", &self.group).finish()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.holders -= 1;
        if s.holders == 0 {
            s.group = None;
            self.gate.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Long enough for a thread that could pass the gate to have done so.
    const SETTLE: Duration = Duration::from_millis(200);

    #[test]
    fn tests_of_one_group_hold_the_gate_together() {
        let gate = Gate::new();
        let inside = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Each of three holds its pass until all three hold theirs: they pass only if they
        // were inside at once.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let pass = gate.enter("deploy");
                    inside.fetch_add(1, Ordering::SeqCst);
                    while inside.load(Ordering::SeqCst) < 3 {
                        assert!(
                            Instant::now() < deadline,
                            "tests of one group did not hold the gate together"
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    drop(pass);
                });
            }
        });
        assert_eq!(gate.holder(), None);
    }

    #[test]
    fn another_group_waits_until_the_last_holder_leaves() {
        let gate = Gate::new();
        let first = gate.enter("deploy");
        let second = gate.enter("deploy");
        let passed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let pass = gate.enter("systemd_unit");
                passed.fetch_add(1, Ordering::SeqCst);
                assert_eq!(gate.holder(), Some("systemd_unit"));
                drop(pass);
            });
            std::thread::sleep(SETTLE);
            assert_eq!(
                passed.load(Ordering::SeqCst),
                0,
                "entered while deploy held it"
            );
            drop(first);
            std::thread::sleep(SETTLE);
            assert_eq!(
                passed.load(Ordering::SeqCst),
                0,
                "entered while deploy held it"
            );
            assert_eq!(gate.holder(), Some("deploy"));
            drop(second);
            waiter.join().unwrap();
        });
        assert_eq!(passed.load(Ordering::SeqCst), 1);
        assert_eq!(gate.holder(), None);
    }

    #[test]
    fn two_groups_never_overlap() {
        let gate = Gate::new();
        // Per group, how many of its tests are inside; a test checks the other group's is 0.
        let inside = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let groups = ["deploy", "writes_in_progress"];
        let deadline = Instant::now() + Duration::from_secs(10);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (gate, inside) = (&gate, &inside);
                s.spawn(move || {
                    for round in 0..20 {
                        let g = (t + round) % 2;
                        let pass = gate.enter(groups[g]);
                        inside[g].fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                        assert_eq!(
                            inside[1 - g].load(Ordering::SeqCst),
                            0,
                            "{} ran inside while {} held the gate",
                            groups[1 - g],
                            groups[g]
                        );
                        inside[g].fetch_sub(1, Ordering::SeqCst);
                        drop(pass);
                        assert!(Instant::now() < deadline, "the gate starves a group");
                    }
                });
            }
        });
        assert_eq!(gate.holder(), None);
    }

    #[test]
    fn a_panicking_test_releases_the_gate() {
        let gate = Gate::new();
        std::thread::scope(|s| {
            let r = s
                .spawn(|| {
                    let _pass = gate.enter("deploy");
                    panic!("a test failing on purpose, holding the gate");
                })
                .join();
            assert!(r.is_err());
        });
        assert_eq!(gate.holder(), None);
        let pass = gate.enter("systemd_unit");
        assert_eq!(pass.group(), "systemd_unit");
    }
}
