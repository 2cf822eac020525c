//! The event log the API serves: an in-memory ring of the most recent events (one JSON object
//! each, with the journal `seq` of the command that caused it) and a broadcast of new ones for
//! WebSocket subscribers. Events from before the service started are not in the ring: a client
//! that needs them reads the state with the REST queries and follows from the current seq.

use ballast_engine::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One event: its command's journal seq and the JSON object.
pub type Record = (u64, Arc<str>);

/// An event as the API shows it: `{"seq":..,"ts":..,"cmd":..,"event":..,...fields}`.
pub fn record(seq: u64, ts: u64, cmd: &str, event: &Event) -> Arc<str> {
    let json =
        serde_json::to_string(event).unwrap_or_else(|e| format!("{{\"event\":\"unserializable\",\"error\":\"{e}\"}}"));
    // Events serialize as objects with the `event` tag first: splice the envelope in front.
    let body = json.strip_prefix('{').unwrap_or("}");
    format!("{{\"seq\":{seq},\"ts\":{ts},\"cmd\":\"{cmd}\",{body}").into()
}

/// The `rejected` record of a command the engine refused (journaled, state unchanged).
pub fn rejection(seq: u64, ts: u64, cmd: &str, reason: &str) -> Arc<str> {
    let reason = serde_json::to_string(reason).unwrap_or_else(|_| "\"?\"".into());
    format!("{{\"seq\":{seq},\"ts\":{ts},\"cmd\":\"{cmd}\",\"event\":\"rejected\",\"reason\":{reason}}}").into()
}

/// The `event` name of a record made by [`record`] or [`rejection`].
pub fn name_of(record: &str) -> &str {
    record.split_once("\"event\":\"").and_then(|(_, rest)| rest.split_once('"')).map_or("other", |(name, _)| name)
}

#[derive(Debug)]
struct Ring {
    records: VecDeque<Record>,
    /// Every command with a seq below this has had its events dropped from the ring (or was
    /// journaled before the service started).
    complete_from: u64,
}

/// The ring and the broadcast.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<Record>,
}

/// Events from `from` on cannot be served from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// The oldest seq the ring can serve completely.
    pub oldest: u64,
}

impl EventLog {
    /// A log whose history starts after `last_seq` (the journal's on start).
    pub fn new(capacity: usize, last_seq: u64) -> EventLog {
        let (tx, _) = broadcast::channel(16_384);
        EventLog {
            ring: Mutex::new(Ring { records: VecDeque::new(), complete_from: last_seq + 1 }),
            capacity: capacity.max(1),
            tx,
        }
    }

    /// Append the records of one group commit and broadcast them.
    pub fn push(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            ring.records.push_back(r.clone());
            // No subscribers is not an error.
            let _ = self.tx.send(r);
        }
        while ring.records.len() > self.capacity {
            if let Some((seq, _)) = ring.records.pop_front() {
                ring.complete_from = ring.complete_from.max(seq + 1);
            }
        }
    }

    /// Up to `limit` records with seq ≥ `from`.
    pub fn since(&self, from: u64, limit: usize) -> Result<Vec<Record>, Gone> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        Self::since_locked(&ring, from, limit)
    }

    fn since_locked(ring: &Ring, from: u64, limit: usize) -> Result<Vec<Record>, Gone> {
        if from < ring.complete_from && from > 0 {
            // seq 0 means "whatever you have".
            return Err(Gone { oldest: ring.complete_from });
        }
        let start = ring.records.partition_point(|(seq, _)| *seq < from);
        Ok(ring.records.range(start..).take(limit).cloned().collect())
    }

    /// Subscribe to new records and read the backlog from `from` at the same instant, so
    /// nothing falls between the two.
    pub fn subscribe(&self, from: u64, limit: usize) -> Result<(Vec<Record>, broadcast::Receiver<Record>), Gone> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        Ok((Self::since_locked(&ring, from, limit)?, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_serves_what_it_holds_and_says_what_it_lost() {
        let log = EventLog::new(3, 10);
        log.push(vec![(11, "a".into()), (11, "b".into()), (12, "c".into())]);
        log.push(vec![(14, "d".into())]);
        assert_eq!(log.since(10, 10), Err(Gone { oldest: 12 }));
        let got: Vec<u64> = log.since(12, 10).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(got, [12, 14]);
        assert_eq!(log.since(13, 10).unwrap().len(), 1);
        assert_eq!(log.since(0, 10).unwrap().len(), 3);
    }

    #[test]
    fn names_come_from_the_record() {
        assert_eq!(name_of(&rejection(1, 2, "fill", "no \"margin\"")), "rejected");
        assert_eq!(name_of("{\"seq\":1,\"event\":\"liquidated\"}"), "liquidated");
    }
}
