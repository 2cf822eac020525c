//! The engine thread: the one owner of the journaled engine. Requests arrive over a channel;
//! the thread drains whatever is queued, journals all queued commands as one group commit (one
//! write, one fdatasync) and applies them; a second thread then renders the group's events for
//! the ring and replies, while the engine thread goes on with the next group. A small group
//! (at most [`INLINE_REPLY_MAX`] commands) is answered by the engine thread itself when the
//! reply thread has no group in hand, which saves a lone request one thread hand-off. Nobody
//! hears back before their commands are durable and their events are in the ring, and the ring
//! receives the groups in order. Reads run on the engine thread between group commits, so they
//! always see a state whose commands are durable.

use crate::events::EventLog;
use crate::metrics::Metrics;
use ballast_engine::{parse_line, Engine, Event, ParseError, TimedCommand};
use ballast_journal::{JournalError, JournaledEngine, Outcome, Submitted};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Most commands in one group commit (requests are never split; a group stops growing once it
/// holds this many).
pub const MAX_GROUP: usize = 100_000;

/// A durable group of at most this many commands is answered by the engine thread itself when
/// the reply thread has no group in hand (one thread hand-off fewer for a lone request; the
/// events of a few commands render in microseconds). Larger groups go to the reply thread.
pub const INLINE_REPLY_MAX: usize = 16;

/// What the engine thread drives: the journaled engine, or a wrapper of it in tests (to inject
/// a failing fdatasync).
pub trait Backend: Send + 'static {
    /// Journal `lines` durably (one group commit), then apply `cmds` (`cmds[i]` is the decoded
    /// `lines[i]`).
    fn submit_batch(&mut self, lines: &[&str], cmds: Vec<TimedCommand>) -> Result<Submitted, JournalError>;
    fn engine(&self) -> &Engine;
    /// The last journaled sequence number.
    fn last_seq(&self) -> u64;
}

impl Backend for JournaledEngine {
    fn submit_batch(&mut self, lines: &[&str], cmds: Vec<TimedCommand>) -> Result<Submitted, JournalError> {
        JournaledEngine::submit_decoded(self, lines, cmds.into_iter().map(Ok).collect())
    }
    fn engine(&self) -> &Engine {
        JournaledEngine::engine(self)
    }
    fn last_seq(&self) -> u64 {
        JournaledEngine::last_seq(self)
    }
}

/// The durable result of one command.
#[derive(Debug, Clone, Serialize)]
pub struct CommandResult {
    /// The journal sequence number (rejected commands are journaled too).
    pub seq: u64,
    pub cmd: String,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The journal write or fdatasync failed: nothing of the group is acknowledged.
    #[error("not durable: {0}")]
    Journal(String),
    /// A line that does not decode reached the engine thread (the routes check first).
    #[error("command {index}: {reason}")]
    Invalid { index: usize, reason: String },
    /// The engine thread is gone (the service is shutting down).
    #[error("the engine thread has stopped")]
    Stopped,
}

type ReadFn = Box<dyn FnOnce(&Engine, u64) + Send>;

/// A command line and its decoding (strict, as the journal's replay will decode it).
#[derive(Debug, Clone)]
pub struct Prepared {
    line: String,
    command: TimedCommand,
}

impl Prepared {
    /// Decode `line`.
    pub fn new(line: String) -> Result<Prepared, ParseError> {
        let command = parse_line(&line)?;
        Ok(Prepared { line, command })
    }

    pub fn command(&self) -> &TimedCommand {
        &self.command
    }

    pub fn line(&self) -> &str {
        &self.line
    }
}

enum Job {
    Submit { lines: Vec<Prepared>, reply: Reply },
    Read(ReadFn),
}

/// Health of the journal, shared with `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    pub journal_ok: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub last_seq: AtomicU64,
}

