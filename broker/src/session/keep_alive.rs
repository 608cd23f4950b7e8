//! Keep Alive: a connection that sends nothing for one and a half times its
//! Keep Alive is closed (3.1.1 [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]).
//!
//! One sweep per worker thread watches every connection of that thread,
//! instead of a timer per connection: a timer costs each connection a boxed
//! actor future and a tokio timer entry (about 110 B of RSS, measured with
//! `tern-bench connections --keep-alive 60`) and wakes it every quarter
//! interval. Here a connection is a 32-byte [`Entry`] in its thread's
//! [`Table`]; its session stamps `SessionHandle::last_packet_ms` at every
//! packet, and the sweep, every quarter of the shortest limit (at least
//! 100 ms, at most a second), sends [`KeepAliveExpired`] to the sessions
//! whose stamp is older than their limit. A connection is closed between
//! 1.5 and 1.5 times its Keep Alive plus one sweep period after its last
//! packet.
//!
//! The same sweep asks sessions to hibernate (`hibernate.rs`): a session
//! not asleep whose connection has sent nothing for
//! `mqtt.hibernate_after_secs` gets [`Input::Hibernate`], at most once per
//! that interval; the session decides (it may be busy sending). While
//! hibernation is on, connections without a Keep Alive are watched too,
//! with no limit, for that.
//!
//! Lifecycle: `watch` when a connection with a Keep Alive is attached (the
//! thread's sweep task starts with its first entry); the returned
//! [`Watch`] lives in the `Connection` and takes the entry out when the
//! connection is dropped; an entry that fired is taken out by the sweep.
//! Sessions never leave the worker thread they started on, so the entry
//! is always removed on the thread whose table holds it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::SessionRef;
use crate::handle::{Input, KeepAliveExpired};

/// Milliseconds since the first call in this process: the clock of
/// `SessionHandle::last_packet_ms` (monotonic, unlike `unix_ms`).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

thread_local! {
    /// `monotonic_ms` as of this thread's last sweep (or watch): a clock
    /// for the hot path, where reading the real one per write would cost
    /// more than the second it may lag.
    static COARSE_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `monotonic_ms` as of this worker's last keep-alive sweep (at most a
/// second old while the thread watches connections).
pub fn coarse_ms() -> u64 {
    COARSE_MS.with(|c| c.get())
}

/// What the sweep watches of a connection.
pub trait Watched: Clone {
    /// When the connection's last packet arrived (`monotonic_ms`).
    fn last_packet_ms(&self) -> &AtomicU64;
    /// The session hibernates.
    fn asleep(&self) -> bool;
}

impl Watched for SessionRef {
    fn last_packet_ms(&self) -> &AtomicU64 {
        &self.0.last_packet_ms
    }
    fn asleep(&self) -> bool {
        self.0.asleep.load(Ordering::Relaxed)
    }
}

/// `Entry::limit_ms` of a connection without a Keep Alive (watched only
/// to hibernate it).
pub const NO_LIMIT: u32 = u32::MAX;

/// One watched connection.
#[derive(Debug)]
pub struct Entry<T> {
    pub target: T,
    /// The session's connection generation, for `KeepAliveExpired`.
    pub generation: u64,
    /// 1.5 times the Keep Alive, in ms ([`NO_LIMIT`]: none).
    pub limit_ms: u32,
    /// The sweep asks the session to hibernate no earlier than this
    /// (`monotonic_ms` in seconds).
    next_ask_s: u32,
    /// Unique in its table: a slot reused by another connection is not
    /// taken out by the first one's late removal.
    ticket: u64,
}

impl<T> Entry<T> {
    pub fn new(target: T, generation: u64, limit_ms: u32) -> Entry<T> {
        Entry {
            target,
            generation,
            limit_ms,
            next_ask_s: 0,
            ticket: 0,
        }
    }
}

/// Where an entry is, to take it out: its slot and ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    index: u32,
    ticket: u64,
}

/// The connections of one thread with a Keep Alive: a slab, so that a
/// connection takes its entry out by index.
#[derive(Debug)]
pub struct Table<T> {
    entries: Vec<Option<Entry<T>>>,
    free: Vec<u32>,
    /// Shortest limit ever watched: the sweep runs four times within it.
    shortest_ms: u32,
    next_ticket: u64,
    /// `mqtt.hibernate_after_secs` in ms; 0: never ask.
    pub hibernate_after_ms: u64,
}

