//! The baseline optimizers' golden cases (feature `golden`): AdamW cases
//! from `torch.optim.AdamW`, in the schema of `shared/golden/BASELINES.md`,
//! replayed through any backend with frog-core's AdamW.

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
    let config = AdamWConfig { lr: num(h, "lr")?, beta1: num(h, "beta1")?, beta2: num(h, "beta2")?, eps: num(h, "eps")?, weight_decay: num(h, "weight_decay")?, amsgrad };
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
    let mut cases = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if v.get("optimizer").and_then(Value::as_str) == Some("adamw") {
            let mut case = parse_adamw(&v).map_err(|e| format!("{}: {e}", path.display()))?;
            case.name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            cases.push(case);
        }
    }
    Ok(cases)
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
