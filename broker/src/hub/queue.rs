//! A route's queue in memory, without I/O: which messages to hand to the
//! target next, and what each outcome does. The worker (`worker.rs`) owns
//! the sockets and timers and calls these with `now`; the store holds the
//! durable copy of every entry (written at admission, deleted once done).
//!
//! Rules:
//! - entries leave in queue order per topic: a message is picked only if no
//!   earlier message of its topic is in flight or waiting; consecutive
//!   messages of a topic go in one batch (in order) while it has room, so
//!   a target that batches (PostgreSQL) gets full batches even from few
//!   topics, and never are two calls in flight with one topic;
//! - after a `Retry` outcome the whole route waits (exponential backoff
//!   with jitter from the failed message's attempt count): a target that is
//!   down is not hammered, and messages do not spend attempts while it is;
//! - a message tried `max_attempts` times, or rejected, is dead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::sink::{DeliveryError, Outcome, RoutedMessage};
use crate::handle::AckGuard;

/// How many entries one pick looks at, at most: bounds the work per
/// completion when the head of a long queue is blocked.
const SCAN_LIMIT: usize = 4096;

/// One queued message.
#[derive(Debug)]
pub(crate) struct Entry {
    pub msg: RoutedMessage,
    /// Tries made so far.
    pub attempts: u32,
    pub in_flight: bool,
    /// When this node queued it (a restart resets it to the load time).
    pub queued_at: Instant,
}

/// Retry policy of a route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Policy {
    /// Wait after the `attempts`-th failed try: `initial * 2^(attempts-1)`
    /// capped at `max`, then "equal jitter" (a random point in its upper
    /// half), so routes that failed together do not retry together.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(30);
        let full = self
            .backoff_initial
            .saturating_mul(1 << shift)
            .min(self.backoff_max);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// What a batch's outcomes did.
#[derive(Debug, Default)]
pub(crate) struct Completed {
    /// Delivered: to delete from the store.
    pub delivered: Vec<Entry>,
    /// Dead, with the error: to publish as dead letters and delete.
    pub dead: Vec<(Entry, String)>,
    /// Tries that will be made again.
    pub retried: u64,
    /// The last retry error, if any outcome was a `Retry`.
    pub retry_error: Option<String>,
}

/// The queue of one route.
#[derive(Default)]
pub(crate) struct RouteQueue {
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// No pick before this instant (backoff after a `Retry`).
    retry_at: Option<Instant>,
    /// Publishers' acknowledgements held while the queue is over
    /// `max_queued` (`overflow = "backpressure"`), with their deadline.
    holds: VecDeque<(Instant, AckGuard)>,
}