impl<T> Default for Table<T> {
    fn default() -> Table<T> {
        Table {
            entries: Vec::new(),
            free: Vec::new(),
            shortest_ms: u32::MAX,
            next_ticket: 1,
            hibernate_after_ms: 0,
        }
    }
}

impl<T: Watched> Table<T> {
    /// Watches a connection; returns where its entry is.
    pub fn insert(&mut self, mut entry: Entry<T>) -> Slot {
        self.shortest_ms = self.shortest_ms.min(entry.limit_ms);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        entry.ticket = ticket;
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = Some(entry);
                index
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        Slot { index, ticket }
    }

    /// Stops watching the entry at `slot`, unless the sweep took it out
    /// already (the slot may hold another connection's entry by now).
    pub fn remove(&mut self, slot: Slot) {
        let i = slot.index as usize;
        if self.entries[i]
            .as_ref()
            .is_some_and(|e| e.ticket == slot.ticket)
        {
            self.entries[i] = None;
            self.free.push(slot.index);
        }
    }

    /// Takes out and returns, as (target, generation), the connections
    /// silent for longer than their limit at `now_ms`; returns in `idle`
    /// the sessions to ask to hibernate.
    pub fn sweep(&mut self, now_ms: u64, expired: &mut Vec<(T, u64)>, idle: &mut Vec<T>) {
        let now_s = (now_ms / 1000) as u32;
        let after = self.hibernate_after_ms;
        for (slot, cell) in self.entries.iter_mut().enumerate() {
            let Some(e) = cell.as_mut() else {
                continue;
            };
            let silent = now_ms.saturating_sub(e.target.last_packet_ms().load(Ordering::Relaxed));
            if e.limit_ms != NO_LIMIT && silent > u64::from(e.limit_ms) {
                let e = cell.take().expect("matched above");
                self.free.push(slot as u32);
                expired.push((e.target, e.generation));
            } else if after > 0 && silent >= after && now_s >= e.next_ask_s && !e.target.asleep() {
                e.next_ask_s = now_s.saturating_add((after / 1000).max(1) as u32);
                idle.push(e.target.clone());
            }
        }
    }

    /// Connections watched.
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long the sweep sleeps between visits.
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from(self.shortest_ms / 4).clamp(100, 1000))
    }
}

/// This thread's table, and whether its sweep task runs.
#[derive(Default)]
struct Local {
    table: Table<SessionRef>,
    sweeping: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// A connection's entry in its thread's table; dropping it stops the watch.
#[derive(Debug)]
pub struct Watch(Slot);

impl Drop for Watch {
    fn drop(&mut self) {
        // `try_with`: at thread exit the table may be gone already.
        let _ = LOCAL.try_with(|l| l.borrow_mut().table.remove(self.0));
    }
}

/// Watches connection `generation` of `session` with a Keep Alive of
/// `keep_alive` seconds (0: none, watched to hibernate only), asking it to
/// hibernate after `hibernate_after_secs` of silence (0: never), from now.
/// Must run on the session's worker thread, inside its actix runtime.
pub fn watch(
    session: &SessionRef,
    generation: u64,
    keep_alive: u16,
    hibernate_after_secs: u32,
) -> Watch {
    let now = monotonic_ms();
    COARSE_MS.with(|c| c.set(now));
    session.0.last_packet_ms.store(now, Ordering::Relaxed);
    let limit_ms = match keep_alive {
        0 => NO_LIMIT,
        k => u32::from(k) * 1500,
    };
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.table.hibernate_after_ms = u64::from(hibernate_after_secs) * 1000;
        let slot = l
            .table
            .insert(Entry::new(session.clone(), generation, limit_ms));
        if !l.sweeping {
            l.sweeping = true;
            actix_rt::spawn(sweep_while_watched());
        }
        Watch(slot)
    })
}

