//! The baseline optimizers' golden cases (feature `golden`): AdamW cases
//! from `torch.optim.AdamW` and K-FROG cases from the original's
//! `kfrog.py`, in `golden/baselines/` (see `golden/README.md`), replayed
//! through any backend with frog-core's AdamW and K-FROG.

use std::path::Path;

use frog_core::{adamw_step, AdamBackend, AdamState, AdamWConfig};
use serde_json::Value;

use crate::golden::{array, download, field, num, upload, Checker, Report};

/// One AdamW parameter of a case.
#[derive(Clone, Debug)]
pub struct AdamParam {
    /// Its name in the model.
    pub name: String,
    /// Initial value (flat).
    pub initial: Vec<f64>,
    /// Per step: gradient, then the expected parameter, `exp_avg`,
    /// `exp_avg_sq` and (amsgrad) `max_exp_avg_sq` after the step.
    pub steps: Vec<AdamStepCase>,
}

/// One step of one AdamW parameter.
#[derive(Clone, Debug)]
pub struct AdamStepCase {
    /// Gradient.
    pub grad: Vec<f64>,
    /// Parameter after the step.
    pub param: Vec<f64>,
    /// First moment after the step.
    pub exp_avg: Vec<f64>,
    /// Second moment after the step.
    pub exp_avg_sq: Vec<f64>,
    /// Its running maximum (amsgrad).
    pub max_exp_avg_sq: Option<Vec<f64>>,
}

/// An AdamW case: settings and every parameter's chained steps.
#[derive(Clone, Debug)]
pub struct AdamCase {
    /// File stem.
    pub name: String,
    /// Settings.
    pub config: AdamWConfig,
    /// The model's parameters.
    pub params: Vec<AdamParam>,
}

