//! The Muon cases of `muon/` in the golden directory (`golden/MUON.md`):
//! every `*.json` there, whatever its file name, dispatched on its
//! `optimizer` (`muon` the official form, `muon_airbench` airbench's), and
//! their replay on any [`MatmulBackend`], so that every backend's tests run
//! the same cases the same way: on buffers, through views of the middles
//! of larger buffers, or as a Muon group of the optimizer object.

use std::path::Path;

use frog_core::{muon_step, Batch, Conv2d, GroupId, Layer, MatmulBackend, MuonConfig, MuonScratch, MuonShape, MuonState, Optimizer, ParamGrad, Params, ViewParamGrad};
use serde_json::Value;

use super::{array, download, field, json_files, num, upload_padded, Checker, Report, GUARD, VIEW_PAD};

/// Cases the suite needs at least: the committed ones.
pub const MUON_MIN_CASES: usize = 8;

/// One step of a Muon case: its gradient, and the weight and momentum
/// buffer after it.
#[derive(Clone, Debug)]
pub struct MuonCaseStep {
    /// The gradient (flat, row-major).
    pub grad: Vec<f64>,
    /// The weight after the step.
    pub weight: Vec<f64>,
    /// The momentum buffer after the step.
    pub momentum: Vec<f64>,
}

/// One Muon case.
#[derive(Clone, Debug)]
pub struct MuonCase {
    /// The file's `name`.
    pub name: String,
    /// The settings (the form from `optimizer`, the rest from `hyper`).
    pub cfg: MuonConfig,
    /// The matrix Muon sees the weight as.
    pub shape: MuonShape,
    /// The bias-free layer with the weight's PyTorch shape, for the
    /// optimizer object's Muon group.
    pub layer: Layer,
    /// The initial weight.
    pub weight: Vec<f64>,
    /// The chained steps.
    pub steps: Vec<MuonCaseStep>,
}

/// How [`run_muon_case`] hands the weight and gradient to the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuonRoute {
    /// [`muon_step`] on buffers of exactly the weight's length.
    Buffers,
    /// [`muon_step`] on views of the middles of padded buffers: the entries
    /// around them must come out unchanged.
    Views,
    /// `Optimizer::step_layer` of a Muon group (the case's settings) with
    /// the case's layer.
    Group,
}

/// Parses one Muon case.
pub fn parse_muon_case(text: &str) -> Result<MuonCase, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let hyper = field(&v, "hyper")?;
    let base = match v.get("optimizer").and_then(Value::as_str) {
        Some("muon") => MuonConfig { weight_decay: num(hyper, "weight_decay")?, ..MuonConfig::default() },
        Some("muon_airbench") => MuonConfig::airbench(),
        other => return Err(format!("`optimizer` is {other:?}, not \"muon\" or \"muon_airbench\"")),
    };
    let cfg = MuonConfig {
        lr: num(hyper, "lr")?,
        momentum: num(hyper, "momentum")?,
        nesterov: field(hyper, "nesterov")?.as_bool().ok_or("`nesterov` is not a bool")?,
        ns_steps: field(hyper, "ns_steps")?.as_u64().ok_or("`ns_steps` is not an integer")? as usize,
        ..base
    };
    let dims = field(&v, "shape")?.as_array().ok_or("`shape` is not an array")?;
    let dims: Vec<usize> = dims.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<_>>().ok_or("`shape` has a non-integer")?;
    let (shape, layer) = match dims[..] {
        [rows, cols] => (MuonShape::matrix(rows, cols), Layer::linear(cols, rows, false)),
        [c_out, c_in, kh, kw] => (MuonShape::conv2d(c_out, c_in, kh, kw), Layer::conv2d(Conv2d { kernel: [kh, kw], ..Conv2d::new(c_in, c_out, 1, [kh, kw]) }, false)),
        _ => return Err(format!("`shape` {dims:?} is neither 2-D nor 4-D")),
    };
    let shape = shape.map_err(|e| e.to_string())?;
    let steps = field(&v, "steps")?.as_array().ok_or("`steps` is not an array")?;
    let steps = steps
        .iter()
        .map(|s| {
            let e = field(s, "expected")?;
            Ok(MuonCaseStep { grad: array(s, "grad")?, weight: array(e, "weight")?, momentum: array(e, "momentum")? })
        })
        .collect::<Result<_, String>>()?;
    let name = field(&v, "name")?.as_str().unwrap_or_default().to_string();
    Ok(MuonCase { name, cfg, shape, layer, weight: array(field(&v, "initial")?, "weight")?, steps })
}

