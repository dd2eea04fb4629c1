//! A bounded pool of threads for attribution work, which is CPU-heavy
//! (hundreds of microseconds per row) and must never run on the async
//! runtime's threads.

use std::thread;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

/// Work receives the index of the thread that runs it.
type Work = Box<dyn FnOnce(usize) + Send>;

pub struct ExplainPool {
    tx: Sender<Work>,
    queue: usize,
    threads: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    #[error("the explanation queue is full ({0} waiting); retry with backoff")]
    Overloaded(usize),
    #[error("the explanation pool has shut down")]
    ShutDown,
}

impl ExplainPool {
    pub fn new(threads: usize, queue: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Work>(queue.max(1));
        let threads = threads.max(1);
        for i in 0..threads {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("candor-explain-{i}"))
                .spawn(move || {
                    while let Ok(work) = rx.recv() {
                        work(i);
                    }
                })
                .expect("the OS refused to start an explanation thread");
        }
        Self { tx, queue, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread, giving it the thread's index, and returns
    /// its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(usize) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |thread| {
            let _ = reply.send(f(thread));
        });
        self.tx.try_send(work).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Overloaded(self.queue),
            TrySendError::Disconnected(_) => PoolError::ShutDown,
        })?;
        answer.await.map_err(|_| PoolError::ShutDown)
    }
}
