//! The public API's conveniences on frog-cpu: every public type of
//! frog-core prints with `Debug`.

use frog_core::half::bf16;
use frog_core::{
    AdamState, Batch, CgBuffers, Config, Conv2d, GroupId, KfrogBatch, KfrogConfig, KfrogState, Layer, LowpBatch, Method, ParamState, Params, Patches, ViewBatch,
    ViewParams, Workspace, WorkspaceReq,
};
use frog_cpu::{Cpu, Frog};

/// Every public type of frog-core prints, generic ones without their
/// buffers: sizes and counts instead.
#[test]
fn every_public_type_prints_with_debug() {
    let cpu = &Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), false);
    let cfg = Config { sample_size: Some(2), ..Default::default() };
    let mut frog = Frog::<f64>::new(Method::Frog(cfg), 4, 1).unwrap();
    frog.add_layer(cpu, "conv1", layer, GroupId::DEFAULT).unwrap();
    frog.add_param(cpu, "bn", 3, GroupId::DEFAULT).unwrap();
    let printed = format!("{frog:?}");
    for part in ["Optimizer", "conv1", "bn", "steps: 0", "max_batch: 4", "Workspace"] {
        assert!(printed.contains(part), "{part} missing from {printed}");
    }

    let (mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h, mut i) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4]);
    let cg = CgBuffers::<Cpu<f64>> { z: &mut a, rs: &mut b, pd: &mut c, ap: &mut d, u: &mut e, rho: &mut f, rho_next: &mut g, pap: &mut h, coef: &mut i };
    let (x, y, mut w) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 4]);
    let patches = Patches::<Cpu<f64>> { layer: &layer, r: 2, x: &x, packed: &y };
    let ws = Workspace::new(cpu, WorkspaceReq::new(cpu, &layer, 2).unwrap()).unwrap();
    let kfrog = KfrogConfig::default();
    let (xh, yh) = (vec![bf16::ZERO; 4], vec![bf16::ZERO; 4]);
    let mut wv = [0.0; 4];
    let printed = [
        format!("{cg:?}"),
        format!("{patches:?}"),
        format!("{:?}", ws),
        format!("{:?}", ws.kfrog_outputs()),
        format!("{:?}", ParamState::new(cpu, 5, true).unwrap()),
        format!("{:?}", AdamState::new(cpu, 5, true).unwrap()),
        format!("{:?}", KfrogState::new(cpu, &layer, &kfrog).unwrap()),
        format!("{:?}", KfrogBatch::<Cpu<f64>> { x: &x, x_sample: 2, y: &y, y_sample: 1, batch_size: 4 }),
        format!("{:?}", Batch::<Cpu<f64>> { x: &x, y: &y, sample: 2, batch_size: 4 }),
        format!("{:?}", LowpBatch::<Cpu<f64>, bf16> { x: &xh, y: &yh, sample: 2, batch_size: 4, check_y: true }),
        format!("{:?}", ViewBatch::<Cpu<f64>> { x: &x[..], y: &y[..], sample: 2, batch_size: 4 }),
        format!("{:?}", Params::<Cpu<f64>> { weight: &mut w, grad_weight: &x, bias: None }),
        format!("{:?}", ViewParams::<Cpu<f64>> { weight: &mut wv[..], grad_weight: &x[..], bias: None }),
    ];
    let expected = [
        "CgBuffers { .. }",
        "Patches { layer: Layer {",
        "Workspace { req: WorkspaceReq {",
        "KfrogOutputs { .. }",
        "ParamState { len: 5, steps: 0, momentum: true, diagnostics: false }",
        "AdamState { len: 5, steps: 0, amsgrad: true }",
        "KfrogState { weight: ParamState { len: 54,",
        "KfrogBatch { x_sample: 2, y_sample: 1, batch_size: 4, .. }",
        "Batch { sample: 2, batch_size: 4, .. }",
        "LowpBatch { sample: 2, batch_size: 4, check_y: true, .. }",
        "ViewBatch { sample: 2, batch_size: 4, .. }",
        "Params { bias: false, .. }",
        "ViewParams { bias: false, .. }",
    ];
    for (p, e) in printed.iter().zip(expected) {
        assert!(p.starts_with(e), "{p} does not start with {e}");
    }
}