/// The thread's sweep: ends when its table is empty, so that an idle
/// thread has no timer (the next `watch` starts it again).
async fn sweep_while_watched() {
    let mut expired = Vec::new();
    let mut idle = Vec::new();
    loop {
        let period = LOCAL.with(|l| l.borrow().table.period());
        actix_rt::time::sleep(period).await;
        let now = monotonic_ms();
        COARSE_MS.with(|c| c.set(now));
        let done = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            l.table.sweep(now, &mut expired, &mut idle);
            l.sweeping = !l.table.is_empty();
            !l.sweeping
        });
        // Sent outside the borrow: a send never re-enters the table, but
        // keep the borrow short anyway.
        for (session, generation) in expired.drain(..) {
            session.send(KeepAliveExpired { generation });
        }
        for session in idle.drain(..) {
            session.send(Input::Hibernate);
        }
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Conn(AtomicU64, std::cell::Cell<bool>);
    impl Watched for std::rc::Rc<Conn> {
        fn last_packet_ms(&self) -> &AtomicU64 {
            &self.0
        }
        fn asleep(&self) -> bool {
            self.1.get()
        }
    }

    fn conn(last: u64) -> std::rc::Rc<Conn> {
        std::rc::Rc::new(Conn(AtomicU64::new(last), std::cell::Cell::new(false)))
    }

    fn expired(table: &mut Table<std::rc::Rc<Conn>>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        table.sweep(now, &mut out, &mut Vec::new());
        out.into_iter().map(|(_, generation)| generation).collect()
    }

    /// The last packet stamps of the sessions asked to hibernate at `now`.
    fn asked(table: &mut Table<std::rc::Rc<Conn>>, now: u64) -> Vec<u64> {
        let mut idle = Vec::new();
        table.sweep(now, &mut Vec::new(), &mut idle);
        idle.iter().map(|c| c.0.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn an_idle_session_is_asked_to_hibernate_once_per_interval_unless_asleep() {
        let mut table = Table {
            hibernate_after_ms: 10_000,
            ..Table::default()
        };
        let c = conn(1_000);
        table.insert(Entry::new(c.clone(), 1, 90_000));
        assert!(asked(&mut table, 10_999).is_empty(), "silent 9.999 s");
        assert_eq!(asked(&mut table, 11_000), vec![1_000]);
        assert!(asked(&mut table, 12_000).is_empty(), "asked 1 s ago");
        assert_eq!(asked(&mut table, 21_000), vec![1_000], "asked again");
        c.1.set(true);
        assert!(asked(&mut table, 40_000).is_empty(), "asleep");
        c.1.set(false);
        c.0.store(39_000, Ordering::Relaxed);
        assert!(asked(&mut table, 40_000).is_empty(), "a packet 1 s ago");
        assert_eq!(table.len(), 1, "asking takes nothing out");
    }

    #[test]
    fn a_connection_without_keep_alive_never_expires_and_hibernation_off_never_asks() {
        let mut table = Table::default();
        let c = conn(0);
        table.insert(Entry::new(c, 1, NO_LIMIT));
        assert!(expired(&mut table, u64::from(u32::MAX) * 4).is_empty());
        assert!(asked(&mut table, u64::from(u32::MAX) * 4).is_empty());
    }

    #[test]
    fn a_connection_silent_past_its_limit_expires_once() {
        let mut table = Table::default();
        let c = conn(1000);
        table.insert(Entry::new(c.clone(), 7, 1500));
        assert!(expired(&mut table, 2500).is_empty(), "exactly at the limit");
        assert_eq!(expired(&mut table, 2501), vec![7]);
        assert!(
            expired(&mut table, 9000).is_empty(),
            "taken out when it fired"
        );
        assert!(table.is_empty());
    }

    #[test]
    fn a_packet_moves_the_deadline() {
        let mut table = Table::default();
        let c = conn(0);
        table.insert(Entry::new(c.clone(), 1, 1500));
        c.0.store(1400, Ordering::Relaxed);
        assert!(expired(&mut table, 2000).is_empty());
        assert_eq!(expired(&mut table, 2901), vec![1]);
    }

    #[test]
    fn removal_frees_the_slot_and_ignores_a_reused_one() {
        let mut table = Table::default();
        let a = table.insert(Entry::new(conn(0), 1, 1500));
        table.remove(a);
        assert!(table.is_empty());
        // The slot goes to the next connection; a late removal of the old
        // generation leaves it alone.
        let b = table.insert(Entry::new(conn(0), 2, 3000));
        assert_eq!(a.index, b.index);
        table.remove(a);
        assert_eq!(table.len(), 1);
        assert_eq!(expired(&mut table, 3001), vec![2]);
    }

    #[test]
    fn the_period_is_a_quarter_of_the_shortest_limit_within_bounds() {
        let mut table: Table<std::rc::Rc<Conn>> = Table::default();
        assert_eq!(table.period(), Duration::from_secs(1));
        table.insert(Entry::new(conn(0), 1, 90_000));
        assert_eq!(table.period(), Duration::from_secs(1));
        table.insert(Entry::new(conn(0), 2, 1500));
        assert_eq!(table.period(), Duration::from_millis(375));
        table.insert(Entry::new(conn(0), 3, 1));
        assert_eq!(table.period(), Duration::from_millis(100));
    }
}