/// A cheap, cloneable handle to the engine thread: the in-process API.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Job>,
    /// The engine thread, for [`EngineHandle::stop`].
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    pub events: Arc<EventLog>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl EngineHandle {
    /// Start the engine thread on `backend`.
    pub fn start<B: Backend>(backend: B, events: Arc<EventLog>, metrics: Arc<Metrics>) -> EngineHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(Health::default());
        health.journal_ok.store(true, Ordering::Relaxed);
        health.last_seq.store(backend.last_seq(), Ordering::Relaxed);
        let (done, finished) = std::sync::mpsc::channel::<Finish>();
        // Groups handed to the reply thread and not answered yet: a group may be answered on the
        // engine thread only when this is 0, so the ring still receives the groups in order.
        let handed = Arc::new(AtomicUsize::new(0));
        let (ring, counters, answered) = (events.clone(), metrics.clone(), handed.clone());
        std::thread::Builder::new()
            .name("ballast-replies".into())
            .spawn(move || {
                for f in finished {
                    f.reply(&ring, &counters);
                    answered.fetch_sub(1, Ordering::Release);
                }
            })
            .expect("cannot start the reply thread");
        let worker =
            Worker { backend, metrics: metrics.clone(), health: health.clone(), done, handed, events: events.clone() };
        let thread = std::thread::Builder::new()
            .name("ballast-engine".into())
            .spawn(move || worker.run(rx))
            .expect("cannot start the engine thread");
        EngineHandle { tx, thread: Arc::new(Mutex::new(Some(thread))), events, metrics, health }
    }

    /// Drop this handle and wait, up to `limit`, for the engine thread to exit: it does once
    /// every handle is gone, after its last group commit, dropping the journaled engine, which
    /// finishes a snapshot being written in the background. False if it did not exit in time
    /// (another handle is still alive, or the disk hangs).
    pub fn stop(self, limit: std::time::Duration) -> bool {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(self);
        let Some(thread) = thread else { return true };
        let deadline = Instant::now() + limit;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The engine thread panicked only on a broken invariant; it has already said so.
        let _ = thread.join();
        true
    }

    /// Journal and apply `lines` (command JSON lines, already decoded once by the caller);
    /// returns after the group they joined is durable.
    pub async fn submit(&self, lines: Vec<Prepared>) -> Result<Vec<CommandResult>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Submit { lines, reply }).map_err(|_| SubmitError::Stopped)?;
        rx.await.map_err(|_| SubmitError::Stopped)?
    }

    /// Run `f` on the engine thread with the engine and the last journaled seq.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, u64) -> R + Send + 'static,
    ) -> Result<R, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job: ReadFn = Box::new(move |engine, seq| {
            let _ = reply.send(f(engine, seq));
        });
        self.tx.send(Job::Read(job)).map_err(|_| SubmitError::Stopped)?;
        rx.await.map_err(|_| SubmitError::Stopped)
    }
}

type Reply = oneshot::Sender<Result<Vec<CommandResult>, SubmitError>>;

/// Sort a job into the group's submits or reads; returns the commands it adds.
fn push(job: Job, submits: &mut Vec<(Vec<Prepared>, Reply)>, reads: &mut Vec<ReadFn>) -> usize {
    match job {
        Job::Submit { lines, reply } => {
            let n = lines.len();
            submits.push((lines, reply));
            n
        }
        Job::Read(f) => {
            reads.push(f);
            0
        }
    }
}

struct Worker<B> {
    backend: B,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Durable groups go to the reply thread, which renders their events for the ring and the
    /// replies while this thread journals and applies the next group (small groups are
    /// answered here when the reply thread has none in hand: `INLINE_REPLY_MAX`).
    done: std::sync::mpsc::Sender<Finish>,
    /// Groups sent on `done` and not answered yet.
    handed: Arc<AtomicUsize>,
    /// The ring, for the groups answered here.
    events: Arc<EventLog>,
}

