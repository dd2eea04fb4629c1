//! A bounded pool of threads for attribution work, which is CPU-heavy
//! (hundreds of microseconds per row) and must never run on the async
//! runtime's threads.
//!
//! A thread that takes a job also takes whatever else is already queued, up
//! to [`GATHER_ROWS`] rows, and runs the jobs that can share a walk as one:
//! path-dependent TreeSHAP over a block of rows costs far less per row than
//! one row at a time, so concurrent single-row calls help each other. It
//! never waits for more work to arrive, so a lone call is not delayed.
//!
//! Background threads (work nobody waits for) run under `SCHED_IDLE` and,
//! while live work competes for their core, are also paced to a share of
//! their time: see [`Pacing`].

use std::{
    thread,
    time::{Duration, Instant},
};

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
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Priority {
    Normal,
    /// `SCHED_IDLE` on Linux: the threads run on the CPU time everything
    /// else leaves, for work nobody waits for, and are paced while live
    /// work competes for their core.
    Lowest(Pacing),
}

/// How a background thread yields to live work beyond what `SCHED_IDLE`
/// does.
///
/// `SCHED_IDLE` alone still let deferred attributions cost live Score
/// calls 14% of their throughput on a saturated gateway: the serving
/// threads sleep and wake thousands of times a second, and every gap a
/// background thread fills is paid for when they wake (a preemption, caches
/// left cold). So a thread that other work kept off its core for more than
/// three quarters of its last run (at capacity, live calls) rests
/// afterwards until its computing is `share` of the run and the rest
/// together. Where other work leaves it a quarter of the core or more, it
/// computes without pause: the gateway is not at capacity, and the backlog
/// is better kept short.
///
/// The gate cannot tell live calls from other processes on the machine,
/// or from CPU throttling: the thread yields to all of them alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    share: f64,
}

impl Pacing {
    /// `share` outside (0, 1] (or NaN) is clamped into it; 1 never rests.
    pub fn new(share: f64) -> Self {
        Self {
            share: if share > 0.0 {
                share.min(1.0)
            } else {
                f64::MIN_POSITIVE
            },
        }
    }
}

/// One background thread's pacing state: when its current run began (real
/// and CPU time), and the rest it still owes.
#[derive(Debug)]
struct Pacer {
    pacing: Pacing,
    began: Option<(Instant, Duration)>,
    owed: Duration,
}

/// The longest single rest: a resting thread does not see the load end, so
/// a longer rest is owed and taken after the next run, if that run is still
/// kept off its core.
const LONGEST_REST: Duration = Duration::from_secs(1);
/// The most rest a thread owes at once, whatever the share.
const MOST_OWED: Duration = Duration::from_secs(60);

impl Pacer {
    fn new(pacing: Pacing) -> Self {
        Self {
            pacing,
            began: None,
            owed: Duration::ZERO,
        }
    }

    fn begin(&mut self) {
        self.began = thread_cpu_time().map(|cpu| (Instant::now(), cpu));
    }

    /// The rest after the run since [`Self::begin`]; none where the OS
    /// reports no thread CPU time.
    fn end(&mut self) -> Duration {
        match (self.began.take(), thread_cpu_time()) {
            (Some((wall, cpu0)), Some(cpu1)) => {
                self.rest(cpu1.saturating_sub(cpu0), wall.elapsed())
            }
            _ => Duration::ZERO,
        }
    }

    /// The rest after a run that took `cpu` of the thread's CPU time over
    /// `wall` of real time.
    fn rest(&mut self, cpu: Duration, wall: Duration) -> Duration {
        if cpu * 4 >= wall {
            self.owed = Duration::ZERO;
            return Duration::ZERO;
        }
        // In seconds: a tiny share would overflow a Duration.
        let due = (cpu.as_secs_f64() / self.pacing.share - wall.as_secs_f64()).max(0.0);
        let due = (self.owed.as_secs_f64() + due).min(MOST_OWED.as_secs_f64());
        let rest = Duration::from_secs_f64(due.min(LONGEST_REST.as_secs_f64()));
        self.owed = Duration::from_secs_f64(due).saturating_sub(rest);
        rest
    }
}

