//! A bounded pool of threads for attribution work, which is CPU-heavy
//! (hundreds of microseconds per row) and must never run on the async
//! runtime's threads.
//!
//! A thread that takes a job also takes whatever else is already queued, up
//! to [`GATHER_ROWS`] rows, and runs the jobs that can share a walk as one:
//! path-dependent TreeSHAP over a block of rows costs far less per row than
//! one row at a time, so concurrent single-row calls help each other. It
//! never waits for more work to arrive, so a lone call is not delayed.

use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// The most rows a thread gathers from the queue into one run: the largest
/// block the TreeSHAP kernel walks at once.
pub const GATHER_ROWS: usize = 16;

/// Work for the pool.
pub trait Job: Send + 'static {
    /// Jobs with equal keys can run together; `None` runs alone.
    type Key: PartialEq;

    fn key(&self) -> Option<Self::Key>;

    /// How many rows the job explains.
    fn rows(&self) -> usize;

    /// Runs jobs that share a key (or one job) on pool thread `thread`, and
    /// answers each of them.
    fn run(jobs: Vec<Self>, thread: usize)
    where
        Self: Sized;
}

/// The CPU priority of a pool's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    /// `SCHED_IDLE` on Linux: the threads run on the CPU time everything
    /// else leaves, for work nobody waits for.
    Lowest,
}

pub struct ExplainPool<J> {
    tx: Sender<J>,
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

impl<J: Job> ExplainPool<J> {
    /// Starts `threads` threads named `name-<i>`, with room for `queue`
    /// waiting jobs.
    pub fn new(name: &str, threads: usize, queue: usize, priority: Priority) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<J>(queue.max(1));
        let threads = threads.max(1);
        for i in 0..threads {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if priority == Priority::Lowest {
                        lower_priority();
                    }
                    while let Ok(first) = rx.recv() {
                        for jobs in gather(first, &rx) {
                            J::run(jobs, i);
                        }
                    }
                })
                .expect("the OS refused to start an explanation thread");
        }
        Self { tx, queue, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `job`; it answers through its own channel.
    pub fn submit(&self, job: J) -> Result<(), PoolError> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Overloaded(self.queue),
            TrySendError::Disconnected(_) => PoolError::ShutDown,
        })
    }
}

/// Moves the calling thread to `SCHED_IDLE`: it runs only on CPU time no
/// other thread wants, and a thread that wakes takes the CPU from it at
/// once. Linux schedules threads one by one, so the rest of the process is
/// not affected. (A nice value of 19 still let it take a share: the
/// serving threads sleep and wake too often for weights to hold it back.)
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: reads `param` only; pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot move a background explanation thread to SCHED_IDLE"
            );
        }
    }
}

/// `first` and the jobs queued behind it, up to [`GATHER_ROWS`] rows, in
/// runs of jobs that share a key, in the order they came.
fn gather<J: Job>(first: J, rx: &Receiver<J>) -> Vec<Vec<J>> {
    let mut rows = first.rows();
    let mut runs: Vec<Vec<J>> = vec![vec![first]];
    while rows < GATHER_ROWS {
        let Ok(job) = rx.try_recv() else { break };
        rows += job.rows();
        let key = job.key();
        let run = key.as_ref().and_then(|key| {
            runs.iter_mut()
                .find(|run| run[0].key().as_ref() == Some(key))
        });
        match run {
            Some(run) => run.push(job),
            None => runs.push(vec![job]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A job that reports which jobs it ran with.
    struct Tagged {
        id: usize,
        key: Option<u8>,
        rows: usize,
        ran: mpsc::Sender<Vec<usize>>,
    }

    impl Job for Tagged {
        type Key = u8;

        fn key(&self) -> Option<u8> {
            self.key
        }

        fn rows(&self) -> usize {
            self.rows
        }

        fn run(jobs: Vec<Self>, _thread: usize) {
            let ids = jobs.iter().map(|j| j.id).collect();
            jobs[0].ran.send(ids).unwrap();
        }
    }

    #[test]
    fn queued_jobs_run_together_by_key_and_in_order() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ran, _) = mpsc::channel();
        let job = |id, key, rows| Tagged {
            id,
            key,
            rows,
            ran: ran.clone(),
        };
        for j in [
            job(1, Some(7), 1),
            job(2, None, 1),
            job(3, Some(7), 1),
            job(4, Some(8), 1),
            job(5, None, 1),
            job(6, Some(8), 1),
        ] {
            tx.send(j).unwrap();
        }
        let first = rx.recv().unwrap();
        let ids: Vec<Vec<usize>> = gather(first, &rx)
            .iter()
            .map(|run| run.iter().map(|j| j.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 3], vec![2], vec![4, 6], vec![5]]);
    }

    #[test]
    fn a_thread_gathers_no_more_than_its_rows_allow() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ran, _) = mpsc::channel();
        for id in 0..10 {
            tx.send(Tagged {
                id,
                key: Some(1),
                rows: 5,
                ran: ran.clone(),
            })
            .unwrap();
        }
        let first = rx.recv().unwrap();
        let runs = gather(first, &rx);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].len(), GATHER_ROWS.div_ceil(5));
        assert_eq!(rx.len(), 10 - GATHER_ROWS.div_ceil(5));
    }

    /// Reports the scheduling policy of the thread that runs it.
    #[cfg(target_os = "linux")]
    struct Policy(mpsc::Sender<i32>);

    #[cfg(target_os = "linux")]
    impl Job for Policy {
        type Key = ();

        fn key(&self) -> Option<()> {
            None
        }

        fn rows(&self) -> usize {
            1
        }

        fn run(jobs: Vec<Self>, _thread: usize) {
            // SAFETY: no arguments but the calling thread's pid 0.
            let policy = unsafe { libc::sched_getscheduler(0) };
            for job in jobs {
                job.0.send(policy).unwrap();
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_the_lowest_priority_and_others_do_not() {
        for (priority, want) in [
            (Priority::Lowest, libc::SCHED_IDLE),
            (Priority::Normal, libc::SCHED_OTHER),
        ] {
            let pool = ExplainPool::new("test-policy", 1, 4, priority);
            let (tx, rx) = mpsc::channel();
            pool.submit(Policy(tx)).unwrap();
            let policy = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            assert_eq!(policy, want, "{priority:?}");
        }
    }

    #[test]
    fn every_job_submitted_is_run() {
        let (ran, done) = mpsc::channel();
        let pool = ExplainPool::new("test-pool", 2, 64, Priority::Lowest);
        for id in 0..40 {
            pool.submit(Tagged {
                id,
                key: Some((id % 3) as u8),
                rows: 1,
                ran: ran.clone(),
            })
            .unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let run = done.recv_timeout(std::time::Duration::from_secs(10));
            seen.extend(run.expect("every job runs"));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }
}
