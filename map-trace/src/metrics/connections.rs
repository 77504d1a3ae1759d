//! Who keeps a connection to the metrics endpoint when more clients connect than it serves.
//!
//! Refusing newcomers when full would let anyone who can connect silence /metrics and
//! /healthz by holding the slots open and saying nothing (a liveness probe would then restart
//! the daemon). So a newcomer always gets in, and the connection closed to make room is the
//! one doing least: first those that have never completed a request, then those idling
//! between requests, each the one that has waited longest. A client that sends its request at
//! once, as Prometheus and probes do, is therefore never the one closed. Per-peer limits keep
//! one host from pushing out another's connections: a peer at its limit only ever replaces
//! its own, and when the table is full the peer holding the most gives one up.
//!
//! There is no "answering" state: a response is made synchronously on the daemon's single
//! thread, so the accept loop never sees a connection mid-answer. A response still being
//! written to a client that does not read counts as waiting, and may be closed when it is
//! the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// How many connections are kept, in all and per peer; both at least 1.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
}

/// A client host: an IPv4 address, or an IPv6 /64 (one host commonly has a whole /64, so
/// counting single IPv6 addresses would not limit anyone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer(IpAddr);

impl Peer {
    pub fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Peer(IpAddr::V6(prefix.into()))
            }
            v4 => Peer(v4),
        }
    }
}

/// Where a connection stands, as far as making room is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// It has completed at least one request (a real HTTP client, now between requests).
    pub answered: bool,
    /// Since when it has been waiting for its next request: accepted, or last request.
    pub since: Instant,
}

/// A connection's [`Waiting`], written by its task at each request and read by the accept
/// loop when it must choose whom to close.
#[derive(Debug)]
pub struct Activity(Mutex<Waiting>);

impl Activity {
    pub fn accepted(now: Instant) -> Activity {
        Activity(Mutex::new(Waiting {
            answered: false,
            since: now,
        }))
    }

    /// A complete request arrived at `now`.
    pub fn request(&self, now: Instant) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *w = Waiting {
            answered: true,
            since: now,
        };
    }

    pub fn get(&self) -> Waiting {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection (by id) to close so that a new one from `peer` fits within `limits`, or
/// None when it fits as things are. `open` lists the connections kept now.
pub fn victim(limits: Limits, peer: Peer, open: &[(u64, Peer, Waiting)]) -> Option<u64> {
    debug_assert!(limits.total > 0 && limits.per_peer > 0);
    let mut held: HashMap<Peer, usize> = HashMap::new();
    for (_, p, _) in open {
        *held.entry(*p).or_default() += 1;
    }
    let from = if held.get(&peer).copied().unwrap_or(0) >= limits.per_peer {
        // At its own limit: it can only replace one of its own.
        vec![peer]
    } else if open.len() >= limits.total {
        let most = held.values().copied().max().unwrap_or(0);
        held.into_iter()
            .filter(|&(_, n)| n == most)
            .map(|(p, _)| p)
            .collect()
    } else {
        return None;
    };
    open.iter()
        .filter(|(_, p, _)| from.contains(p))
        // Never answered before answered, then the longest waiting; the id breaks ties so
        // the choice does not depend on the order of `open`.
        .min_by_key(|(id, _, w)| (w.answered, w.since, *id))
        .map(|(id, _, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: Limits = Limits {
        total: 4,
        per_peer: 3,
    };

    fn peer(s: &str) -> Peer {
        Peer::of(s.parse().unwrap())
    }

    /// Connection `id` from `from`, waiting since `t0 + secs`.
    fn conn(t0: Instant, id: u64, from: &str, answered: bool, secs: u64) -> (u64, Peer, Waiting) {
        let since = t0 + Duration::from_secs(secs);
        (id, peer(from), Waiting { answered, since })
    }

    #[test]
    fn room_left_means_no_one_is_closed() {
        let t0 = Instant::now();
        let open = [conn(t0, 1, "10.0.0.1", false, 0)];
        assert_eq!(victim(LIMITS, peer("10.0.0.1"), &open), None);
        assert_eq!(victim(LIMITS, peer("10.0.0.2"), &[]), None);
    }

    #[test]
    fn a_peer_at_its_limit_replaces_its_own_silent_connection_first() {
        let t0 = Instant::now();
        let open = [
            conn(t0, 1, "10.0.0.1", true, 0),
            conn(t0, 2, "10.0.0.1", false, 5),
            conn(t0, 3, "10.0.0.1", false, 3),
            conn(t0, 4, "10.0.0.2", false, 0),
        ];
        // 3 never completed a request and has waited longer than 2; 1, older, was answered;
        // 4, oldest of all, belongs to someone else.
        assert_eq!(victim(LIMITS, peer("10.0.0.1"), &open), Some(3));
    }

    #[test]
    fn when_full_the_peer_holding_most_gives_one_up() {
        let t0 = Instant::now();
        let open = [
            conn(t0, 1, "10.0.0.9", false, 0),
            conn(t0, 2, "10.0.0.1", true, 1),
            conn(t0, 3, "10.0.0.1", true, 2),
            conn(t0, 4, "10.0.0.2", false, 3),
        ];
        assert_eq!(victim(LIMITS, peer("10.0.0.3"), &open), Some(2));
        // Equal holdings: the best victim among them, whoever holds it.
        let open = [
            conn(t0, 1, "10.0.0.1", true, 0),
            conn(t0, 2, "10.0.0.1", true, 1),
            conn(t0, 3, "10.0.0.2", false, 7),
            conn(t0, 4, "10.0.0.2", true, 0),
        ];
        assert_eq!(victim(LIMITS, peer("10.0.0.3"), &open), Some(3));
    }

    #[test]
    fn a_client_that_asked_at_once_outlasts_a_flood_of_silent_ones() {
        let t0 = Instant::now();
        let limits = Limits {
            total: 64,
            per_peer: 16,
        };
        let me = peer("127.0.0.1");
        let mut open: Vec<(u64, Peer, Waiting)> = Vec::new();
        let mut closed = Vec::new();
        for id in 0..500u64 {
            if let Some(v) = victim(limits, me, &open) {
                open.retain(|c| c.0 != v);
                closed.push(v);
            }
            // Connection 100 is the scraper: it completes its request as soon as it is in.
            open.push(conn(t0, id, "127.0.0.1", id == 100, id));
        }
        assert_eq!(open.len(), 16);
        assert!(open.iter().any(|c| c.0 == 100), "the scraper was closed");
        assert_eq!(closed.len(), 500 - 16);
    }

    #[test]
    fn peers_are_hosts() {
        assert_eq!(peer("::ffff:10.0.0.1"), peer("10.0.0.1"));
        assert_eq!(peer("2001:db8:1:2::1"), peer("2001:db8:1:2:ffff::9"));
        assert_ne!(peer("2001:db8:1:2::1"), peer("2001:db8:1:3::1"));
        assert_ne!(peer("10.0.0.1"), peer("10.0.0.2"));
    }
}
