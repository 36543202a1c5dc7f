//! The golden-case harness every backend runs (feature `golden`): reads the
//! cases the original PyTorch implementation produced (see
//! `frog-cpu/golden/README.md`) and replays them through any
//! `frog_core::Backend`, chaining the 3 steps from the backend's own state
//! and comparing every array after every step. The mixed-precision cases of
//! `lowp/` (same schema, plus `x_dtype`, `y_dtype` and `y_loss_scale`) run
//! through [`run_case_lowp`], which hands the backend `x` and `y` in their
//! 16-bit type. The Muon cases of `muon/` have their own schema and
//! replay ([`muon`]).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use frog_core::half::{bf16, f16};
use frog_core::{
    frog_step, plain_sgd_step, Backend, Batch, Config, Conv2d, Half, Layer, LowpBackend, LowpBatch, ParamGrad, ParamState, Params, Scalar, Unguarded, ViewBatch,
    ViewParamGrad, ViewParams, Workspace, WorkspaceReq,
};
use serde_json::Value;

pub mod framework;
pub mod muon;

/// The golden directory: `$FROG_GOLDEN_DIR` (same layout), else the
/// repository's own `frog-cpu/golden`.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("FROG_GOLDEN_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("golden"))
}

/// What a case updates: a preconditioned layer, or a plain-SGD parameter.
#[derive(Clone, Debug)]
pub enum Target {
    /// A conv2d or linear layer.
    Layer(Layer),
    /// A parameter of `len` entries on the plain-SGD path.
    Other(usize),
}

/// Expected values after one step (absent fields are `None`).
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Damping used.
    pub tau: Option<f64>,
    /// Momentum buffer of the weight.
    pub momentum_weight: Option<Vec<f64>>,
    /// Momentum buffer of the bias.
    pub momentum_bias: Option<Vec<f64>>,
    /// Traces.
    pub trace: Option<Vec<f64>>,
    /// CG solution `R x D'`.
    pub direction: Option<Vec<f64>>,
    /// Row scales.
    pub row_scale: Option<Vec<f64>>,
    /// Weight after the step.
    pub weight: Vec<f64>,
    /// Bias after the step.
    pub bias: Option<Vec<f64>>,
}

/// One step's inputs and expectations.
#[derive(Clone, Debug)]
pub struct Step {
    /// Weight gradient.
    pub grad_weight: Vec<f64>,
    /// Bias gradient.
    pub grad_bias: Option<Vec<f64>>,
    /// Sampled inputs (empty for plain-SGD cases).
    pub x: Vec<f64>,
    /// Sampled output gradients (empty for plain-SGD cases).
    pub y: Vec<f64>,
    /// Expected values.
    pub expected: Expected,
}

/// The 16-bit type of a mixed-precision case's `x` and `y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowp {
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

/// One golden case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The type of `x` and `y` in a mixed-precision case (`lowp/`), `None`
    /// for the full-precision cases.
    pub lowp: Option<Lowp>,
    /// The loss scale `y` carries (`y_loss_scale`; 1 when absent).
    pub y_loss_scale: f64,
    /// The file's `name`.
    pub name: String,
    /// What is updated.
    pub target: Target,
    /// Hyperparameters.
    pub config: Config,
    /// Full batch size `B`.
    pub batch_size: usize,
    /// Sampled rows `r`.
    pub sample_size: usize,
    /// Initial weight.
    pub weight: Vec<f64>,
    /// Initial bias.
    pub bias: Option<Vec<f64>>,
    /// The steps.
    pub steps: Vec<Step>,
}

pub(crate) fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing field `{key}`"))
}

pub(crate) fn num(v: &Value, key: &str) -> Result<f64, String> {
    field(v, key)?.as_f64().ok_or_else(|| format!("`{key}` is not a number"))
}

fn uint(v: &Value, key: &str) -> Result<usize, String> {
    field(v, key)?.as_u64().map(|n| n as usize).ok_or_else(|| format!("`{key}` is not an integer"))
}

