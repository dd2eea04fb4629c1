//! The ONNX Runtime backend: a pool of sessions over one model.

use std::sync::Mutex;

use ort::{
    logging::LogLevel,
    session::{Session, builder::GraphOptimizationLevel},
    value::TensorRef,
};

use super::{Backend, InferenceError, runtime};

/// One model loaded into ONNX Runtime, with a session per inference slot.
pub struct OrtBackend {
    sessions: Vec<Mutex<Session>>,
    input: String,
    output: String,
    output_index: usize,
    output_columns: usize,
    width: usize,
    /// Rows per ORT call; larger batches are split into chunks of this size.
    chunk_rows: usize,
}

/// The shape of a graph input or output as ONNX Runtime reports it; `-1`
/// marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub element: String,
    pub shape: Vec<i64>,
}

impl OrtBackend {
    /// Builds one session from the model bytes, for inspecting the graph.
    pub fn inspect(model: &[u8]) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>), ort::Error> {
        let session = new_session(model)?;
        let describe = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| TensorInfo {
                    name: o.name().to_owned(),
                    element: o
                        .dtype()
                        .tensor_type()
                        .map(|t| format!("{t:?}"))
                        .unwrap_or_else(|| format!("{}", o.dtype())),
                    shape: o
                        .dtype()
                        .tensor_shape()
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default(),
                })
                .collect()
        };
        Ok((describe(session.inputs()), describe(session.outputs())))
    }

    /// Loads `slots` sessions. The caller has already checked that `input`
    /// is a float32 [N, width] tensor and that `output` has `output_columns`
    /// columns (1 for a rank-1 output).
    pub fn load(
        model: &[u8],
        slots: usize,
        input: &str,
        width: usize,
        output: &str,
        output_index: usize,
        output_columns: usize,
    ) -> Result<Self, ort::Error> {
        let sessions = (0..slots.max(1))
            .map(|_| new_session(model).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sessions,
            input: input.to_owned(),
            output: output.to_owned(),
            output_index,
            output_columns,
            width,
            chunk_rows: usize::MAX,
        })
    }

    /// Picks the rows per ORT call that score `sample` (row-major) fastest.
    ///
    /// ORT's cost per row depends on the batch size in ways that differ by
    /// operator: linear and dense graphs get cheaper per row as batches grow,
    /// while tree ensembles are fastest at a few rows per call and several
    /// times slower per row at a few hundred. Measuring once at load lets every
    /// large batch run at the best size for its model.
    pub fn calibrate(&mut self, sample: &[f32]) -> Result<usize, InferenceError> {
        let available = sample.len() / self.width;
        let mut best: Option<(usize, f64)> = None;
        for size in [1, 2, 4, 8, 16, 32, 64, 128, 256]
            .into_iter()
            .filter(|&s| s <= available)
        {
            let rows = &sample[..size * self.width];
            let reps = (1024 / size).max(2);
            self.run(0, rows)?;
            let start = std::time::Instant::now();
            for _ in 0..reps {
                self.run(0, rows)?;
            }
            let per_row = start.elapsed().as_secs_f64() / (reps * size) as f64;
            // Prefer the smaller batch unless a larger one is clearly faster:
            // smaller chunks also keep latency low.
            if best.is_none_or(|(_, b)| per_row < b * 0.9) {
                best = Some((size, per_row));
            }
        }
        self.chunk_rows = match best {
            Some((size, _)) if size < available.min(256) => size,
            _ => usize::MAX,
        };
        Ok(self.chunk_rows)
    }

    fn run(&self, slot: usize, rows: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let n = rows.len() / self.width;
        let input = TensorRef::from_array_view(([n, self.width], rows))?;
        // A poisoned lock only means another run panicked mid-call; the
        // session itself holds no partial state between runs.
        let mut session = self.sessions[slot % self.sessions.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(ort::inputs![self.input.as_str() => input])?;
        let (_, values) = outputs[self.output.as_str()].try_extract_tensor::<f32>()?;
        if values.len() != n * self.output_columns {
            return Err(InferenceError::OutputShape {
                rows: n,
                got: values.len(),
            });
        }
        Ok(values
            .iter()
            .skip(self.output_index)
            .step_by(self.output_columns)
            .copied()
            .collect())
    }
}

fn new_session(model: &[u8]) -> Result<Session, ort::Error> {
    let environment = runtime::environment().map_err(|e| ort::Error::new(e.to_string()))?;
    // One intra-op thread and no spinning: parallelism comes from the worker
    // pool, and spinning threads would steal the cores other requests need.
    Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(false)?
        .with_inter_op_spinning(false)?
        // ONNX Runtime warns on every run about outputs the gateway never
        // reads (a converter's `label` declared as shape [1] while it holds
        // one per row): thousands of lines at load and one per call. The
        // gateway checks the output it does read itself; errors still log.
        .with_log_level(LogLevel::Error)?
        .commit_from_memory(model)
}

impl Backend for OrtBackend {
    fn width(&self) -> usize {
        self.width
    }

    fn predict(&self, slot: usize, rows: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let chunk = self.chunk_rows.saturating_mul(self.width);
        if rows.len() <= chunk {
            return self.run(slot, rows);
        }
        let mut scores = Vec::with_capacity(rows.len() / self.width);
        for part in rows.chunks(chunk) {
            scores.extend(self.run(slot, part)?);
        }
        Ok(scores)
    }
}