pub struct ExplainPool<J> {
    tx: Sender<J>,
    queue: usize,
    threads: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    #[error("the explanation queue is full ({0} waiting, inference_queue); retry with backoff")]
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
                    let mut pacer = match priority {
                        Priority::Normal => None,
                        Priority::Lowest(pacing) => {
                            lower_priority();
                            Some(Pacer::new(pacing))
                        }
                    };
                    while let Ok(first) = rx.recv() {
                        if let Some(pacer) = pacer.as_mut() {
                            pacer.begin();
                        }
                        for jobs in gather(first, &rx) {
                            J::run(jobs, i);
                        }
                        if let Some(pacer) = pacer.as_mut() {
                            thread::sleep(pacer.end());
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

/// The CPU time the calling thread has used, where the OS reports it.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes `now` only.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0 {
            return Some(Duration::new(now.tv_sec as u64, now.tv_nsec as u32));
        }
    }
    None
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
            (Priority::Lowest(Pacing::new(0.05)), libc::SCHED_IDLE),
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
        let pool = ExplainPool::new("test-pool", 2, 64, Priority::Lowest(Pacing::new(0.05)));
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

    #[test]
    fn a_thread_rests_only_after_live_work_kept_it_off_its_core() {
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(Pacing::new(0.05));
        // Had a quarter of the core or more: no rest.
        assert_eq!(pacer.rest(ms(10), ms(10)), Duration::ZERO);
        assert_eq!(pacer.rest(ms(10), ms(40)), Duration::ZERO);
        // Kept off it: computing becomes a twentieth of run and rest.
        let rest = pacer.rest(ms(10), ms(41));
        assert!((rest.as_secs_f64() - 0.159).abs() < 1e-9, "{rest:?}");
        assert_eq!(pacer.owed, Duration::ZERO);
        assert_eq!(
            Pacer::new(Pacing::new(1.0)).rest(ms(10), ms(100)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_long_rest_is_taken_in_parts_while_the_load_lasts_and_forgiven_after() {
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(Pacing::new(0.05));
        // 200 ms of work owes 4 s with the run's 801 ms.
        assert_eq!(pacer.rest(ms(200), ms(801)), LONGEST_REST);
        assert!(
            (pacer.owed.as_secs_f64() - 2.199).abs() < 1e-9,
            "{:?}",
            pacer.owed
        );
        // Still kept off its core: the debt comes first.
        assert_eq!(pacer.rest(ms(1), ms(5)), LONGEST_REST);
        assert!(
            (pacer.owed.as_secs_f64() - 1.214).abs() < 1e-9,
            "{:?}",
            pacer.owed
        );
        // The load ended: nothing more is owed.
        assert_eq!(pacer.rest(ms(1), ms(1)), Duration::ZERO);
        assert_eq!(pacer.owed, Duration::ZERO);
    }

    #[test]
    fn any_share_gives_a_bounded_rest() {
        let ms = Duration::from_millis;
        for share in [0.0, -1.0, f64::NAN, 1e-300, f64::MIN_POSITIVE] {
            let mut pacer = Pacer::new(Pacing::new(share));
            assert_eq!(pacer.rest(ms(10), ms(100)), LONGEST_REST, "{share}");
            assert_eq!(pacer.owed, MOST_OWED - LONGEST_REST, "{share}");
            assert_eq!(pacer.rest(ms(10), ms(100)), LONGEST_REST, "{share}");
            assert_eq!(pacer.owed, MOST_OWED - LONGEST_REST, "{share}");
        }
        assert_eq!(Pacing::new(7.0).share, 1.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn thread_cpu_time_counts_work_and_not_sleep() {
        let before = thread_cpu_time().unwrap();
        thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time().unwrap() - before;
        assert!(slept < Duration::from_millis(20), "{slept:?}");
        let start = thread_cpu_time().unwrap();
        let spinning = Instant::now();
        while thread_cpu_time().unwrap() - start < Duration::from_millis(30) {
            assert!(
                spinning.elapsed() < Duration::from_secs(60),
                "the clock stands still"
            );
        }
    }
}