fn pair(v: &Value, key: &str) -> Result<[usize; 2], String> {
    let a = field(v, key)?.as_array().filter(|a| a.len() == 2).ok_or_else(|| format!("`{key}` is not a pair"))?;
    let get = |i: usize| a[i].as_u64().map(|n| n as usize).ok_or_else(|| format!("`{key}` has a non-integer"));
    Ok([get(0)?, get(1)?])
}

pub(crate) fn array(v: &Value, key: &str) -> Result<Vec<f64>, String> {
    field(v, key)?
        .as_array()
        .ok_or_else(|| format!("`{key}` is not an array"))?
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| format!("`{key}` holds a non-number")))
        .collect()
}

pub(crate) fn opt_array(v: &Value, key: &str) -> Result<Option<Vec<f64>>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => array(v, key).map(Some),
    }
}

pub(crate) fn parse_target(l: &Value) -> Result<Target, String> {
    let bias = l.get("bias").and_then(Value::as_bool).unwrap_or(false);
    match field(l, "kind")?.as_str() {
        Some("conv2d") => {
            let conv = Conv2d {
                c_in: uint(l, "c_in")?,
                c_out: uint(l, "c_out")?,
                kernel: pair(l, "kernel")?,
                stride: pair(l, "stride")?,
                padding: pair(l, "padding")?,
                dilation: pair(l, "dilation")?,
                groups: 1,
                input_hw: pair(l, "input_hw")?,
            };
            if conv.output_hw() != Some(pair(l, "output_hw")?) {
                return Err("output_hw disagrees with the convolution geometry".into());
            }
            Ok(Target::Layer(Layer::conv2d(conv, bias)))
        }
        Some("linear") => {
            let tokens = l.get("tokens").and_then(Value::as_u64).map_or(1, |t| t as usize);
            Ok(Target::Layer(Layer::linear_tokens(uint(l, "d_in")?, uint(l, "d_out")?, tokens, bias)))
        }
        Some("other") => {
            let shape = field(l, "shape")?.as_array().ok_or("`shape` is not an array")?;
            Ok(Target::Other(shape.iter().map(|d| d.as_u64().unwrap_or(0) as usize).product()))
        }
        other => Err(format!("unknown layer kind {other:?}")),
    }
}

fn parse_config(h: &Value) -> Result<Config, String> {
    let opt = |key: &str| h.get(key).and_then(Value::as_f64);
    Ok(Config {
        lr: num(h, "lr")?,
        lr_other_ratio: num(h, "lr_other_ratio")?,
        momentum: num(h, "momentum")?,
        nesterov: field(h, "nesterov")?.as_bool().ok_or("`nesterov` is not a bool")?,
        weight_decay: num(h, "weight_decay")?,
        sample_size: None,
        num_iters: uint(h, "num_iters")?,
        tau: num(h, "tau")?,
        tau_final: opt("tau_final"),
        tau_steps: h.get("tau_steps").and_then(Value::as_u64),
        batch_averaged: field(h, "batch_averaged")?.as_bool().ok_or("`batch_averaged` is not a bool")?,
        denom_eps: num(h, "denom_eps")?,
        ..Config::default()
    })
}

fn parse_step(s: &Value) -> Result<Step, String> {
    let e = field(s, "expected")?;
    Ok(Step {
        grad_weight: array(s, "grad_weight")?,
        grad_bias: opt_array(s, "grad_bias")?,
        x: opt_array(s, "x")?.unwrap_or_default(),
        y: opt_array(s, "y")?.unwrap_or_default(),
        expected: Expected {
            tau: e.get("tau").and_then(Value::as_f64),
            momentum_weight: opt_array(e, "momentum_weight")?,
            momentum_bias: opt_array(e, "momentum_bias")?,
            trace: opt_array(e, "trace")?,
            direction: opt_array(e, "direction")?,
            row_scale: opt_array(e, "row_scale")?,
            weight: array(e, "weight")?,
            bias: opt_array(e, "bias")?,
        },
    })
}