/// A durable, applied group on its way to its callers.
struct Finish {
    ts: u64,
    outcomes: Vec<Outcome>,
    submits: Vec<(Vec<(String, &'static str)>, Reply)>,
}

impl<B: Backend> Worker<B> {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut submits = Vec::new();
        let mut reads = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut queued = push(first, &mut submits, &mut reads);
            while queued < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => queued += push(job, &mut submits, &mut reads),
                    Err(_) => break,
                }
            }
            if !submits.is_empty() {
                self.commit(std::mem::take(&mut submits));
            }
            let seq = self.backend.last_seq();
            for f in reads.drain(..) {
                f(self.backend.engine(), seq);
            }
        }
    }

    fn commit(&mut self, submits: Vec<(Vec<Prepared>, Reply)>) {
        // Move the decoded commands out; keep the texts (and each command's name) for the
        // journal and the replies.
        let mut cmds = Vec::with_capacity(submits.iter().map(|(l, _)| l.len()).sum());
        let mut texts = Vec::with_capacity(submits.len());
        for (prepared, reply) in submits {
            let mut batch = Vec::with_capacity(prepared.len());
            for p in prepared {
                batch.push((p.line, p.command.cmd.name()));
                cmds.push(p.command);
            }
            texts.push((batch, reply));
        }
        let submits = texts;
        let lines: Vec<&str> = submits.iter().flat_map(|(l, _)| l.iter().map(|(line, _)| line.as_str())).collect();
        let start = Instant::now();
        let result = self.backend.submit_batch(&lines, cmds);
        let took = start.elapsed();
        let submitted = match result {
            Ok(s) => s,
            Err(e) => {
                let why = e.to_string();
                eprintln!("ballast serve: group commit of {} commands failed: {why}", lines.len());
                self.metrics.commit_failed();
                self.health.journal_ok.store(!matches!(e, JournalError::Poisoned(_)), Ordering::Relaxed);
                *self.health.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                for (lines, reply) in submits {
                    for (_, name) in &lines {
                        self.metrics.command(name, "failed");
                    }
                    let _ = reply.send(Err(SubmitError::Journal(why.clone())));
                }
                return;
            }
        };
        self.metrics.commit(took, lines.len());
        if let Some(seq) = submitted.snapshot {
            self.metrics.snapshot_written(seq);
        }
        if let Some(e) = &submitted.snapshot_error {
            self.metrics.snapshot_failed();
            eprintln!("ballast serve: warning: automatic snapshot failed (the commands are durable): {e}");
        }
        self.health.last_seq.store(self.backend.last_seq(), Ordering::Relaxed);
        let (ts, n) = (self.backend.engine().now(), lines.len());
        let finish = Finish { ts, outcomes: submitted.outcomes, submits };
        if n <= INLINE_REPLY_MAX && self.handed.load(Ordering::Acquire) == 0 {
            finish.reply(&self.events, &self.metrics);
        } else {
            self.handed.fetch_add(1, Ordering::Relaxed);
            // The reply thread is gone only if it panicked; the group is durable either way.
            let _ = self.done.send(finish);
        }
    }
}

impl Finish {
    /// Render the group's events for the ring, count them, and reply to each caller.
    fn reply(self, ring: &EventLog, metrics: &Metrics) {
        let Finish { ts, outcomes, submits } = self;
        let mut outcomes = outcomes.into_iter();
        let mut records = Vec::new();
        let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        let mut replies = Vec::with_capacity(submits.len());
        for (lines, reply) in submits {
            let mut results = Vec::with_capacity(lines.len());
            let mut invalid = None;
            for (i, (_, cmd)) in lines.iter().enumerate() {
                let cmd = *cmd;
                match outcomes.next() {
                    Some(Outcome::Accepted { seq, events }) => {
                        *counts.entry((cmd, "accepted")).or_default() += 1;
                        for e in &events {
                            let json = crate::events::record(seq, ts, cmd, e);
                            records.push((seq, json));
                        }
                        results.push(CommandResult {
                            seq,
                            cmd: cmd.to_string(),
                            accepted: true,
                            events: Some(events),
                            reason: None,
                        });
                    }
                    Some(Outcome::Rejected { seq, reason }) => {
                        *counts.entry((cmd, "rejected")).or_default() += 1;
                        let reason = reason.to_string();
                        records.push((seq, crate::events::rejection(seq, ts, cmd, &reason)));
                        results.push(CommandResult {
                            seq,
                            cmd: cmd.to_string(),
                            accepted: false,
                            events: None,
                            reason: Some(reason),
                        });
                    }
                    Some(Outcome::Invalid(e)) => {
                        invalid.get_or_insert(SubmitError::Invalid { index: i, reason: e.to_string() });
                    }
                    None => {
                        invalid.get_or_insert(SubmitError::Invalid { index: i, reason: "no outcome".into() });
                    }
                }
            }
            replies.push((reply, invalid.map_or(Ok(results), Err)));
        }
        // Counted by the records' own `event` names: the engine's event tags, a bounded set.
        let mut event_counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, json) in &records {
            match crate::events::name_of(json) {
                "rejected" => {}
                name => *event_counts.entry(name).or_default() += 1,
            }
        }
        metrics.add(&counts, &event_counts);
        // The events are in the ring before anyone hears back, so a client that reads the events
        // after its reply sees its own.
        ring.push(records);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }
}
