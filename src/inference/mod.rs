//! Model execution, kept off the async runtime.
//!
//! ONNX Runtime's `Session::run` takes `&mut self` and blocks the calling
//! thread, so inference runs on a small pool of dedicated OS threads. Each
//! worker owns slot `i` of every model's session pool, which makes session
//! checkout uncontended. A worker that wakes up drains whatever other requests
//! are already queued for the same model and runs them as one batch: under load
//! this amortises ORT's per-call overhead without ever waiting for a batch to
//! fill.

mod ort_backend;
pub mod runtime;

use std::{sync::Arc, thread};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

pub use ort_backend::OrtBackend;

/// Something that turns a batch of input rows into one score per row.
pub trait Backend: Send + Sync + 'static {
    /// Number of input columns per row.
    fn width(&self) -> usize;

    /// Scores `rows` (row-major, `rows.len() / width()` rows) with the session
    /// in `slot`. Slots let callers on different threads run concurrently.
    fn predict(&self, slot: usize, rows: &[f32]) -> Result<Vec<f32>, InferenceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "the inference queue is full ({0} requests waiting, inference_queue); retry with backoff"
    )]
    Overloaded(usize),
    #[error("the inference pool has shut down")]
    ShutDown,
    #[error("ONNX Runtime failed: {0}")]
    Runtime(String),
    #[error("the model returned {got} values for {rows} rows")]
    OutputShape { rows: usize, got: usize },
    #[error(
        "rows[{row}]: the model's score for these values is {value}, not a finite number, so no decision is made from them; a feature whose manifest declares no range may be far outside what the model was trained on"
    )]
    NonFinite { row: usize, value: f32 },
}

impl From<ort::Error> for InferenceError {
    fn from(e: ort::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

struct Job {
    backend: Arc<dyn Backend>,
    rows: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>, InferenceError>>,
}

/// A fixed set of inference threads fed by a bounded queue.
pub struct InferencePool {
    tx: Sender<Job>,
    workers: usize,
    queue: usize,
}

impl InferencePool {
    /// Starts `workers` threads. At most `queue` requests may wait; beyond
    /// that, requests are shed instead of queued without bound.
    pub fn new(workers: usize, queue: usize, max_batch_rows: usize) -> Self {
        let workers = workers.max(1);
        let (tx, rx) = crossbeam_channel::bounded(queue.max(1));
        for slot in 0..workers {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("candor-infer-{slot}"))
                .spawn(move || worker(slot, rx, max_batch_rows.max(1)))
                .expect("the OS refused to start an inference thread");
        }
        Self { tx, workers, queue }
    }

    /// How many session slots each model needs: one per worker.
    pub fn slots(&self) -> usize {
        self.workers
    }

    /// Runs `rows` through `backend` on a worker thread.
    pub async fn predict(
        &self,
        backend: Arc<dyn Backend>,
        rows: Vec<f32>,
    ) -> Result<Vec<f32>, InferenceError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job {
                backend,
                rows,
                reply,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => InferenceError::Overloaded(self.queue),
                TrySendError::Disconnected(_) => InferenceError::ShutDown,
            })?;
        finite(answer.await.map_err(|_| InferenceError::ShutDown)??)
    }
}

/// The scores, unless one is NaN or infinite: the model failing on that
/// input (a log of a negative sum, an overflow). Serving it would make a
/// decision no one can account for.
pub(crate) fn finite(scores: Vec<f32>) -> Result<Vec<f32>, InferenceError> {
    match scores.iter().position(|s| !s.is_finite()) {
        Some(row) => Err(InferenceError::NonFinite {
            row,
            value: scores[row],
        }),
        None => Ok(scores),
    }
}

fn worker(slot: usize, rx: Receiver<Job>, max_batch_rows: usize) {
    let mut pending: Vec<Job> = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        let mut queued_rows = pending[0].rows.len() / pending[0].backend.width().max(1);
        while queued_rows < max_batch_rows {
            let Ok(job) = rx.try_recv() else { break };
            queued_rows += job.rows.len() / job.backend.width().max(1);
            pending.push(job);
        }
        while !pending.is_empty() {
            // Take every pending job for the first job's model, keeping order.
            let backend = pending[0].backend.clone();
            let (same, rest): (Vec<Job>, Vec<Job>) = pending
                .drain(..)
                .partition(|job| Arc::ptr_eq(&job.backend, &backend));
            pending = rest;
            run_group(slot, backend.as_ref(), same);
        }
    }
}

fn run_group(slot: usize, backend: &dyn Backend, jobs: Vec<Job>) {
    if let [_] = jobs.as_slice() {
        let job = jobs.into_iter().next().expect("one job");
        let _ = job.reply.send(backend.predict(slot, &job.rows));
        return;
    }
    let width = backend.width().max(1);
    let inputs: Vec<f32> = jobs.iter().flat_map(|j| j.rows.iter().copied()).collect();
    match backend.predict(slot, &inputs) {
        Ok(scores) => {
            let mut offset = 0;
            for job in jobs {
                let n = job.rows.len() / width;
                let _ = job.reply.send(Ok(scores[offset..offset + n].to_vec()));
                offset += n;
            }
        }
        // One bad job must not fail its neighbours: retry each on its own.
        Err(_) => {
            for job in jobs {
                let _ = job.reply.send(backend.predict(slot, &job.rows));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_that_is_not_a_number_is_no_decision() {
        assert_eq!(finite(vec![0.2, 0.9]).unwrap(), [0.2, 0.9]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = finite(vec![0.2, 0.3, bad]).unwrap_err();
            assert!(matches!(e, InferenceError::NonFinite { row: 2, .. }), "{e}");
            assert!(e.to_string().starts_with("rows[2]: "), "{e}");
        }
    }
}