/// Parses one case; `Ok(None)` for a JSON file that is not a layer case
/// (it has no `layer` key).
pub fn parse_case(text: &str) -> Result<Option<Case>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Some(layer) = v.get("layer") else { return Ok(None) };
    let initial = field(&v, "initial")?;
    let steps = field(&v, "steps")?.as_array().ok_or("`steps` is not an array")?;
    let dtype = |key: &str| match v.get(key).map(|d| d.as_str()) {
        None => Ok(None),
        Some(Some("bf16")) => Ok(Some(Lowp::Bf16)),
        Some(Some("f16")) => Ok(Some(Lowp::F16)),
        Some(other) => Err(format!("`{key}` is {other:?}, not \"bf16\" or \"f16\"")),
    };
    let lowp = dtype("x_dtype")?;
    if dtype("y_dtype")? != lowp {
        return Err("`x_dtype` and `y_dtype` differ (a step takes both in one type)".into());
    }
    Ok(Some(Case {
        lowp,
        y_loss_scale: v.get("y_loss_scale").and_then(Value::as_f64).unwrap_or(1.0),
        name: field(&v, "name")?.as_str().unwrap_or_default().to_string(),
        target: parse_target(layer)?,
        config: parse_config(field(&v, "hyper")?)?,
        batch_size: uint(&v, "batch_size")?,
        sample_size: uint(&v, "sample_size")?,
        weight: array(initial, "weight")?,
        bias: opt_array(initial, "bias")?,
        steps: steps.iter().map(parse_step).collect::<Result<_, _>>()?,
    }))
}

/// Every `*.json` file of `dir` with its text, sorted by file name; an
/// unreadable directory or file is an error.
fn json_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read golden directory {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()).map_err(|e| format!("{}: {e}", dir.display())))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|x| x == "json"));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((p, text))
        })
        .collect()
}

/// Every layer case in `dir` (files `*.json` with a `layer` key), sorted by
/// file name. Any unreadable or malformed file is an error.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for (p, text) in json_files(dir)? {
        if let Some(case) = parse_case(&text).map_err(|e| format!("{}: {e}", p.display()))? {
            cases.push(case);
        }
    }
    Ok(cases)
}

/// Max-norm relative error `max|a - b| / max|b|` (the golden cases' measure; an
/// all-zero reference compares absolutely).
pub fn rel_error(actual: &[f64], expected: &[f64]) -> f64 {
    let diff = actual.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let scale = expected.iter().map(|b| b.abs()).fold(0.0, f64::max);
    if actual.len() != expected.len() || actual.iter().any(|a| !a.is_finite()) {
        f64::INFINITY
    } else if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The worst error seen over a case, and where.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Largest relative error over all compared arrays.
    pub worst: f64,
    /// `step.field` of the largest error.
    pub worst_at: String,
    /// Arrays compared.
    pub compared: usize,
    /// A digest of every value the backend produced, in the order compared
    /// ([`digest`]): equal digests mean bitwise equal results, so a change
    /// meant to keep the arithmetic can be checked against the digests
    /// printed before it.
    pub digest: u64,
}

