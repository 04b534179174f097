//! A group's dead-letter transaction: dead-lettered events inserted, replayed
//! and purged letters removed, all in one durable transaction.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::super::dead::{DbFail, DeadOp};
use super::super::{Op, SpoolError};
use super::{fatal, Writer};

impl Writer {
    /// Dead letters: one durable transaction, before the events are acked.
    /// Fills in the results of the jobs it answers; returns the jobs whose
    /// part was applied.
    pub(super) fn apply_dead(
        &self,
        ops: &[Op],
        replayed: &HashMap<usize, Vec<u64>>,
        results: &mut [Option<Result<u64, SpoolError>>],
    ) -> HashSet<usize> {
        let mut dead_jobs: Vec<usize> = Vec::new();
        let mut dead_ops: Vec<DeadOp<'_>> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Dead(_, letters) if !letters.is_empty() => {
                    dead_ops.push(DeadOp::Insert(letters.iter().map(|(_, l)| l).collect()));
                    dead_jobs.push(i);
                }
                Op::Dead(..) => results[i] = Some(Ok(0)),
                Op::Replay(_) => {
                    if let Some(ids) = replayed.get(&i) {
                        dead_ops.push(DeadOp::Remove(ids));
                        dead_jobs.push(i);
                    }
                }
                Op::Purge(ids) => {
                    dead_ops.push(DeadOp::Remove(ids));
                    dead_jobs.push(i);
                }
                Op::Append(_) | Op::Ack(..) | Op::Retry(..) => {}
            }
        }
        let mut dead_ok: HashSet<usize> = HashSet::new();
        if !dead_ops.is_empty() {
            match self.inner.dead.apply(&dead_ops, self.inner.limits.max_dead_letters) {
                Ok(applied) => {
                    for (k, &i) in dead_jobs.iter().enumerate() {
                        match &ops[i] {
                            Op::Replay(_) => {}
                            _ => results[i] = Some(Ok(applied.counts[k])),
                        }
                        dead_ok.insert(i);
                    }
                    if applied.dropped > 0 {
                        self.inner.dead_dropped.fetch_add(applied.dropped, Ordering::Relaxed);
                        metrics::counter!(crate::telemetry::DEAD_LETTERS_DROPPED).increment(applied.dropped);
                    }
                }
                Err(DbFail::Full(m)) => {
                    tracing::warn!(error = %m, "spool: disk full writing dead letters");
                    for &i in &dead_jobs {
                        results[i] = Some(Err(SpoolError::Full(m.clone())));
                    }
                }
                Err(DbFail::Fatal(m)) => fatal(&m),
            }
        }
        dead_ok
    }
}
