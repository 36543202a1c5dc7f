//! The public API's conveniences on frog-cpu: every public type of
//! frog-core prints with `Debug`, errors reach their source, settings
//! convert into their method.

use std::error::Error as _;

use frog_core::half::bf16;
use frog_core::{
    AdamState, AdamWConfig, Batch, CgBuffers, Config, Conv2d, Error, GroupId, KfrogBatch, KfrogConfig, KfrogState, Layer, LowpBatch, Method, ParamState, Params, Patches,
    SgdConfig, ViewBatch, ViewParams, Workspace, WorkspaceReq,
};
use frog_cpu::{Cpu, CpuError, Frog};

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
    let (x, y, mut w, mut s) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], vec![0.0; 4]);
    let patches = Patches::<Cpu<f64>> { layer: &layer, r: 2, x: Some(&x[..]), packed: &y, scratch: &mut s };
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

/// A backend failure's `source()` is the backend's own error; other
/// errors have none.
#[test]
fn a_backend_error_is_the_source() {
    let cpu = &Cpu::<f32>::with_threads(1).unwrap();
    // With momentum a parameter's state is a buffer of its size.
    let mut frog = Frog::<f32>::new(Method::Frog(Config { momentum: 0.9, ..Default::default() }), 4, 1).unwrap();
    let err = frog.add_param(cpu, "huge", usize::MAX, GroupId::DEFAULT).unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    let source = err.source().expect("a backend error has a source");
    assert_eq!(source.downcast_ref::<CpuError>(), Some(&CpuError::OutOfMemory { entries: usize::MAX }));
    frog.add_param(cpu, "bn", 3, GroupId::DEFAULT).unwrap();
    let err = frog.add_param(cpu, "bn", 3, GroupId::DEFAULT).unwrap_err();
    assert!(err.source().is_none(), "{err}");
}

/// Every settings struct converts into its method.
#[test]
fn settings_convert_into_their_method() {
    let frog = Config { lr: 0.1, ..Default::default() };
    let sgd = SgdConfig { lr: 0.2, ..Default::default() };
    let adamw = AdamWConfig { lr: 0.3, ..Default::default() };
    let kfrog = KfrogConfig { lr: 0.4, ..Default::default() };
    assert_eq!(Method::from(frog), Method::Frog(frog));
    assert_eq!(Method::from(sgd), Method::Sgd(sgd));
    assert_eq!(Method::from(adamw), Method::AdamW(adamw));
    let method: Method = kfrog.into();
    assert_eq!(method, Method::Kfrog(kfrog));
}

/// `set_lr` sets the base rate and keeps every group's ratio to the
/// default group's, as made; `set_group_lr` holds until the next `set_lr`.
#[test]
fn set_lr_keeps_the_groups_ratios() {
    let mut frog = Frog::<f64>::new(Method::Frog(Config { lr: 0.1, ..Default::default() }), 4, 1).unwrap();
    let small = frog.add_group(Config { lr: 0.01, ..Default::default() }).unwrap();
    let same = frog.add_group(SgdConfig { lr: 0.1, ..Default::default() }).unwrap();
    let lrs = |f: &Frog<f64>| [GroupId::DEFAULT, small, same].map(|g| f.group(g).unwrap().lr());
    frog.set_lr(0.05).unwrap();
    assert_eq!(lrs(&frog), [0.05, 0.005, 0.05]);
    frog.set_group_lr(small, 0.3).unwrap();
    frog.set_lr(0.2).unwrap();
    assert_eq!(lrs(&frog), [0.2, 0.02, 0.2]);
    // A rate one group rejects changes none.
    assert!(frog.set_lr(-1.0).is_err());
    assert_eq!(lrs(&frog), [0.2, 0.02, 0.2]);
}

/// A shape error of the optimizer object's step names the registered
/// parameter.
#[test]
fn a_step_shape_error_names_the_layer() {
    let cpu = &Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, false);
    let mut frog = Frog::<f64>::new(SgdConfig { lr: 0.1, ..Default::default() }, 4, 1).unwrap();
    let id = frog.add_layer(cpu, "conv1", layer, GroupId::DEFAULT).unwrap();
    let (mut w, short) = (vec![0.0; 6], vec![0.0; 5]);
    let err = frog.step_layer(cpu, id, Params { weight: &mut w, grad_weight: &short, bias: None }, None::<Batch<_>>).unwrap_err();
    assert_eq!(err.kind(), frog_core::ErrorKind::Shape);
    assert!(err.to_string().contains("conv1"), "{err}");
    assert!(matches!(&err, Error::Param { name, .. } if name.as_str() == "conv1"), "{err:?}");
}
