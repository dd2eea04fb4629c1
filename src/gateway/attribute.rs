//! Attribution work for the explanation pools: a request's scored rows,
//! explained on a pool thread, at the priority its urgency calls for. Jobs
//! for the same model and a method that walks rows in blocks run together,
//! so concurrent calls share the walk.

use std::{sync::Arc, time::Instant};

use tokio::sync::oneshot;

use crate::{
    decisions::Explanation,
    explain::{DecisionAttribution, Method, SlotScorer, pool::Job},
    models::ModelPackage,
};

/// Who waits for attributions, which decides the pool that computes them.
#[derive(Debug, Clone, Copy)]
pub(super) enum Urgency {
    /// A caller waits (inline, Explain, a first look-up), until `deadline`
    /// at most.
    Waiting { deadline: Option<Instant> },
    /// Nobody waits (deferred attributions, shadow drift): computed on
    /// threads of the lowest CPU priority, with what the callers leave.
    Background,
}

pub(super) struct AttributeJob {
    pub package: Arc<ModelPackage>,
    /// Validated rows in column order, as ORT scored them.
    pub inputs: Vec<f32>,
    pub scores: Vec<f32>,
    pub method: Method,
    /// Positions of features the consent verdict masked.
    pub masked: Vec<usize>,
    pub deadline: Option<Instant>,
    /// The first session slot after the inference workers', so the
    /// model-agnostic estimator never waits for them.
    pub first_slot: usize,
    pub reply: Reply,
}

/// Where a job's answer goes, and in which form.
pub(super) enum Reply {
    Attributions(oneshot::Sender<Result<Vec<DecisionAttribution>, String>>),
    /// Ready for the record, made on the pool's thread, off the async
    /// workers.
    Records(oneshot::Sender<Result<Vec<Recorded>, String>>),
}

/// An attribution as the record keeps it: the explanation and its stored
/// form ([`crate::decisions::stored`]).
pub(super) type Recorded = (Explanation, Vec<u8>);

/// A form a job can answer in.
pub(super) trait Answer: Sized {
    fn reply(tx: oneshot::Sender<Result<Vec<Self>, String>>) -> Reply;
    /// |base + Σφ − margin|, for the metrics.
    fn residual(&self) -> f64;
}

impl Answer for DecisionAttribution {
    fn reply(tx: oneshot::Sender<Result<Vec<Self>, String>>) -> Reply {
        Reply::Attributions(tx)
    }

    fn residual(&self) -> f64 {
        self.attribution.residual
    }
}

impl Answer for Recorded {
    fn reply(tx: oneshot::Sender<Result<Vec<Self>, String>>) -> Reply {
        Reply::Records(tx)
    }

    fn residual(&self) -> f64 {
        self.0.residual
    }
}

fn recorded(attribution: &DecisionAttribution) -> Recorded {
    let explanation = Explanation::from(attribution);
    let stored = crate::decisions::stored::encode(&explanation);
    (explanation, stored)
}

impl Reply {
    /// Whether nobody waits for the answer any more: the caller went away
    /// (cancelled, or past its deadline).
    fn is_closed(&self) -> bool {
        match self {
            Self::Attributions(tx) => tx.is_closed(),
            Self::Records(tx) => tx.is_closed(),
        }
    }

    fn send(self, answer: Result<Vec<DecisionAttribution>, String>) {
        // The caller may have stopped waiting (deadline): its decision is
        // then recorded as owing its attributions.
        let _ = match self {
            Self::Attributions(tx) => tx.send(answer).map_err(drop),
            Self::Records(tx) => tx
                .send(answer.map(|all| all.iter().map(recorded).collect()))
                .map_err(drop),
        };
    }
}

impl Job for AttributeJob {
    type Key = (*const ModelPackage, Method);

    fn key(&self) -> Option<Self::Key> {
        self.package
            .explainer
            .walks_blocks(self.method)
            .then_some((Arc::as_ptr(&self.package), self.method))
    }

    fn rows(&self) -> usize {
        self.scores.len()
    }

    fn run(mut jobs: Vec<Self>, thread: usize) {
        // Work for callers that went away would only be thrown away, and
        // would keep those still waiting behind it.
        jobs.retain(|job| !job.reply.is_closed());
        let Some(first) = jobs.first() else { return };
        let package = first.package.clone();
        let mut scorer = SlotScorer {
            backend: package.backend.as_ref(),
            slot: first.first_slot + thread,
        };
        let columns = package.schema.columns();
        let rows: Vec<&[f32]> = jobs
            .iter()
            .flat_map(|job| job.inputs.chunks(columns.len()))
            .collect();
        // In blocks, so that work whose callers all went away meanwhile
        // stops within a block (a sampled row of a large model takes
        // milliseconds; a batch, seconds). A block is the largest the
        // TreeSHAP kernel walks at once, so no walk is cut short.
        let mut explained = Vec::with_capacity(rows.len());
        for block in rows.chunks(crate::explain::pool::GATHER_ROWS) {
            if jobs.iter().all(|job| job.reply.is_closed()) {
                return;
            }
            match package
                .explainer
                .explain_rows(block, first.method, &mut scorer, first.deadline)
            {
                Ok(part) => explained.extend(part),
                Err(e) => {
                    for job in jobs {
                        job.reply.send(Err(e.clone()));
                    }
                    return;
                }
            }
        }
        drop(rows);
        let mut explained = explained.into_iter();
        for job in jobs {
            let named = job
                .inputs
                .chunks(columns.len())
                .zip(&job.scores)
                .zip(explained.by_ref())
                .map(|((row, &score), attribution)| {
                    let mut named = DecisionAttribution::new(
                        attribution,
                        row,
                        &package.schema,
                        f64::from(score),
                    );
                    for &i in &job.masked {
                        named.features[i].masked = true;
                    }
                    named
                })
                .collect();
            job.reply.send(Ok(named));
        }
    }
}