/// FNV-1a over the bits of `values`, continuing from `seed` (start from
/// [`DIGEST_START`]).
pub fn digest(seed: u64, values: &[f64]) -> u64 {
    values.iter().flat_map(|v| v.to_bits().to_le_bytes()).fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The FNV-1a offset basis, where every [`digest`] starts.
pub const DIGEST_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The results of a suite of cases: every backend's golden test records
/// each case's outcome here and ends with [`Tally::finish`], so that all of
/// them print and fail the same way.
#[derive(Debug, Default)]
pub struct Tally {
    /// Cases within tolerance.
    pub passed: usize,
    /// Largest error over the passed cases.
    pub worst: f64,
    /// `case step.field` of that error.
    pub worst_at: String,
    /// `case: message` of each failed case.
    pub failures: Vec<String>,
    /// The digests of the passed cases, in order, digested again.
    pub digest: u64,
}

impl Tally {
    /// Prints a line for the case `name` (after `prefix`, such as the
    /// test's name) and counts its outcome.
    pub fn record(&mut self, prefix: &str, name: &str, outcome: Result<Report, String>) {
        match outcome {
            Ok(r) => {
                println!("{prefix}{name:<32} ok  worst {:.2e} at {} ({} arrays)", r.worst, r.worst_at, r.compared);
                self.passed += 1;
                self.digest = digest(if self.passed == 1 { DIGEST_START } else { self.digest }, &[f64::from_bits(r.digest)]);
                if r.worst >= self.worst {
                    self.worst = r.worst;
                    self.worst_at = format!("{name} {}", r.worst_at);
                }
            }
            Err(e) => {
                println!("{prefix}{name:<32} FAILED {e}");
                self.failures.push(format!("{name}: {e}"));
            }
        }
    }

    /// Prints `summary` with the pass count and the worst error (also when
    /// the harness captures output), then returns every failure in one
    /// message.
    pub fn finish(self, summary: &str) -> Result<(), String> {
        let total = self.passed + self.failures.len();
        // Straight to stderr, past the test harness's capture: every test
        // log shows how many cases each suite really ran.
        let line = format!("{summary}: {} of {total} cases pass; worst {:.2e} ({}); digest {:016x}\n", self.passed, self.worst, self.worst_at, self.digest);
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(format!("{summary}: {} failures:\n{}", self.failures.len(), self.failures.join("\n")))
        }
    }
}

/// Runs every case of a suite through `run` into a [`Tally`] and finishes
/// it: the whole driver of a golden test whose cases all must pass.
pub fn run_suite<C>(summary: &str, cases: &[C], name: impl Fn(&C) -> &str, mut run: impl FnMut(&C) -> Result<Report, String>) -> Result<(), String> {
    let mut tally = Tally::default();
    for case in cases {
        tally.record("", name(case), run(case));
    }
    tally.finish(summary)
}

/// One case's comparisons: every array checked at relative tolerance
/// `rtol` ([`rel_error`]), the worst error and the digest of every actual
/// value kept in a [`Report`], the failures listed. The replays here use
/// it, and so can another crate's replay of its own golden case, so that
/// every suite reports and digests alike.
#[derive(Debug)]
pub struct Checker {
    pub(crate) rtol: f64,
    pub(crate) report: Report,
    pub(crate) failures: Vec<String>,
}

impl Checker {
    /// A checker at relative tolerance `rtol`, nothing compared yet.
    pub fn new(rtol: f64) -> Self {
        Self { rtol, report: Report::default(), failures: Vec::new() }
    }

    /// Records a failure that is not an array's error (`what` says which).
    pub fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    /// The case's report, or every failure in one message.
    pub fn finish(self) -> Result<Report, String> {
        if self.failures.is_empty() {
            Ok(self.report)
        } else {
            Err(self.failures.join("; "))
        }
    }

    /// Compares `actual` with `expected` (the array at `at`, such as
    /// `step0.weight`), adding it to the digest.
    pub fn check(&mut self, at: String, actual: &[f64], expected: &[f64]) {
        let err = rel_error(actual, expected);
        self.report.digest = digest(if self.report.compared == 0 { DIGEST_START } else { self.report.digest }, actual);
        self.report.compared += 1;
        if err > self.report.worst || self.report.compared == 1 {
            self.report.worst = err;
            self.report.worst_at.clone_from(&at);
        }
        if err > self.rtol || err.is_nan() {
            self.failures.push(format!("{at}: relative error {err:.3e} > {:.0e}", self.rtol));
        }
    }
}

pub(crate) fn upload<B: Backend>(b: &B, data: &[f64]) -> Result<B::Buffer, String> {
    let host: Vec<B::Scalar> = data.iter().map(|&v| B::Scalar::of_f64(v)).collect();
    let mut buf = b.zeros(host.len()).map_err(|e| e.to_string())?;
    b.write(&host, &mut buf, 0).map_err(|e| e.to_string())?;
    Ok(buf)
}