fn parse_adamw(v: &Value) -> Result<AdamCase, String> {
    let h = field(v, "hyper")?;
    let amsgrad = field(h, "amsgrad")?.as_bool().ok_or("`amsgrad` is not a bool")?;
    let config = AdamWConfig { lr: num(h, "lr")?, beta1: num(h, "beta1")?, beta2: num(h, "beta2")?, eps: num(h, "eps")?, weight_decay: num(h, "weight_decay")?, amsgrad, ..AdamWConfig::default() };
    let steps = field(v, "steps")?.as_array().ok_or("`steps` is not an array")?;
    let params = field(v, "params")?.as_array().ok_or("`params` is not an array")?;
    let params = params
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let name = field(p, "name")?.as_str().ok_or("`name` is not a string")?.to_string();
            let steps = steps
                .iter()
                .map(|s| {
                    let grads = field(s, "grads")?.as_array().ok_or("`grads` is not an array")?;
                    let grad = grads.get(k).and_then(Value::as_array).ok_or("a gradient is missing")?;
                    let e = field(s, "expected")?.as_array().and_then(|e| e.get(k)).ok_or("an expected entry is missing")?;
                    Ok(AdamStepCase {
                        grad: grad.iter().map(|x| x.as_f64().ok_or("a gradient holds a non-number")).collect::<Result<_, _>>()?,
                        param: array(e, "param")?,
                        exp_avg: array(e, "exp_avg")?,
                        exp_avg_sq: array(e, "exp_avg_sq")?,
                        max_exp_avg_sq: if amsgrad { Some(array(e, "max_exp_avg_sq")?) } else { None },
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(AdamParam { name, initial: array(p, "initial")?, steps })
        })
        .collect::<Result<_, String>>()?;
    Ok(AdamCase { name: String::new(), config, params })
}

/// Every AdamW case in `dir` (the `baselines/` folder), by file name.
pub fn load_adamw_cases(dir: &Path) -> Result<Vec<AdamCase>, String> {
    load(dir, "adamw", parse_adamw, |c| &mut c.name)
}

/// Replays an AdamW case on `backend`, chaining its steps from the
/// backend's own state, and compares every array at relative tolerance
/// `rtol`. Errors list every failure.
pub fn run_adamw_case<B: AdamBackend>(backend: &B, case: &AdamCase, rtol: f64) -> Result<Report, String> {
    let mut ck = Checker { rtol, report: Report::default(), failures: Vec::new() };
    for p in &case.params {
        let n = p.initial.len();
        let mut value = upload(backend, &p.initial)?;
        let mut state = AdamState::new(backend, n, case.config.amsgrad).map_err(|e| e.to_string())?;
        for (k, s) in p.steps.iter().enumerate() {
            let g = upload(backend, &s.grad)?;
            adamw_step(backend, &case.config, &mut state, &mut value, &g).map_err(|e| e.to_string())?;
            let at = |f: &str| format!("step{}.{}.{f}", k + 1, p.name);
            let (m, v, vmax) = state.moments();
            ck.check(at("param"), &download(backend, &value, 0, n)?, &s.param);
            ck.check(at("exp_avg"), &download(backend, m, 0, n)?, &s.exp_avg);
            ck.check(at("exp_avg_sq"), &download(backend, v, 0, n)?, &s.exp_avg_sq);
            if let (Some(vm), Some(want)) = (vmax, &s.max_exp_avg_sq) {
                ck.check(at("max_exp_avg_sq"), &download(backend, vm, 0, n)?, want);
            }
        }
    }
    if ck.failures.is_empty() {
        Ok(ck.report)
    } else {
        Err(ck.failures.join("; "))
    }
}

/// One K-FROG step: the sampled rows the original drew, the gradients and
/// every intermediate result it recorded.
#[derive(Clone, Debug)]
pub struct KfrogStepCase {
    /// Weight gradient.
    pub grad_weight: Vec<f64>,
    /// Sampled inputs and their count.
    pub x: Vec<f64>,
    /// `Bx`.
    pub x_sample: usize,
    /// Sampled output gradients, drawn independently, and their count.
    pub y: Vec<f64>,
    /// The output-gradient sample count.
    pub y_sample: usize,
    /// The plain parameters' gradients.
    pub grad_other: Vec<Vec<f64>>,
    /// Expected arrays after the step, by the case file's names.
    pub expected: Value,
}

/// A K-FROG case from the original implementation.
#[derive(Clone, Debug)]
pub struct KfrogCase {
    /// File stem.
    pub name: String,
    /// The preconditioned layer.
    pub layer: frog_core::Layer,
    /// Settings.
    pub config: frog_core::KfrogConfig,
    /// Samples in the batch.
    pub batch_size: usize,
    /// Initial weight.
    pub weight: Vec<f64>,
    /// The plain parameters' names and initial values.
    pub other: Vec<(String, Vec<f64>)>,
    /// The chained steps.
    pub steps: Vec<KfrogStepCase>,
}

fn opt_size(h: &Value, key: &str) -> Result<Option<usize>, String> {
    match field(h, key)? {
        Value::Null => Ok(None),
        v => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| format!("`{key}` is not an integer")),
    }
}

fn nested(v: &Value, key: &str) -> Result<Vec<Vec<f64>>, String> {
    let outer = field(v, key)?.as_array().ok_or_else(|| format!("`{key}` is not an array"))?;
    outer.iter().map(|a| a.as_array().ok_or_else(|| format!("`{key}` holds a non-array"))?.iter().map(|x| x.as_f64().ok_or_else(|| format!("`{key}` holds a non-number"))).collect()).collect()
}

fn parse_kfrog(v: &Value) -> Result<KfrogCase, String> {
    let crate::golden::Target::Layer(layer) = crate::golden::parse_target(field(v, "layer")?)? else { return Err("a K-FROG case needs a layer".into()) };
    let h = field(v, "hyper")?;
    let flag = |key: &str| field(h, key).and_then(|b| b.as_bool().ok_or_else(|| format!("`{key}` is not a bool")));
    let config = frog_core::KfrogConfig {
        lr: num(h, "lr")?,
        momentum: num(h, "momentum")?,
        nesterov: flag("nesterov")?,
        y_momentum: num(h, "y_momentum")?,
        eps: num(h, "eps")?,
        num_iters: num(h, "num_iters")? as usize,
        sample_size: opt_size(h, "sample_size")?,
        y_sample_size: opt_size(h, "y_sample_size")?,
        batch_averaged: flag("batch_averaged")?,
        ..frog_core::KfrogConfig::default()
    };
    if num(h, "cg_denom_eps")? != frog_core::KFROG_CG_DENOM_EPS {
        return Err("cg_denom_eps differs from the original's constant".into());
    }
    let initial = field(v, "initial")?;
    let other = field(initial, "other")?.as_array().ok_or("`other` is not an array")?;
    let other = other.iter().map(|o| Ok((field(o, "name")?.as_str().ok_or("`name` is not a string")?.to_string(), array(o, "value")?))).collect::<Result<_, String>>()?;
    let steps = field(v, "steps")?.as_array().ok_or("`steps` is not an array")?;
    let steps = steps
        .iter()
        .map(|s| {
            Ok(KfrogStepCase {
                grad_weight: array(s, "grad_weight")?,
                x: array(s, "x")?,
                x_sample: num(s, "x_sample")? as usize,
                y: array(s, "y")?,
                y_sample: num(s, "y_sample")? as usize,
                grad_other: nested(s, "grad_other")?,
                expected: field(s, "expected")?.clone(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(KfrogCase { name: String::new(), layer, config, batch_size: num(v, "batch_size")? as usize, weight: array(initial, "weight")?, other, steps })
}

/// Every case of `optimizer` in `dir`, parsed by `parse`, named by file.
fn load<C>(dir: &Path, optimizer: &str, parse: fn(&Value) -> Result<C, String>, name: fn(&mut C) -> &mut String) -> Result<Vec<C>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut cases = Vec::new();
    for path in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if v.get("optimizer").and_then(Value::as_str) == Some(optimizer) {
            let mut case = parse(&v).map_err(|e| format!("{}: {e}", path.display()))?;
            *name(&mut case) = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            cases.push(case);
        }
    }
    Ok(cases)
}

/// Every K-FROG case in `dir` (the `baselines/` folder), by file name.
pub fn load_kfrog_cases(dir: &Path) -> Result<Vec<KfrogCase>, String> {
    load(dir, "kfrog", parse_kfrog, |c| &mut c.name)
}

/// Replays a K-FROG case on `backend`: the layer through frog-core's
/// K-FROG, the plain parameters through momentum SGD at the same rate, and
/// compares every recorded array after every step at relative tolerance
/// `rtol`. Errors list every failure.
pub fn run_kfrog_case<B: frog_core::KfrogBackend>(backend: &B, case: &KfrogCase, rtol: f64) -> Result<Report, String> {
    use frog_core::{kfrog_step, sgd_step, KfrogBatch, KfrogState, ParamGrad, ParamState, SgdConfig, Workspace, WorkspaceReq};
    let err = |e: frog_core::Error<B::Error>| e.to_string();
    let berr = |e: B::Error| e.to_string();
    let mut ck = Checker { rtol, report: Report::default(), failures: Vec::new() };
    let (cfg, layer) = (&case.config, &case.layer);
    let (rows, d) = (layer.rows(), layer.weight_cols());
    let bx = case.steps.iter().map(|s| s.x_sample).max().unwrap_or(1);
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, layer, bx).map_err(|e| e.to_string())?).map_err(berr)?;
    let mut state = KfrogState::new(backend, layer, cfg).map_err(berr)?;
    let mut weight = upload(backend, &case.weight)?;
    let sgd = SgdConfig { lr: cfg.lr, momentum: cfg.momentum, weight_decay: 0.0, nesterov: cfg.nesterov, ..SgdConfig::default() };
    let mut others = Vec::new();
    for (_, v) in &case.other {
        others.push((upload(backend, v)?, ParamState::new(backend, v.len(), cfg.momentum > 0.0).map_err(berr)?));
    }
    for (k, s) in case.steps.iter().enumerate() {
        let at = |f: &str| format!("step{}.{f}", k + 1);
        let (g, x, y) = (upload(backend, &s.grad_weight)?, upload(backend, &s.x)?, upload(backend, &s.y)?);
        let batch = KfrogBatch { x: &x, x_sample: s.x_sample, y: &y, y_sample: s.y_sample, batch_size: case.batch_size };
        kfrog_step(backend, cfg, layer, &mut state, &mut ws, &mut weight, &g, batch).map_err(err)?;
        let e = &s.expected;
        let out = ws.kfrog_outputs();
        let named = [
            ("y_diag", out.y_diag, rows),
            ("left_scaled", out.left_scaled, rows * d),
            ("cg_solution", out.cg_solution, rows * d),
            ("x_scaling", out.x_scaling, d),
            ("direction", out.direction, rows * d),
            ("weight", &weight, rows * d),
        ];
        for (name, buf, len) in named {
            ck.check(at(name), &download(backend, buf, 0, len)?, &array(e, name)?);
        }
        if let (Some(m), Some(want)) = (state.momentum(), crate::golden::opt_array(e, "momentum_weight")?) {
            ck.check(at("momentum_weight"), &download(backend, m, 0, rows * d)?, &want);
        }
        if let (Some(avg), Some(want)) = (state.y_average(), crate::golden::opt_array(e, "y_momentum")?) {
            ck.check(at("y_momentum"), &download(backend, avg, 0, rows)?, &want);
        }
        let want_other = nested(e, "other")?;
        for (j, ((p, st), gw)) in others.iter_mut().zip(&s.grad_other).enumerate() {
            let g = upload(backend, gw)?;
            sgd_step(backend, &sgd, st, ParamGrad { param: p, grad: &g }).map_err(err)?;
            ck.check(at(&format!("other[{j}]")), &download(backend, p, 0, gw.len())?, &want_other[j]);
        }
    }
    if ck.failures.is_empty() {
        Ok(ck.report)
    } else {
        Err(ck.failures.join("; "))
    }
}