impl RouteQueue {
    /// A queue whose seqs start at `first_seq`, holding the `loaded` backlog
    /// (in seq order).
    pub fn new(first_seq: u64, loaded: Vec<RoutedMessage>, now: Instant) -> RouteQueue {
        let next_seq = loaded
            .last()
            .map_or(first_seq, |m| first_seq.max(m.seq + 1));
        RouteQueue {
            entries: loaded
                .into_iter()
                .map(|msg| Entry {
                    msg,
                    attempts: 0,
                    in_flight: false,
                    queued_at: now,
                })
                .collect(),
            next_seq,
            retry_at: None,
            holds: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The seq the next message gets.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn push(&mut self, msg: RoutedMessage, now: Instant) {
        self.entries.push_back(Entry {
            msg,
            attempts: 0,
            in_flight: false,
            queued_at: now,
        });
    }

    /// Keeps a publisher's acknowledgement until the queue drains below its
    /// limit or `deadline` passes.
    pub fn hold(&mut self, guard: AckGuard, deadline: Instant) {
        self.holds.push_back((deadline, guard));
    }

    /// The holds to release now: all of them once the queue is below
    /// `max_queued`, else those past their deadline. Drop them outside the
    /// lock (a drop sends the acknowledgement).
    pub fn release_holds(&mut self, now: Instant, max_queued: usize) -> Vec<AckGuard> {
        if self.entries.len() < max_queued {
            return self.holds.drain(..).map(|(_, g)| g).collect();
        }
        let mut out = Vec::new();
        while self.holds.front().is_some_and(|(d, _)| *d <= now) {
            if let Some((_, g)) = self.holds.pop_front() {
                out.push(g);
            }
        }
        out
    }

    /// When the worker must look again without being woken: the end of a
    /// backoff, or the next hold deadline.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let hold = self.holds.front().map(|(d, _)| *d);
        match (self.retry_at, hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Up to `slots` batches of up to `max_batch` messages to deliver now,
    /// marked in flight; none while backing off.
    pub fn take_batches(
        &mut self,
        max_batch: usize,
        slots: usize,
        now: Instant,
    ) -> Vec<Vec<RoutedMessage>> {
        if slots == 0 || self.retry_at.is_some_and(|at| at > now) {
            return Vec::new();
        }
        self.retry_at = None;
        let max_batch = max_batch.max(1);
        // A topic with a message in flight, or one not picked, is blocked:
        // nothing after it of that topic may go now. A topic picked goes
        // on in the batch it started in, while that batch has room.
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut batch_of: HashMap<&str, usize> = HashMap::new();
        let mut picked: Vec<Vec<usize>> = Vec::new();
        let mut count = 0;
        for (i, e) in self.entries.iter().enumerate().take(SCAN_LIMIT) {
            let topic = e.msg.topic.as_str();
            if blocked.contains(topic) {
                continue;
            }
            if e.in_flight {
                blocked.insert(topic);
                continue;
            }
            let target = match batch_of.get(topic) {
                Some(&k) if picked[k].len() < max_batch => Some(k),
                Some(_) => None,
                None => match picked.last() {
                    Some(last) if last.len() < max_batch => Some(picked.len() - 1),
                    _ if picked.len() < slots => {
                        picked.push(Vec::new());
                        Some(picked.len() - 1)
                    }
                    _ => None,
                },
            };
            let Some(k) = target else {
                blocked.insert(topic);
                continue;
            };
            batch_of.insert(topic, k);
            picked[k].push(i);
            count += 1;
            if count == slots * max_batch {
                break;
            }
        }
        let mut batches: Vec<Vec<RoutedMessage>> = Vec::with_capacity(picked.len());
        for chunk in picked {
            let mut batch = Vec::with_capacity(chunk.len());
            for i in chunk {
                let e = &mut self.entries[i];
                e.in_flight = true;
                batch.push(e.msg.clone());
            }
            batches.push(batch);
        }
        batches
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |e| e.msg.seq).ok()
    }

    /// Applies the outcomes of a batch (`seqs` in the order it was sent; a
    /// missing outcome counts as a `Retry`).
    pub fn complete(
        &mut self,
        seqs: &[u64],
        outcomes: Vec<Outcome>,
        policy: &Policy,
        now: Instant,
    ) -> Completed {
        let mut done = Completed::default();
        let mut outcomes = outcomes.into_iter();
        for &seq in seqs {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(DeliveryError::Retry(
                    "the target returned no outcome for this message".into(),
                ))
            });
            // Deleted meanwhile (route dropped): nothing to do.
            let Some(i) = self.position(seq) else {
                continue;
            };
            self.entries[i].attempts += 1;
            self.entries[i].in_flight = false;
            match outcome {
                Ok(()) => done.delivered.extend(self.entries.remove(i)),
                Err(DeliveryError::Reject(error)) => {
                    if let Some(e) = self.entries.remove(i) {
                        done.dead.push((e, error));
                    }
                }
                Err(DeliveryError::Retry(error)) => {
                    let attempts = self.entries[i].attempts;
                    if attempts >= policy.max_attempts {
                        if let Some(e) = self.entries.remove(i) {
                            done.dead
                                .push((e, format!("after {attempts} attempts: {error}")));
                        }
                    } else {
                        done.retried += 1;
                        let at = now + policy.backoff(attempts);
                        self.retry_at = Some(self.retry_at.map_or(at, |r| r.max(at)));
                    }
                    done.retry_error = Some(error);
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(seq: u64, topic: &str) -> RoutedMessage {
        RoutedMessage {
            seq,
            uid: 0,
            topic: topic.into(),
            payload: Bytes::from_static(b"p"),
            qos: 1,
            retain: false,
            client_id: "c".into(),
            timestamp_ms: 0,
        }
    }

    fn policy(max_attempts: u32) -> Policy {
        Policy {
            max_attempts,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        }
    }

    fn seqs(batches: &[Vec<RoutedMessage>]) -> Vec<Vec<u64>> {
        batches
            .iter()
            .map(|b| b.iter().map(|m| m.seq).collect())
            .collect()
    }

    #[test]
    fn never_two_messages_of_one_topic_in_flight() {
        let now = Instant::now();
        let loaded = vec![msg(1, "a"), msg(2, "a"), msg(3, "b"), msg(4, "c")];
        let mut q = RouteQueue::new(0, loaded, now);
        assert_eq!(seqs(&q.take_batches(1, 8, now)), [[1], [3], [4]]);
        // 2 waits for 1, the only one left
        assert!(q.take_batches(1, 8, now).is_empty());
        let done = q.complete(&[1], vec![Ok(())], &policy(3), now);
        assert_eq!(done.delivered.len(), 1);
        assert_eq!(seqs(&q.take_batches(1, 8, now)), [[2]]);
        assert_eq!(q.take_seq(), 5, "seqs continue after the backlog");
    }

    #[test]
    fn batches_fill_with_a_topics_consecutive_messages_and_respect_slots() {
        let now = Instant::now();
        let loaded = (1..=6)
            .map(|s| msg(s, ["a", "b", "c"][s as usize % 3]))
            .collect();
        let mut q = RouteQueue::new(0, loaded, now);
        assert_eq!(seqs(&q.take_batches(2, 1, now)), [[1, 2]]);
        // b (1, 4) and c (2, 5) are in flight; a's 3 and 6 go together
        assert_eq!(seqs(&q.take_batches(2, 5, now)), [[3, 6]]);
        assert!(q.take_batches(2, 5, now).is_empty());
    }

    #[test]
    fn one_topic_fills_a_batch_and_waits_for_it() {
        let now = Instant::now();
        let loaded = (1..=7).map(|s| msg(s, "a")).collect();
        let mut q = RouteQueue::new(0, loaded, now);
        // one call per topic at a time, however many slots
        assert_eq!(seqs(&q.take_batches(3, 4, now)), [[1, 2, 3]]);
        assert!(q.take_batches(3, 4, now).is_empty());
        q.complete(&[1, 2, 3], vec![Ok(()), Ok(()), Ok(())], &policy(3), now);
        assert_eq!(seqs(&q.take_batches(3, 4, now)), [[4, 5, 6]]);
    }

    #[test]
    fn a_topic_that_does_not_fit_is_not_overtaken_by_its_own_later_messages() {
        let now = Instant::now();
        let loaded = vec![
            msg(1, "a"),
            msg(2, "b"),
            msg(3, "b"),
            msg(4, "c"),
            msg(5, "b"),
        ];
        let mut q = RouteQueue::new(0, loaded, now);
        // batch 0: a1 b2 (full), b3 cannot join it: b blocked; c4 has no slot
        assert_eq!(seqs(&q.take_batches(2, 1, now)), [[1, 2]]);
        q.complete(&[1, 2], vec![Ok(()), Ok(())], &policy(3), now);
        // b3 starts a batch, c4 joins it, b5 cannot: b's batch is full
        assert_eq!(seqs(&q.take_batches(2, 2, now)), [[3, 4]]);
        assert!(q.take_batches(2, 2, now).is_empty(), "b and c in flight");
    }

    #[test]
    fn a_retry_backs_the_route_off_and_dead_letters_after_max_attempts() {
        let now = Instant::now();
        let mut q = RouteQueue::new(0, vec![msg(1, "a"), msg(2, "b")], now);
        let p = policy(2);
        q.take_batches(1, 1, now);
        let done = q.complete(
            &[1],
            vec![Err(DeliveryError::Retry("down".into()))],
            &p,
            now,
        );
        assert_eq!((done.retried, done.dead.len()), (1, 0));
        assert!(q.take_batches(1, 8, now).is_empty(), "backing off");
        let later = now + Duration::from_millis(100);
        assert_eq!(seqs(&q.take_batches(1, 1, later)), [[1]], "order kept");
        let done = q.complete(
            &[1],
            vec![Err(DeliveryError::Retry("down".into()))],
            &p,
            later,
        );
        assert_eq!(done.dead.len(), 1);
        assert_eq!(done.dead[0].1, "after 2 attempts: down");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_rejection_is_dead_at_once_and_a_missing_outcome_is_retried() {
        let now = Instant::now();
        let mut q = RouteQueue::new(0, vec![msg(1, "a"), msg(2, "b")], now);
        q.take_batches(2, 1, now);
        let done = q.complete(
            &[1, 2],
            vec![Err(DeliveryError::Reject("HTTP 400".into()))],
            &policy(5),
            now,
        );
        assert_eq!(done.dead[0].1, "HTTP 400");
        assert_eq!(done.retried, 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = policy(10);
        for (attempts, full) in [(1, 100), (2, 200), (4, 800), (5, 1000), (40, 1000)] {
            let d = p.backoff(attempts).as_millis() as u64;
            assert!(d >= full / 2 && d <= full, "{attempts}: {d}");
        }
    }
}
