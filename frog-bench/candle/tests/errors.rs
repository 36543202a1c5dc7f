//! Bad input to the candle backend is an error of the right kind, never a
//! panic: short buffers, blocks past a buffer's end, invalid layers, and
//! tensors of another dtype.

use candle_core::{DType, Device, Tensor};
use frog_candle::backend::CandleBackend;
use frog_core::{Backend, BackendError, BackendErrorKind, Conv2d, Layer, Shape, Strided};

#[test]
fn bad_input_is_an_error_of_the_right_kind() {
    let b = CandleBackend::<f32>::new(Device::Cpu);
    let short = b.zeros(3).unwrap();
    let mut dst = b.zeros(4).unwrap();
    let kind = |r: Result<(), frog_candle::backend::CandleError>| r.unwrap_err().kind();

    assert_eq!(kind(b.read(&short, 2, &mut [0.0; 2])), BackendErrorKind::InvalidBuffer);
    assert_eq!(kind(b.write(&[1.0; 5], &mut dst, 0)), BackendErrorKind::InvalidBuffer);
    let sv = b.view(&short, 0, 3).unwrap();
    assert_eq!(kind(b.view(&short, 0, 4).map(drop)), BackendErrorKind::InvalidBuffer);
    assert_eq!(kind(b.axpby(4, 1.0, &sv, 0.0, &mut b.view_mut(&mut dst, 0, 4).unwrap())), BackendErrorKind::InvalidBuffer);
    let wide = Strided { stride: 3, offset: 2 };
    assert_eq!(kind(b.copy_strided(Shape::new(2, 2), &sv, Strided::dense(2), &mut dst, wide)), BackendErrorKind::InvalidBuffer);
    assert_eq!(kind(b.copy_strided(Shape::new(2, 2), &sv, wide, &mut dst, Strided::dense(2))), BackendErrorKind::InvalidBuffer);

    let empty = Layer::conv2d(Conv2d::new(1, 1, 5, [3, 3]), false);
    let mut packed = b.zeros(64).unwrap();
    assert_eq!(kind(b.pack_patches(&empty, 1, &sv, &mut packed)), BackendErrorKind::InvalidBuffer);

    let f64_tensor = Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(b.buffer(&f64_tensor).unwrap_err().kind(), BackendErrorKind::DtypeMismatch);
    // Nothing failed half-way: the destination is unchanged.
    let mut out = [1.0f32; 4];
    b.read(&dst, 0, &mut out).unwrap();
    assert_eq!(out, [0.0; 4]);
}

#[test]
fn a_strided_copy_writes_only_its_block() {
    let b = CandleBackend::<f64>::new(Device::Cpu);
    let mut src = b.zeros(4).unwrap();
    b.write(&[1.0, 2.0, 3.0, 4.0], &mut src, 0).unwrap();
    let mut dst = b.zeros(8).unwrap();
    b.write(&[9.0; 8], &mut dst, 0).unwrap();
    b.copy_strided(Shape::new(2, 2), &b.view(&src, 0, 4).unwrap(), Strided::dense(2), &mut dst, Strided { stride: 3, offset: 1 }).unwrap();
    let mut out = [0.0; 8];
    b.read(&dst, 0, &mut out).unwrap();
    assert_eq!(out, [9.0, 1.0, 2.0, 9.0, 3.0, 4.0, 9.0, 9.0]);
}
