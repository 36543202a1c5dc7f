//! CIFAR-10 loading on the shared real data and on malformed files, the
//! synthetic set, and the augmenting loader.

mod common;

use std::sync::Arc;

use frog_bench::data::cifar::{load_test, load_train, PIXELS, RECORD};
use frog_bench::data::loader::{eval_batches, train_batches, MEAN, STD};
use approx::assert_abs_diff_eq;
use frog_bench::data::{load, synthetic, DataOptions, Images};

#[test]
fn loads_the_shared_cifar10_batches() {
    let dir = common::cifar_dir();
    let train = load_train(&dir).unwrap_or_else(|e| panic!("{e} (set FROG_DATA to cifar-10-batches-bin)"));
    let test = load_test(&dir).unwrap();
    assert_eq!(train.len(), 10_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.pixels.len(), 10_000 * PIXELS);
    // Every class is present in roughly equal numbers.
    let mut counts = [0usize; 10];
    for &l in &test.labels {
        counts[usize::from(l)] += 1;
    }
    assert!(counts.iter().all(|&c| c == 1000), "{counts:?}");
    // The first record is read as stored.
    let raw = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    assert_eq!(train.labels[0], raw[0]);
    assert_eq!(&train.pixels[..PIXELS], &raw[1..RECORD]);
}

fn write_records(dir: &std::path::Path, name: &str, labels: &[u8], extra: usize) {
    let mut bytes = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        bytes.push(l);
        bytes.extend((0..PIXELS).map(|p| ((p + i) % 256) as u8));
    }
    bytes.extend(std::iter::repeat_n(7u8, extra));
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn malformed_files_are_errors_naming_file_and_offset() {
    let dir = common::temp_dir("malformed");
    write_records(&dir, "data_batch_1.bin", &[1, 2], 100);
    let e = load_train(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("offset 6146") && e.contains("truncated"), "{e}");

    write_records(&dir, "data_batch_1.bin", &[1, 12, 3], 0);
    let e = load_train(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("label 12") && e.contains("offset 3073"), "{e}");

    std::fs::write(dir.join("data_batch_1.bin"), b"").unwrap();
    let e = load_train(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("empty"), "{e}");

    // A subset of training files is fine; a missing test file is not.
    std::fs::remove_file(dir.join("data_batch_1.bin")).unwrap();
    write_records(&dir, "data_batch_3.bin", &[0, 9, 4], 0);
    assert_eq!(load_train(&dir).unwrap().labels, vec![0, 9, 4]);
    let e = load_test(&dir).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin"), "{e}");

    let empty = common::temp_dir("no-train");
    let e = load_train(&empty).unwrap_err().to_string();
    assert!(e.contains("no CIFAR-10 training file"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
}

#[test]
fn explicit_data_dir_errors_instead_of_falling_back() {
    let opts = DataOptions { dir: Some("/nonexistent/cifar".into()), ..DataOptions::default() };
    let e = load(&opts).err().expect("an error").to_string();
    assert!(e.starts_with("--data: /nonexistent/cifar"), "{e}");
    let opts = DataOptions { env_dir: Some("/nonexistent/env".into()), ..DataOptions::default() };
    assert!(load(&opts).err().expect("an error").to_string().starts_with("FROG_DATA: "));
}

#[test]
fn without_data_falls_back_to_the_labelled_synthetic_set() {
    let cache = common::temp_dir("cache");
    let opts = DataOptions { cache: Some(cache.clone()), download: false, seed: 3, test_limit: Some(500), ..DataOptions::default() };
    let data = load(&opts).unwrap();
    assert!(data.synthetic);
    assert!(data.source.contains("SYNTHETIC"));
    assert_eq!((data.train.len(), data.test.len()), (10_000, 500));
    assert!(data.train.labels.iter().all(|&l| l < 10));
    // The same seed gives the same set.
    assert_eq!(*data.train, synthetic::generate(3, 0, 10_000));
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn limits_above_the_set_keep_all_of_it() {
    // 2^54 images times 3072 bytes once wrapped to 0 bytes of pixels for every label.
    let opts = DataOptions { synthetic: true, train_limit: Some(1 << 54), test_limit: Some(usize::MAX), ..DataOptions::default() };
    let data = load(&opts).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (10_000, 2_000));
    assert_eq!((data.train.pixels.len(), data.test.pixels.len()), (10_000 * PIXELS, 2_000 * PIXELS));
}

#[test]
fn loader_augments_reproducibly_and_normalizes() {
    let images = Arc::new(synthetic::generate(1, 0, 300));
    let pass = |epoch| train_batches(images.clone(), 64, 5, epoch).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let (first, again, other) = (pass(0), pass(0), pass(1));
    assert_eq!(first.len(), 4, "drop_last keeps 4 full batches of 64 from 300");
    assert!(first.iter().zip(&again).all(|(a, b)| a.x == b.x && a.labels == b.labels));
    assert!(first[0].x != other[0].x);
    // Evaluation batches are the images in order, normalized, unaugmented.
    let eval: Vec<_> = eval_batches(images.clone(), 128).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(eval.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![128, 128, 44]);
    let want = (f32::from(images.pixels[1024 + 5]) / 255.0 - MEAN[1]) / STD[1];
    assert_abs_diff_eq!(eval[0].x[1024 + 5], want, epsilon = 1e-6);
    assert_eq!(eval[2].labels[..], images.labels[256..]);
}

#[test]
fn a_failing_loader_thread_is_an_error_of_the_pass() {
    // Fewer pixels than the labels say: the worker fails on the second image.
    let broken = Arc::new(Images { pixels: vec![0; PIXELS], labels: vec![1, 2, 3, 4] });
    let results: Vec<_> = eval_batches(broken, 1).unwrap().collect();
    assert_eq!(results.len(), 2, "one batch, then the error, then the end");
    assert!(results[0].is_ok());
    let e = results[1].as_ref().err().expect("the worker's failure").to_string();
    assert!(e.contains("batch loader thread failed after 1 of 4 batches") && e.contains("out of range"), "{e}");
}