pub(crate) fn download<B: Backend>(b: &B, buf: &B::Buffer, offset: usize, len: usize) -> Result<Vec<f64>, String> {
    let mut host = vec![B::Scalar::ZERO; len];
    b.read(buf, offset, &mut host).map_err(|e| e.to_string())?;
    Ok(host.into_iter().map(Scalar::as_f64).collect())
}

/// Column `c0..c1` of every row of a row-major `rows x cols` host matrix.
fn columns(m: &[f64], cols: usize, c0: usize, c1: usize) -> Vec<f64> {
    m.chunks(cols).flat_map(|row| row[c0..c1].iter().copied()).collect()
}

/// Replays `case` on `backend`, chaining its steps, and compares every
/// expected array at relative tolerance `rtol`. Errors list every failure.
pub fn run_case<B: Backend>(backend: &B, case: &Case, rtol: f64) -> Result<Report, String> {
    run_with(backend, case, rtol, &OnBuffers)
}

/// [`run_case`] through the steps on views ([`frog_step`] on [`ViewParams`],
/// [`plain_sgd_step`] on [`ViewParamGrad`]): every array of the case is a view of the
/// middle of a larger buffer, and the entries around it must come out of
/// every step unchanged.
pub fn run_case_view<B: Backend>(backend: &B, case: &Case, rtol: f64) -> Result<Report, String> {
    run_with(backend, case, rtol, &OnViews)
}

/// [`run_case`] for a mixed-precision case: `x` and `y` go to the backend
/// in the case's 16-bit type (each value checked to be exact in it), with
/// the opt-in overflow check of `y` on. An error for a case without one.
pub fn run_case_lowp<B: LowpBackend<bf16> + LowpBackend<f16>>(backend: &B, case: &Case, rtol: f64) -> Result<Report, String> {
    match case.lowp {
        Some(Lowp::Bf16) => run_with(backend, case, rtol, &OnLowp::<bf16>(PhantomData)),
        Some(Lowp::F16) => run_with(backend, case, rtol, &OnLowp::<f16>(PhantomData)),
        None => Err(format!("{} is not a mixed-precision case", case.name)),
    }
}

/// The step of a layer case that [`Run::precondition`] replays.
#[derive(Clone, Copy)]
struct Replayed<'a> {
    case: &'a Case,
    layer: &'a Layer,
    step: &'a Step,
}

/// How a replay hands a case's arrays to the steps. The arrays are
/// uploaded into buffers with [`Run::PAD`] guard entries on each side.
trait Run<B: Backend> {
    /// Guard entries before and after every uploaded array.
    const PAD: usize;
    /// One plain-SGD step of the `len` entries of `param`.
    fn plain(&self, backend: &B, cfg: &Config, state: &mut ParamState<B>, param: &mut B::Buffer, grad: &B::Buffer, len: usize) -> Result<(), String>;
    /// One preconditioned step, uploading the step's `x` and `y` its way.
    fn precondition(&self, backend: &B, at: Replayed<'_>, state: &mut ParamState<B>, ws: &mut Workspace<B>, params: Params<'_, B>) -> Result<(), String>;
}

/// Backend buffers of exactly each array's length.
struct OnBuffers;

impl<B: Backend> Run<B> for OnBuffers {
    const PAD: usize = 0;
    fn plain(&self, backend: &B, cfg: &Config, state: &mut ParamState<B>, param: &mut B::Buffer, grad: &B::Buffer, _: usize) -> Result<(), String> {
        plain_sgd_step(backend, cfg, state, ParamGrad { param, grad }).map_err(|e| e.to_string())
    }
    fn precondition(&self, backend: &B, at: Replayed<'_>, state: &mut ParamState<B>, ws: &mut Workspace<B>, params: Params<'_, B>) -> Result<(), String> {
        let Replayed { case, layer, step } = at;
        let (x, y) = (upload(backend, &step.x)?, upload(backend, &step.y)?);
        let batch = Batch { x: &x, y: &y, sample: case.sample_size, batch_size: case.batch_size };
        frog_step(backend, &case.config, layer, state, ws, params, batch, Unguarded).map_err(|e| e.to_string())
    }
}

