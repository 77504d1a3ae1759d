//! Detaching uprobes off the main loop, many at once.
//!
//! Closing a perf-event uprobe waits for the kernel's RCU grace periods (`uprobe_unregister`
//! synchronizes): about 100 ms a probe on 6.18, one after another when closed in turn. A
//! binary's dozen probes took 1.3–1.5 s, and the main loop that answers held execs and marks
//! new release directories stood still meanwhile (a symlink flipped during that second ran its
//! new release untraced). Closed from parallel threads, the closes share grace periods; handed
//! to the reaper thread, the main loop goes on at once and waits only where it must (before a
//! changed file's exec is let go, and before the duty cycle forgets iteration state).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use aya::programs::uprobe::UProbeLink;

/// A link to close: a perf-event uprobe (aya's), or a uprobe_multi link's fd.
pub enum Closable {
    Perf(UProbeLink),
    Multi(std::os::fd::OwnedFd),
}

impl Closable {
    /// Detaches: aya's link detaches when dropped, a uprobe_multi link when its fd closes.
    fn close(self) {
        match self {
            Closable::Perf(link) => drop(link),
            Closable::Multi(fd) => drop(fd),
        }
    }
}

/// Threads closing links at one time.
const CLOSERS: usize = 32;

/// A set of links being closed; [`Detaching::wait`] returns once every one is.
#[must_use = "detaching goes on in the background; wait where the probes must be gone"]
pub struct Detaching(Option<Arc<Done>>);

#[derive(Default)]
struct Done {
    done: Mutex<bool>,
    cond: Condvar,
}

impl Done {
    fn set(&self) {
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.cond.notify_all();
    }
}

impl Detaching {
    /// Nothing to wait for.
    pub fn none() -> Detaching {
        Detaching(None)
    }

    /// Blocks until every link of this set is closed.
    pub fn wait(self) {
        let Some(d) = self.0 else { return };
        let mut done = d
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*done {
            done = d
                .cond
                .wait(done)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Lets the links close without anyone waiting: for probes that are right for their file's
    /// content and whose settings are gone, so a late hit does nothing.
    pub fn in_background(self) {}

    /// Whether every link is closed (nothing blocks).
    pub fn is_done(&self) -> bool {
        self.0.as_ref().is_none_or(|d| {
            *d.done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }
}

type Batch = (Vec<Closable>, Arc<Done>);

/// Hands `links` to the reaper thread, which closes them in parallel. If that thread cannot
/// be started, they are closed here, in turn.
pub fn close(links: Vec<Closable>) -> Detaching {
    if links.is_empty() {
        return Detaching::none();
    }
    let done = Arc::new(Done::default());
    match reaper() {
        Some(tx) => match tx.send((links, done.clone())) {
            Ok(()) => {}
            Err(std::sync::mpsc::SendError((links, done))) => {
                drop(links);
                done.set();
            }
        },
        None => {
            drop(links);
            done.set();
        }
    }
    Detaching(Some(done))
}

fn reaper() -> Option<Sender<Batch>> {
    static REAPER: OnceLock<Option<Mutex<Sender<Batch>>>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("map-trace-detach".into())
                .spawn(move || reap(&rx))
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
        .map(|m| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
}

/// Closes every batch waiting, all their links at once, then tells each batch it is done.
fn reap(rx: &Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let mut links: Vec<Closable> = Vec::new();
        let mut dones = Vec::with_capacity(batches.len());
        for (l, d) in batches {
            links.extend(l);
            dones.push(d);
        }
        close_parallel(links);
        for d in dones {
            d.set();
        }
    }
}

/// Closes links from up to [`CLOSERS`] threads; a thread that cannot start closes nothing,
/// its links are closed on this one.
fn close_parallel(mut links: Vec<Closable>) {
    while !links.is_empty() {
        let take = links.len().min(CLOSERS);
        let now: Vec<Closable> = links.drain(..take).collect();
        std::thread::scope(|s| {
            for l in now {
                // On a spawn failure the closure, and the link with it, is dropped right here.
                let _ = std::thread::Builder::new().spawn_scoped(s, move || l.close());
            }
        });
    }
}
