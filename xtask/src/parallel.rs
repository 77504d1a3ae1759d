//! Work spread over two threads: the machines this project runs on have two cores.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use anyhow::{Result, anyhow};

/// Runs `work` on every item, on two threads; items with equal `key` run in turn on one. The
/// first error is returned once both threads have stopped (a thread stops at its first error).
pub fn in_groups<T: Send, K: Ord>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
    work: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let mut groups: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for item in items {
        groups.entry(key(&item)).or_default().push(item);
    }
    let queue = Mutex::new(groups.into_values().collect::<Vec<_>>());
    let next = || queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while let Some(group) = next() {
                        for item in group {
                            work(item)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow!("a worker panicked")))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_and_a_group_in_turn() {
        let seen = Mutex::new(Vec::new());
        in_groups(
            (0..20).collect(),
            |i| i % 3,
            |i| {
                seen.lock().unwrap().push(i);
                Ok(())
            },
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        // Within a group, in order.
        for g in 0..3 {
            let of: Vec<i32> = seen.iter().copied().filter(|i| i % 3 == g).collect();
            assert!(of.windows(2).all(|w| w[0] < w[1]), "{of:?}");
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_is_returned() {
        let r = in_groups(
            vec![1, 2, 3],
            |i| *i,
            |i| match i {
                2 => Err(anyhow!("two")),
                _ => Ok(()),
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "two");
    }
}