/// Views of the middle of padded buffers.
struct OnViews;

/// [`OnViews`]' guard entries on each side.
const VIEW_PAD: usize = 3;

impl<B: Backend> Run<B> for OnViews {
    const PAD: usize = VIEW_PAD;
    fn plain(&self, backend: &B, cfg: &Config, state: &mut ParamState<B>, param: &mut B::Buffer, grad: &B::Buffer, len: usize) -> Result<(), String> {
        let err = |e: B::Error| e.to_string();
        let (param, grad) = (backend.view_mut(param, VIEW_PAD, len).map_err(err)?, backend.view(grad, VIEW_PAD, len).map_err(err)?);
        plain_sgd_step(backend, cfg, state, ViewParamGrad { param, grad }).map_err(|e| e.to_string())
    }
    fn precondition(&self, backend: &B, at: Replayed<'_>, state: &mut ParamState<B>, ws: &mut Workspace<B>, params: Params<'_, B>) -> Result<(), String> {
        let Replayed { case, layer, step } = at;
        let err = |e: B::Error| e.to_string();
        let (x, y) = (upload_padded(backend, &step.x, VIEW_PAD)?, upload_padded(backend, &step.y, VIEW_PAD)?);
        let view = |buf, len| backend.view(buf, VIEW_PAD, len).map_err(err);
        let (rows, d) = (layer.rows(), layer.weight_cols());
        let bias = match params.bias {
            Some((b, gb)) => Some((backend.view_mut(b, VIEW_PAD, rows).map_err(err)?, view(gb, rows)?)),
            None => None,
        };
        let params = ViewParams { weight: backend.view_mut(params.weight, VIEW_PAD, rows * d).map_err(err)?, grad_weight: view(params.grad_weight, rows * d)?, bias };
        let batch = ViewBatch { x: view(&x, step.x.len())?, y: view(&y, step.y.len())?, sample: case.sample_size, batch_size: case.batch_size };
        frog_step(backend, &case.config, layer, state, ws, params, batch, Unguarded).map_err(|e| e.to_string())
    }
}

/// `x` and `y` in the 16-bit type `H`.
struct OnLowp<H>(PhantomData<H>);

impl<B: LowpBackend<H>, H: Half> Run<B> for OnLowp<H> {
    const PAD: usize = 0;
    fn plain(&self, backend: &B, cfg: &Config, state: &mut ParamState<B>, param: &mut B::Buffer, grad: &B::Buffer, len: usize) -> Result<(), String> {
        OnBuffers.plain(backend, cfg, state, param, grad, len)
    }
    fn precondition(&self, backend: &B, at: Replayed<'_>, state: &mut ParamState<B>, ws: &mut Workspace<B>, params: Params<'_, B>) -> Result<(), String> {
        let Replayed { case, layer, step } = at;
        let upload_lowp = |what: &str, data: &[f64]| {
            let host = data
                .iter()
                .map(|&v| Some(H::from_f32(v as f32)).filter(|h| f64::from(h.to_f32()) == v))
                .collect::<Option<Vec<H>>>()
                .ok_or_else(|| format!("`{what}` holds a value that is not exactly a {}", H::NAME))?;
            let mut buf = backend.zeros_lowp(host.len()).map_err(|e| e.to_string())?;
            backend.write_lowp(&host, &mut buf, 0).map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        };
        let (x, y) = (upload_lowp("x", &step.x)?, upload_lowp("y", &step.y)?);
        let batch = LowpBatch { x: &x, y: &y, sample: case.sample_size, batch_size: case.batch_size, check_y: true };
        frog_step(backend, &case.config, layer, state, ws, params, batch, Unguarded).map_err(|e| e.to_string())
    }
}

/// What the guard entries of a padded upload hold.
const GUARD: f64 = -7.25;

/// `data` in a backend buffer after `pad` guard entries, with `pad` more
/// after it.
fn upload_padded<B: Backend>(b: &B, data: &[f64], pad: usize) -> Result<B::Buffer, String> {
    let guard = vec![GUARD; pad];
    upload(b, &[&guard[..], data, &guard[..]].concat())
}

