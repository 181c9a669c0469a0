//! The engine: GGUF models on CPU (CUDA with the `cuda` feature) behind a dedicated worker
//! thread. It knows nothing of prompt files; callers give it text.
//!
//! [`Engine`] is the handle the rest of the daemon uses: every call is a job run on the worker
//! thread that owns the model, so CPU-heavy work never runs on async executor threads.

pub mod chat;
pub mod error;
pub mod gguf;
pub mod model;
pub mod runtime;
pub mod store;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use candle_core::Device;

pub use chat::ChatTurn;
pub use error::{EngineError, Result};
pub use model::Weights;
pub use runtime::{GenerateParams, Generation, Likelihood, Runtime, RuntimeOptions, Stats, StopReason, stream_seed};

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Self::Cuda(n)),
                None => Err(format!("unknown device `{s}`: use cpu, cuda or cuda:N")),
            },
        }
    }
}

impl DeviceChoice {
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => Ok(Device::new_cuda(n)?),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => {
                Err(EngineError::Invalid("this reprompt was built without CUDA: rebuild with `--features cuda`".into()))
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    pub weights: Option<Weights>,
    pub device: DeviceChoice,
    pub runtime: RuntimeOptions,
}

type Job = Box<dyn FnOnce(&mut Runtime) + Send>;

/// A handle to a model running on its own thread. Cheap to clone; the thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    pub path: PathBuf,
    pub device: DeviceChoice,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

impl Engine {
    /// Loads the model on a new worker thread; returns once it is ready (or failed to load).
    pub fn open(path: &Path, options: EngineOptions) -> Result<Self> {
        let device = options.device;
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (ready, loaded) = mpsc::channel::<Result<()>>();
        let model_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("reprompt-engine".into())
            .spawn(move || {
                let device = match options.device.device() {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let weights = options.weights.unwrap_or(Weights::Both);
                let mut runtime = match Runtime::load(&model_path, weights, &device, options.runtime) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                while let Ok(job) = receiver.recv() {
                    // A job that panics loses its reply (the caller gets an error); the model
                    // and the worker stay up for the next job.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut runtime)));
                }
            })
            .map_err(|e| EngineError::Invalid(format!("cannot start the engine thread: {e}")))?;
        loaded.recv().map_err(|_| EngineError::WorkerGone)??;
        Ok(Self { jobs, path: path.to_path_buf(), device })
    }

    /// Runs `f` on the worker thread with the runtime and waits for its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Runtime) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, result) = mpsc::channel();
        self.jobs
            .send(Box::new(move |runtime: &mut Runtime| {
                let _ = reply.send(f(runtime));
            }))
            .map_err(|_| EngineError::WorkerGone)?;
        result.recv().map_err(|_| EngineError::JobFailed)?
    }

    pub fn choice_logprobs(&self, contexts: Vec<String>, choices: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.run(move |rt| rt.choice_logprobs(&contexts, &choices))
    }

    pub fn continuation_logprobs(&self, pairs: Vec<(String, String)>) -> Result<Vec<Likelihood>> {
        self.run(move |rt| rt.continuation_logprobs(&pairs))
    }

    pub fn next_token_logprobs(&self, contexts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.run(move |rt| rt.next_token_logprobs(&contexts))
    }

    pub fn vocabulary(&self) -> Result<Vec<String>> {
        self.run(|rt| rt.vocabulary())
    }

    pub fn generate(&self, contexts: Vec<String>, params: GenerateParams) -> Result<Vec<Generation>> {
        self.run(move |rt| rt.generate(&contexts, &params))
    }

    pub fn generate_seeded(
        &self,
        contexts: Vec<String>,
        params: GenerateParams,
        seeds: Vec<u64>,
    ) -> Result<Vec<Generation>> {
        self.run(move |rt| rt.generate_seeded(&contexts, &params, &seeds))
    }

    pub fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.run(move |rt| rt.embed(&texts))
    }

    pub fn chat_prompt(&self, turns: Vec<ChatTurn>, add_generation_prompt: bool) -> Result<String> {
        self.run(move |rt| rt.chat_prompt(&turns, add_generation_prompt))
    }

    pub fn tokenize(&self, text: String) -> Result<Vec<u32>> {
        self.run(move |rt| rt.tokenize(&text))
    }
}