/// Every `*.json` of `dir` (the golden directory's `muon/`) as a Muon
/// case, sorted by file name; an unreadable or malformed file, or fewer
/// than [`MUON_MIN_CASES`] cases, is an error.
pub fn load_muon_cases(dir: &Path) -> Result<Vec<MuonCase>, String> {
    let cases = json_files(dir)?
        .into_iter()
        .map(|(path, text)| parse_muon_case(&text).map_err(|e| format!("{}: {e}", path.display())))
        .collect::<Result<Vec<_>, _>>()?;
    if cases.len() < MUON_MIN_CASES {
        return Err(format!("{} Muon cases in {}, expected at least the {MUON_MIN_CASES} committed ones", cases.len(), dir.display()));
    }
    Ok(cases)
}

/// Replays `case`'s chained steps on `backend` the way `route` says,
/// comparing the weight and the momentum buffer after each at relative
/// tolerance `rtol` (labels `step{k}.weight`, `step{k}.momentum`, from 0).
/// Errors list every failure.
pub fn run_muon_case<B: MatmulBackend>(backend: &B, case: &MuonCase, rtol: f64, route: MuonRoute) -> Result<Report, String> {
    let e = |e: frog_core::Error<B::Error>| e.to_string();
    let n = case.shape.entries();
    let pad = if route == MuonRoute::Views { VIEW_PAD } else { 0 };
    let mut ck = Checker { rtol, report: Report::default(), failures: Vec::new() };
    let mut w = upload_padded(backend, &case.weight, pad)?;
    let mut state = MuonState::new(backend, n).map_err(|e| e.to_string())?;
    let mut scratch = MuonScratch::for_shape(backend, &case.shape).map_err(e)?;
    let mut group = match route {
        MuonRoute::Group => {
            let mut opt = Optimizer::<B, 1>::new(case.cfg, 1, 0).map_err(e)?;
            let id = opt.add_layer(backend, "muon", case.layer, GroupId::DEFAULT).map_err(e)?;
            Some((opt, id))
        }
        _ => None,
    };
    for (k, step) in case.steps.iter().enumerate() {
        let g = upload_padded(backend, &step.grad, pad)?;
        let momentum = match (route, &mut group) {
            (MuonRoute::Buffers, _) => {
                muon_step(backend, &case.cfg, &case.shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: &g }).map_err(e)?;
                state.momentum()
            }
            (MuonRoute::Views, _) => {
                let be = |e: B::Error| e.to_string();
                let param = ViewParamGrad::<B> { param: backend.view_mut(&mut w, pad, n).map_err(be)?, grad: backend.view(&g, pad, n).map_err(be)? };
                muon_step(backend, &case.cfg, &case.shape, &mut state, &mut scratch, param).map_err(e)?;
                state.momentum()
            }
            (MuonRoute::Group, Some((opt, id))) => {
                opt.step_layer(backend, *id, Params { weight: &mut w, grad_weight: &g, bias: None }, None::<Batch<B>>).map_err(e)?;
                opt.muon_state(*id).map_err(e)?.momentum()
            }
            (MuonRoute::Group, None) => unreachable!("a Group route makes its optimizer above"),
        };
        ck.check(format!("step{k}.weight"), &download(backend, &w, pad, n)?, &step.weight);
        ck.check(format!("step{k}.momentum"), &download(backend, momentum, 0, n)?, &step.momentum);
    }
    let guards = [download(backend, &w, 0, pad)?, download(backend, &w, pad + n, pad)?].concat();
    if guards.iter().any(|&g| g != GUARD) {
        ck.failures.push("weight: an entry outside the view changed".into());
    }
    if ck.failures.is_empty() {
        Ok(ck.report)
    } else {
        Err(ck.failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_layers_follow_the_file() {
        let case = |shape: &str| format!(r#"{{"name":"c","optimizer":"muon","hyper":{{"lr":0.1,"momentum":0.9,"nesterov":true,"ns_steps":5,"weight_decay":0.0}},"shape":{shape},"initial":{{"weight":[]}},"steps":[]}}"#);
        let conv = parse_muon_case(&case("[4, 6, 3, 1]")).unwrap();
        assert_eq!((conv.shape.rows(), conv.shape.cols()), (4, 18));
        assert_eq!((conv.layer.rows(), conv.layer.weight_cols()), (4, 18));
        let lin = parse_muon_case(&case("[24, 10]")).unwrap();
        assert_eq!((lin.shape.rows(), lin.shape.cols(), lin.layer.rows(), lin.layer.weight_cols()), (24, 10, 24, 10));
        assert!(parse_muon_case(&case("[2, 3, 4]")).unwrap_err().contains("neither 2-D nor 4-D"));
        assert!(parse_muon_case(&case("[2, 3]").replace("\"muon\"", "\"adam\"")).unwrap_err().contains("not \"muon\""));
    }
}