/// Replays `case` the way `run` hands arrays to the steps.
fn run_with<B: Backend, R: Run<B>>(backend: &B, case: &Case, rtol: f64, run: &R) -> Result<Report, String> {
    let pad = R::PAD;
    let mut ck = Checker::new(rtol);
    let cfg = &case.config;
    let up = |data: &[f64]| upload_padded(backend, data, pad);
    let mut weight = up(&case.weight)?;
    let mut bias = case.bias.as_deref().map(up).transpose()?;
    match &case.target {
        Target::Other(len) => {
            let mut state = ParamState::new(backend, *len, cfg.momentum > 0.0).map_err(|e| e.to_string())?;
            for (k, step) in case.steps.iter().enumerate() {
                let g = up(&step.grad_weight)?;
                run.plain(backend, cfg, &mut state, &mut weight, &g, *len)?;
                if let (Some(want), Some(m)) = (&step.expected.momentum_weight, state.momentum()) {
                    ck.check(format!("step{}.momentum_weight", k + 1), &download(backend, m, 0, *len)?, want);
                }
                ck.check(format!("step{}.weight", k + 1), &download(backend, &weight, pad, *len)?, &step.expected.weight);
            }
        }
        Target::Layer(layer) => {
            let (rows, d, cols) = (layer.rows(), layer.weight_cols(), layer.cols());
            let mut state = ParamState::for_layer(backend, layer, cfg).map_err(|e| e.to_string())?;
            let req = WorkspaceReq::new(backend, layer, case.sample_size).map_err(|e| e.to_string())?;
            let mut ws = Workspace::new(backend, req).map_err(|e| e.to_string())?;
            for (k, step) in case.steps.iter().enumerate() {
                let at = |f: &str| format!("step{}.{f}", k + 1);
                if let Some(tau) = step.expected.tau {
                    ck.check(at("tau"), &[cfg.tau_at(k as u64 + 1)], &[tau]);
                }
                let gw = up(&step.grad_weight)?;
                let gb = step.grad_bias.as_deref().map(up).transpose()?;
                let params = Params { weight: &mut weight, grad_weight: &gw, bias: bias.as_mut().zip(gb.as_ref()) };
                run.precondition(backend, Replayed { case, layer, step }, &mut state, &mut ws, params)?;
                let e = &step.expected;
                if let Some(m) = state.momentum() {
                    let m = download(backend, m, 0, rows * cols)?;
                    if let Some(want) = &e.momentum_weight {
                        ck.check(at("momentum_weight"), &columns(&m, cols, 0, d), want);
                    }
                    if let Some(want) = &e.momentum_bias {
                        ck.check(at("momentum_bias"), &columns(&m, cols, d, cols), want);
                    }
                }
                let named = [("trace", ws.trace(), rows, &e.trace), ("row_scale", ws.row_scale(), rows, &e.row_scale), ("direction", ws.direction(), rows * cols, &e.direction)];
                for (name, buf, len, want) in named {
                    if let Some(want) = want {
                        ck.check(at(name), &download(backend, buf, 0, len)?, want);
                    }
                }
                ck.check(at("weight"), &download(backend, &weight, pad, rows * d)?, &e.weight);
                if let (Some(b), Some(want)) = (&bias, &e.bias) {
                    ck.check(at("bias"), &download(backend, b, pad, rows)?, want);
                }
            }
        }
    }
    // The guard entries around the parameters: a view step writes inside its view only.
    for (name, buf) in [("weight", Some(&weight)), ("bias", bias.as_ref())] {
        let Some(buf) = buf else { continue };
        let len = backend.len(buf);
        let guards = [download(backend, buf, 0, pad)?, download(backend, buf, len - pad, pad)?].concat();
        if guards.iter().any(|&g| g != GUARD) {
            ck.fail(format!("{name}: an entry outside the view changed"));
        }
    }
    ck.finish()
}
